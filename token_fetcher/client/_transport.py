"""One gRPC channel: a deadline on every unary call, retries with backoff and jitter for
UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED only, and the client's metrics."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.client._errors import error_for

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_TARGET", "ClientMetrics", "Transport"]

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# CANCELLED too: this client never cancels a unary call, so CANCELLED comes from the server
# side, typically a server shutting down as the call reached it (grpc/grpc#41785).
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.CANCELLED})
# A sidecar answers in about half a millisecond; the default buckets start at 5 ms.
_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# gRPC's default reconnect backoff grows to 120 s; a sidecar that restarted should be
# reachable again within seconds.
_DEFAULT_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


_CACHE_EVENTS = ("hit", "miss", "revalidated", "not_modified", "stale_served", "invalidated")


class ClientMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "token_fetcher_client_calls",
            "RPC attempts by method and gRPC status code.",
            ["method", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "token_fetcher_client_call_duration_seconds",
            "Duration of RPC attempts.",
            ["method"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "token_fetcher_client_retries",
            "RPC attempts repeated after UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED.",
            ["method"],
            registry=registry,
        )
        self.cache = Counter(
            "token_fetcher_client_cache_events",
            "Cache events: hit, miss, revalidated (if_none_match sent), not_modified, "
            "stale_served, invalidated (by a watch event).",
            ["event"],
            registry=registry,
        )
        # Bound once: labels() takes a lock and a lookup, more than a cache hit's own work.
        self._cache_events = {event: self.cache.labels(event) for event in _CACHE_EVENTS}
        self.watch_reconnects = Counter(
            "token_fetcher_client_watch_reconnects",
            "Times the invalidation watch stream ended and was reopened.",
            registry=registry,
        )

    def count_cache(self, event: str, amount: int = 1) -> None:
        self._cache_events[event].inc(amount)


class Transport:
    """The channel and the stub, and unary calls with their deadline and retries.

    ``closed`` is set first thing on close, so that backoffs waiting on it end at once.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        retries: int,
        credentials: grpc.ChannelCredentials | None,
        metrics: ClientMetrics,
        max_message_bytes: int,
        backoff_base: float,
        backoff_max: float,
        channel_options: Sequence[tuple[str, Any]],
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._random = random.Random()
        self.closed = threading.Event()
        options = dict(_DEFAULT_CHANNEL_OPTIONS)
        options["grpc.max_send_message_length"] = max_message_bytes
        options["grpc.max_receive_message_length"] = max_message_bytes
        options.update(channel_options)
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=list(options.items()))
        else:
            self.channel = grpc.secure_channel(target, credentials, options=list(options.items()))
        self.stub = pb_grpc.TokenFetcherStub(self.channel)

    def check_open(self) -> None:
        if self.closed.is_set():
            raise RuntimeError("TokenFetcherClient is closed")

    def close(self) -> None:
        self.closed.set()
        self.channel.close()

    def backoff(self, attempt: int) -> float:
        # Half fixed, half random ("equal jitter"): spreads out clients that failed
        # together without ever retrying immediately.
        ceiling = min(self._backoff_max, self._backoff_base * 2**attempt)
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    def call(self, method: str, request: Any) -> Any:
        self.check_open()
        rpc = getattr(self.stub, method)
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                response = rpc(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                code = exc.code()
                self.metrics.duration.labels(method).observe(time.perf_counter() - started)
                self.metrics.calls.labels(method, code.name).inc()
                if code in _RETRYABLE and attempt < self.retries:
                    self.metrics.retries.labels(method).inc()
                    # Waiting on the close event lets close() cut the backoff short.
                    if not self.closed.wait(self.backoff(attempt)):
                        attempt += 1
                        continue
                details = exc.details() or ""
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
                    details += (f" (max_message_bytes is {self.max_message_bytes} on this "
                                "client; the server has a limit of its own)")
                raise error_for(code, details) from None
            self.metrics.duration.labels(method).observe(time.perf_counter() - started)
            self.metrics.calls.labels(method, "OK").inc()
            return response
