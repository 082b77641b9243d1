"""Assembly: the gRPC server with health, reflection and metrics, and its shutdown.

Handlers are registered from the service descriptor rather than the generated
``add_..._to_server`` so that each one is timed and counted in one place, and may return
ready serialized bytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import start_http_server

from legacy_parser.isolation import Isolation
from legacy_parser.sandbox import Sandbox
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.catalog import Catalog
from token_fetcher.config import ServerConfig
from token_fetcher.history import VersionHistory
from token_fetcher.metrics import ServerMetrics
from token_fetcher.request_checks import Failure
from token_fetcher.service import TokenFetcherService

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["TokenFetcher"]
# Before gRPC shuts down (see Admission): no call refused for this long...
_SETTLE_QUIET_SECONDS = 0.1
# ...but no longer than this; calls still in flight then get the rest of the grace.
_SETTLE_MAX_SECONDS = 1.0
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_HEALTH_PREFIX = f"/{health.SERVICE_NAME}/"
_SERVICE_PREFIX = f"/{SERVICE.full_name}/"
# Threads of their own for health checks (see CallExecutor).
HEALTH_THREADS = 2
# Set for each call in the context gRPC runs it in (see CallExecutor).
_METHOD = contextvars.ContextVar("token_fetcher_method", default="")
_OVER_LIMIT = contextvars.ContextVar("token_fetcher_over_limit", default=False)


def _serialize(response) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


class _Undecodable:
    """Stands in for a request whose bytes are not a valid message, so that the handler
    answers INVALID_ARGUMENT (grpc itself would answer INTERNAL)."""

    __slots__ = ("type_name", "error")

    def __init__(self, type_name: str, error: Exception) -> None:
        self.type_name = type_name
        self.error = error


def _deserializer(request_class):
    def deserialize(data: bytes):
        try:
            return request_class.FromString(data)
        except Exception as error:  # noqa: BLE001 - protobuf's DecodeError; its module varies
            return _Undecodable(request_class.DESCRIPTOR.full_name, error)

    return deserialize


def _check_decoded(request) -> None:
    if isinstance(request, _Undecodable):
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                      f"the request is not a valid {request.type_name} message: {request.error}")


class Admission:
    """Admits calls until the drain begins, then refuses them with UNAVAILABLE.

    gRPC's own shutdown cancels a call that reaches the server in the instant it shuts down
    (CANCELLED, which clients do not retry: grpc/grpc#41785). Refusing new calls here first,
    and shutting gRPC down only once nothing is in flight and no call has come for a moment,
    gives callers UNAVAILABLE instead.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open = True
        self._active = 0
        self._last_refused = float("-inf")

    def enter(self) -> bool:
        with self._changed:
            if not self._open:
                self._last_refused = time.monotonic()
                return False
            self._active += 1
            return True

    def leave(self) -> None:
        with self._changed:
            self._active -= 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._open = False

    def settle(self, quiet: float, until: float) -> None:
        """Wait until no call is in flight and none was refused for ``quiet`` seconds, or
        until the monotonic time ``until``."""
        with self._changed:
            while True:
                now = time.monotonic()
                calm = now - self._last_refused
                if now >= until or (self._active == 0 and calm >= quiet):
                    return
                self._changed.wait(min(until - now, max(quiet - calm, 0.01)))


def _refuse() -> Failure:
    return Failure(grpc.StatusCode.UNAVAILABLE,
                   "the server is shutting down; retry (it, or its replacement, will answer)")


class _MethodNames(grpc.ServerInterceptor):
    """Records each call's method in the context gRPC will run the call in."""

    def intercept_service(self, continuation, handler_call_details):
        _METHOD.set(handler_call_details.method)
        return continuation(handler_call_details)


class CallExecutor(futures.Executor):
    """The server's executor: health checks on threads of their own, and the service's
    concurrency limit counted here.

    gRPC's own ``maximum_concurrent_rpcs`` counts every call, health checks included, so
    a saturated server would fail its probes and be restarted exactly when it is busiest;
    and a probe queued behind busy service threads would time out all the same. gRPC
    submits each call as ``context.run(...)`` of the context the interceptor saw (above),
    which says which method it is. A service call past the limit still runs, to be
    refused at once by its handler (RESOURCE_EXHAUSTED); counting ends with the call's
    future, whether or not the handler ever ran.
    """

    def __init__(self, service_threads: int, max_calls: int) -> None:
        self.max_calls = max_calls
        self._service = futures.ThreadPoolExecutor(service_threads, thread_name_prefix="rpc")
        self._health = futures.ThreadPoolExecutor(HEALTH_THREADS,
                                                  thread_name_prefix="rpc-health")
        self._lock = threading.Lock()
        self._calls = 0

    def submit(self, fn, /, *args, **kwargs):
        context = getattr(fn, "__self__", None)
        method = context.get(_METHOD, "") if isinstance(context, contextvars.Context) else ""
        if method.startswith(_HEALTH_PREFIX):
            return self._health.submit(fn, *args, **kwargs)
        if not method.startswith(_SERVICE_PREFIX):
            return self._service.submit(fn, *args, **kwargs)
        with self._lock:
            over = self._calls >= self.max_calls
            if not over:
                self._calls += 1
        if over:
            context.run(_OVER_LIMIT.set, True)
        future = self._service.submit(fn, *args, **kwargs)
        if not over:
            future.add_done_callback(self._call_done)
        return future

    def _call_done(self, _future) -> None:
        with self._lock:
            self._calls -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for pool in (self._service, self._health):
            pool.shutdown(wait, cancel_futures=cancel_futures)


def _check_limit() -> None:
    if _OVER_LIMIT.get():
        raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      "Concurrent RPC limit exceeded: the server is answering "
                      "max_concurrent_rpcs calls already; retry with backoff")


