"""The service's handlers, registered from its descriptor rather than the generated
``add_..._to_server``, so that each call is admitted, timed and counted in one place, its
failures become status codes, and it may return ready serialized bytes.
"""

from __future__ import annotations

import contextlib
import logging
import time

import grpc

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.admission import Admission, check_limit
from token_fetcher.metrics import ServerMetrics
from token_fetcher.request_checks import Failure
from token_fetcher.service import TokenFetcherService

__all__ = ["SERVICE", "service_handler"]

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["TokenFetcher"]


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


def _refuse() -> Failure:
    return Failure(grpc.StatusCode.UNAVAILABLE,
                   "the server is shutting down; retry (it, or its replacement, will answer)")


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
            check_limit()
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
