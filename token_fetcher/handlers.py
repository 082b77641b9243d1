"""The service's handlers, registered from its descriptor rather than the generated
``add_..._to_server``, so that each call is admitted, timed and counted in one place, its
failures become status codes, and it may return ready serialized bytes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import NoReturn

import grpc

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.admission import Admission, check_limit
from token_fetcher.metrics import ServerMetrics
from token_fetcher.request_checks import Failure, decode
from token_fetcher.service import TokenFetcherService

__all__ = ["SERVICE", "service_handler"]

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["TokenFetcher"]


def _serialize(response) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def _refuse() -> Failure:
    return Failure(grpc.StatusCode.UNAVAILABLE,
                   "the server is shutting down; retry (it, or its replacement, will answer)")


class _Instrumented:
    """Times and counts one method, and turns failures into status codes."""

    def __init__(self, name: str, behaviour, metrics: ServerMetrics, admission: Admission,
                 request_class) -> None:
        self.name = name
        self.behaviour = behaviour
        self.request_class = request_class  # None: the behaviour takes the request's bytes
        self.rpcs = metrics.rpcs
        self.duration = metrics.rpc_duration.labels(name)
        # Each status code's counter, looked up once (labels() takes a lock each time).
        self._answered: dict[str, object] = {}
        self.admission = admission

    def _abort(self, context, error: Exception) -> NoReturn:  # context.abort raises
        if isinstance(error, Failure):
            context.abort(error.code, error.message)
        log.exception("%s failed", self.name)
        context.abort(grpc.StatusCode.INTERNAL, f"{self.name} failed inside the server: "
                      f"{type(error).__name__}; see the server log")

    @contextlib.contextmanager
    def _answering(self, data: bytes, context):
        """Admission, timing and counting around one call, unary or streaming alike;
        gives the request, decoded unless the behaviour takes its bytes."""
        started = time.perf_counter()
        code = "OK"
        admitted = self.admission.enter()
        try:
            if not admitted:
                raise _refuse()
            check_limit()
            yield data if self.request_class is None else decode(self.request_class, data)
        except Exception as error:  # noqa: BLE001 - every failure becomes a status code
            code = error.code.name if isinstance(error, Failure) else "INTERNAL"
            self._abort(context, error)
        finally:
            if admitted:
                self.admission.leave()
            self.duration.observe(time.perf_counter() - started)
            answered = self._answered.get(code)
            if answered is None:  # a race here only looks the same counter up twice
                answered = self._answered[code] = self.rpcs.labels(self.name, code)
            answered.inc()

    def unary(self, data: bytes, context):
        with self._answering(data, context) as request:
            return self.behaviour(request, context)

    def stream(self, data: bytes, context):
        with self._answering(data, context) as request:
            yield from self.behaviour(request, context)


def service_handler(service: TokenFetcherService, metrics: ServerMetrics,
                    admission: Admission):
    handlers = {}
    metrics.in_flight.set_function(lambda: admission.in_flight)
    for method in SERVICE.methods:
        request_class = (None if method.name in service.TAKES_REQUEST_BYTES
                         else getattr(pb, method.input_type.name))
        wrapped = _Instrumented(method.name, getattr(service, method.name), metrics, admission,
                                request_class)
        make = (grpc.unary_stream_rpc_method_handler if method.server_streaming
                else grpc.unary_unary_rpc_method_handler)
        # No request deserializer: the bytes come as they are (see _answering).
        handlers[method.name] = make(
            wrapped.stream if method.server_streaming else wrapped.unary,
            response_serializer=_serialize)
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