class _Instrumented:
    """Times and counts one method, and turns failures into status codes."""

    def __init__(self, name: str, behaviour, metrics: ServerMetrics,
                 admission: Admission | None = None) -> None:
        self.name = name
        self.behaviour = behaviour
        self.metrics = metrics
        self.duration = metrics.rpc_duration.labels(name)
        self.admission = admission or Admission()

    def _abort(self, context, error: Exception) -> str:
        if isinstance(error, Failure):
            context.abort(error.code, error.message)
        log.exception("%s failed", self.name)
        context.abort(grpc.StatusCode.INTERNAL, f"{self.name} failed inside the server: "
                      f"{type(error).__name__}; see the server log")

    @contextlib.contextmanager
    def _answering(self, request, context):
        """Admission, timing and counting around one call, unary or streaming alike."""
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        code = "OK"
        admitted = self.admission.enter()
        try:
            if not admitted:
                raise _refuse()
            _check_limit()
            _check_decoded(request)
            yield
        except Exception as error:  # noqa: BLE001 - every failure becomes a status code
            code = error.code.name if isinstance(error, Failure) else "INTERNAL"
            self._abort(context, error)
        finally:
            if admitted:
                self.admission.leave()
            self.metrics.in_flight.dec()
            self.duration.observe(time.perf_counter() - started)
            self.metrics.rpcs.labels(self.name, code).inc()

    def unary(self, request, context):
        with self._answering(request, context):
            return self.behaviour(request, context)

    def stream(self, request, context):
        with self._answering(request, context):
            yield from self.behaviour(request, context)


def service_handler(service: TokenFetcherService, metrics: ServerMetrics,
                    admission: Admission | None = None):
    handlers = {}
    admission = admission or Admission()
    for method in SERVICE.methods:
        wrapped = _Instrumented(method.name, getattr(service, method.name), metrics, admission)
        request_class = getattr(pb, method.input_type.name)
        make = (grpc.unary_stream_rpc_method_handler if method.server_streaming
                else grpc.unary_unary_rpc_method_handler)
        handlers[method.name] = make(
            wrapped.stream if method.server_streaming else wrapped.unary,
            request_deserializer=_deserializer(request_class), response_serializer=_serialize)
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)


def _describe_reflection_v1() -> None:
    """Put grpc.reflection.v1 in the descriptor pool, so that the service listed under that
    name can be described too (``grpcurl describe`` stops at the first service it cannot
    resolve): its file is v1alpha's, the package renamed."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's: deprecated, with v1alpha package names
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())


def _reflection(server: grpc.Server, service_names: list[str]) -> None:
    """Reflection under v1alpha (grpcurl 1.8) and v1 (buf curl): the messages are the same."""
    _describe_reflection_v1()
    servicer = reflection.ReflectionServicer(service_names)
    for name in (reflection.SERVICE_NAME, REFLECTION_V1):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),))


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
                                      config.max_concurrent_rpcs)
        self._server = grpc.server(
            self._executor, interceptors=[_MethodNames()],
            options=[("grpc.max_send_message_length", config.max_message_bytes),
                     ("grpc.max_receive_message_length", config.max_message_bytes),
                     ("grpc.so_reuseport", 0)])
        self.admission = Admission()
        self._server.add_generic_rpc_handlers(
            (service_handler(self.service, self.metrics, self.admission),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if config.reflection_enabled:
            _reflection(self._server, [SERVICE.full_name, health.SERVICE_NAME,
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
