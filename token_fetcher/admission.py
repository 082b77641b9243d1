"""Which calls the server takes, and on which threads.

``Admission`` refuses new calls once the drain begins; ``CallExecutor`` runs health
checks on threads of their own and counts the service's calls against
``max_concurrent_rpcs``, so a busy server still answers its probes.
"""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health

from token_fetcher.request_checks import Failure

__all__ = ["Admission", "CallExecutor", "MethodNames", "check_limit"]

_HEALTH_PREFIX = f"/{health.SERVICE_NAME}/"
# Threads of their own for health checks (see CallExecutor).
_HEALTH_THREADS = 2
# Set for each call in the context gRPC runs it in (see CallExecutor).
_METHOD = contextvars.ContextVar("token_fetcher_method", default="")
_OVER_LIMIT = contextvars.ContextVar("token_fetcher_over_limit", default=False)


class Admission:
    """Admits calls until the drain begins, then refuses them with UNAVAILABLE.

    gRPC's own shutdown cancels a call that reaches the server in the instant it shuts down
    (CANCELLED, which clients do not retry: grpc/grpc#41785). Refusing new calls here first,
    and shutting gRPC down only once nothing is in flight and no call has come for a moment,
    gives callers UNAVAILABLE instead.
    """

    def __init__(self) -> None:
        # Calls take the lock itself, which costs less than entering the condition.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._open = True
        self._active = 0
        self._last_refused = float("-inf")

    def enter(self) -> bool:
        with self._lock:
            if not self._open:
                self._last_refused = time.monotonic()
                return False
            self._active += 1
            return True

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet answered."""
        return self._active

    def leave(self) -> None:
        with self._lock:
            self._active -= 1
            if not self._open:  # only settle() waits, and only once the drain has begun
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



class MethodNames(grpc.ServerInterceptor):
    """Records each call's method in the context gRPC will run the call in."""

    def intercept_service(self, continuation, handler_call_details):
        _METHOD.set(handler_call_details.method)
        return continuation(handler_call_details)



class CallExecutor(futures.Executor):
    """The server's executor: health checks on threads of their own, and the concurrency
    limit of ``service_name``'s calls counted here.

    gRPC's own ``maximum_concurrent_rpcs`` counts every call, health checks included, so
    a saturated server would fail its probes and be restarted exactly when it is busiest;
    and a probe queued behind busy service threads would time out all the same. gRPC
    submits each call as ``context.run(...)`` of the context the interceptor saw (above),
    which says which method it is. A service call past the limit still runs, to be
    refused at once by its handler (RESOURCE_EXHAUSTED); counting ends with the call's
    future, whether or not the handler ever ran.
    """

    def __init__(self, service_threads: int, max_calls: int, service_name: str) -> None:
        self.max_calls = max_calls
        self._service_prefix = f"/{service_name}/"
        self._service = futures.ThreadPoolExecutor(service_threads, thread_name_prefix="rpc")
        self._health = futures.ThreadPoolExecutor(_HEALTH_THREADS,
                                                  thread_name_prefix="rpc-health")
        self._lock = threading.Lock()
        self._calls = 0

    def submit(self, fn, /, *args, **kwargs):
        context = getattr(fn, "__self__", None)
        method = context.get(_METHOD, "") if isinstance(context, contextvars.Context) else ""
        if method.startswith(_HEALTH_PREFIX):
            return self._health.submit(fn, *args, **kwargs)
        if not method.startswith(self._service_prefix):
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


def check_limit() -> None:
    if _OVER_LIMIT.get():
        raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      "Concurrent RPC limit exceeded: the server is answering "
                      "max_concurrent_rpcs calls already; retry with backoff")
