"""Assembly: the gRPC server with health, reflection and metrics, and its shutdown.

The service's handlers (token_fetcher.handlers) go through the admission gate and the
executor of token_fetcher.admission; reflection is token_fetcher.server_reflection.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from legacy_parser.isolation import Isolation
from legacy_parser.sandbox import Sandbox
from token_fetcher.admission import Admission, CallExecutor, MethodNames
from token_fetcher.catalog import Catalog
from token_fetcher.config import ServerConfig
from token_fetcher.handlers import SERVICE, service_handler
from token_fetcher.history import VersionHistory
from token_fetcher.metrics import ServerMetrics
from token_fetcher.server_reflection import REFLECTION_V1, add_reflection
from token_fetcher.service import TokenFetcherService

log = logging.getLogger(__name__)

# Before gRPC shuts down (see admission.Admission): no call refused for this long...
_SETTLE_QUIET_SECONDS = 0.1
# ...but no longer than this; calls still in flight then get the rest of the grace.
_SETTLE_MAX_SECONDS = 1.0


def _report_isolation(isolation: Isolation, metrics: ServerMetrics) -> None:
    for layer in isolation.active:
        metrics.sandbox_layers.labels(layer).set(1)
    for layer, why in isolation.missing:
        metrics.sandbox_layers.labels(layer).set(0)
        log.warning("sandbox: parses run without %s (sandbox.isolation: %s): %s",
                    layer, isolation.mode, why)


class TokenFetcherServer:
    def __init__(self, config: ServerConfig, shutdown_notice_seconds: float = 1.0) -> None:
        self.config = config
        self.shutdown_notice_seconds = shutdown_notice_seconds
        self.metrics = ServerMetrics()
        sandbox = Sandbox(config.sandbox)
        _report_isolation(sandbox.isolation, self.metrics)
        self.catalog = Catalog(config, sandbox,
                               VersionHistory(config.state_dir, config.history_versions),
                               self.metrics)
        self.service = TokenFetcherService(self.catalog, config.reload_enabled,
                                           max_watches=config.max_watches)
        self.health = health.HealthServicer()
        self._executor = CallExecutor(config.server_threads + config.max_watches,
                                      config.max_concurrent_rpcs, SERVICE.full_name)
        self._server = grpc.server(
            self._executor, interceptors=[MethodNames()],
            options=[("grpc.max_send_message_length", config.max_message_bytes),
                     ("grpc.max_receive_message_length", config.max_message_bytes),
                     ("grpc.so_reuseport", 0)])
        self.admission = Admission()
        self._server.add_generic_rpc_handlers(
            (service_handler(self.service, self.metrics, self.admission),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if config.reflection_enabled:
            add_reflection(self._server, [SERVICE.full_name, health.SERVICE_NAME,
                                       reflection.SERVICE_NAME, REFLECTION_V1])
        try:
            self.port = self._bind()
        except OSError:
            self.catalog.close()
            raise
        self.metrics_port = 0
        self._metrics_http = None
        self._stopped = threading.Event()

    def _bind(self) -> int:
        tls = self.config.tls
        try:
            return self._add_port(tls)
        except RuntimeError as error:  # grpcio raises this when the bind fails
            raise OSError(f"cannot listen on {self.config.listen}: {error}") from None

    def _add_port(self, tls) -> int:
        if tls is None:
            port = self._server.add_insecure_port(self.config.listen)
        else:
            with open(tls.key_file, "rb") as key, open(tls.cert_file, "rb") as cert:
                pair = (key.read(), cert.read())
            client_ca = None
            if tls.client_ca_file:
                with open(tls.client_ca_file, "rb") as handle:
                    client_ca = handle.read()
            credentials = grpc.ssl_server_credentials(
                [pair], root_certificates=client_ca, require_client_auth=client_ca is not None)
            port = self._server.add_secure_port(self.config.listen, credentials)
        if port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        return port

    def _set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE.full_name):
            self.health.set(name, status)

    def start(self) -> None:
        """Listen now; report SERVING once every cluster's first load has finished."""
        self._set_serving(False)
        if self.config.metrics:
            host, _, port = self.config.metrics.rpartition(":")
            try:
                self._metrics_http, _ = start_http_server(int(port), host.strip("[]"),
                                                          registry=self.metrics.registry)
            except OSError as error:  # say which address: the gRPC one is fine
                raise OSError(f"cannot serve metrics on {self.config.metrics}: "
                              f"{error.strerror or error}") from None
            self.metrics_port = self._metrics_http.server_port
        self._server.start()
        self.catalog.start()

        def serve_when_loaded() -> None:
            self.catalog.wait_ready()
            if not self._stopped.is_set():
                self._set_serving(True)
                log.info("serving on port %d", self.port)

        threading.Thread(target=serve_when_loaded, name="await-first-load", daemon=True).start()

    def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING first, then refuse new calls, let in-flight ones finish."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        # Probes need a moment to see NOT_SERVING before calls start being refused.
        time.sleep(self.shutdown_notice_seconds)
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        self.admission.close()  # new calls: UNAVAILABLE
        self.catalog.stop()  # ends watch streams and sandbox workers
        # Calls in flight finish, and callers hear UNAVAILABLE, before gRPC shuts down.
        self.admission.settle(_SETTLE_QUIET_SECONDS,
                              min(deadline, time.monotonic() + _SETTLE_MAX_SECONDS))
        done = self._server.stop(max(0.0, deadline - time.monotonic()))
        done.wait()
        self._executor.shutdown(wait=False)
        # Only now: calls in flight until here may read pinned versions from the history.
        self.catalog.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()

    def wait(self) -> None:
        self._server.wait_for_termination()
