"""The client's cache of workflow specs, and the watch that invalidates it.

Current specs are kept by (cluster, workflow): a fresh entry (confirmed less than
``ttl`` seconds ago, by ``clock``) answers without an RPC; an expired one is revalidated
by fingerprint; when the server cannot be reached, the last answer is served, marked
stale, up to ``max_stale`` seconds after it was last confirmed. Specs by fingerprint
never change, so they are kept without a TTL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import cachetools
import grpc

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client._errors import ContractError, NotFound, TokenFetcherError, Unavailable
from token_fetcher.client._models import MigratedWorkflow, SpecResult
from token_fetcher.client._transport import ClientMetrics, Transport

__all__ = ["Entry", "InvalidationWatch", "SpecCache"]

_log = logging.getLogger("token_fetcher.client")

WorkflowKey = tuple[str, str]


@dataclass(frozen=True)
class Entry:
    fingerprint: str
    spec: pb.WorkflowSpec
    status: int
    errors: tuple[pb.ParseError, ...]
    confirmed_at: float
    # False once a watch event says the server may have a newer version.
    valid: bool = True
    # The server saw the layout change while no file its parse read changed.
    dynamic: bool = False
    # What a fresh hit of migrated_workflow() last built from this entry (at most one),
    # reused for the same metadata: a pure function of the two. replace() starts it
    # empty, since a replaced entry differs in status, errors or validity.
    built: list[MigratedWorkflow] = field(
        default_factory=list, init=False, compare=False, repr=False)

    def result(self, *, stale: bool) -> SpecResult:
        return SpecResult(self.spec, self.fingerprint, self.status, self.errors, stale)


class SpecCache:
    """Thread-safe; counts hit, miss, revalidated, not_modified, stale_served and
    invalidated in ``metrics.cache``."""

    def __init__(self, size: int, ttl: float, max_stale: float, clock: Callable[[], float],
                 metrics: ClientMetrics) -> None:
        self.ttl = ttl
        self.max_stale = max_stale
        self.clock = clock
        self._metrics = metrics
        self._lock = threading.Lock()
        self._entries: cachetools.LRUCache[WorkflowKey, Entry] = cachetools.LRUCache(size)
        self._pinned: cachetools.LRUCache[tuple[str, str, str], SpecResult] = (
            cachetools.LRUCache(size))
        # Bumped by every watch invalidation: an answer fetched while it moved may
        # predate the change, so it is stored as needing revalidation.
        self._invalidations = 0

    def lookup(self, key: WorkflowKey) -> tuple[Entry | None, bool, int]:
        """(entry, fresh, invalidation counter); records hit, miss or revalidated."""
        with self._lock:
            entry = self._entries.get(key)
            seen = self._invalidations
        if entry is None:
            self._metrics.count_cache("miss")
            return None, False, seen
        if entry.valid and self.clock() - entry.confirmed_at < self.ttl:
            self._metrics.count_cache("hit")
            return entry, True, seen
        self._metrics.count_cache("revalidated")
        return entry, False, seen

    def store(
        self,
        key: WorkflowKey,
        entry: Entry | None,
        answer: pb.GetWorkflowSpecResponse | pb.ResolveMigrationResponse,
        started: float,
        seen: int,
    ) -> Entry:
        if answer.not_modified:
            if entry is None:
                raise ContractError(f"{key[0]}/{key[1]}: not_modified without if_none_match")
            self._metrics.count_cache("not_modified")
            new = replace(
                entry,
                status=answer.status or entry.status,
                errors=tuple(answer.errors),
                confirmed_at=started,
                dynamic=answer.dynamic,
            )
        else:
            new = Entry(
                answer.fingerprint,
                answer.spec,
                answer.status,
                tuple(answer.errors),
                started,
                dynamic=answer.dynamic,
            )
        with self._lock:
            # Confirmation time is when the request started: the conservative end.
            new = replace(new, valid=self._invalidations == seen)
            self._entries[key] = new
            self._pinned[(*key, new.fingerprint)] = new.result(stale=False)
        return new

    def fallback(self, key: WorkflowKey, entry: Entry | None, exc: TokenFetcherError) -> Entry:
        """The entry to serve stale when ``exc`` means unreachable; raises otherwise."""
        if isinstance(exc, NotFound):
            with self._lock:
                self._entries.pop(key, None)
        if (
            isinstance(exc, Unavailable)
            and entry is not None
            and self.clock() - entry.confirmed_at <= self.max_stale
        ):
            self._metrics.count_cache("stale_served")
            return entry
        raise exc

    def pinned(self, cluster: str, workflow: str, fingerprint: str) -> SpecResult | None:
        """The spec of a version, when kept; records hit or miss."""
        with self._lock:
            found = self._pinned.get((cluster, workflow, fingerprint))
        self._metrics.count_cache("miss" if found is None else "hit")
        return found

    def pin(self, cluster: str, workflow: str, result: SpecResult) -> None:
        with self._lock:
            self._pinned[(cluster, workflow, result.fingerprint)] = result

    def invalidate(self, cluster: str, workflow: str | None, *, drop: bool) -> None:
        """Mark (or drop) the entries of one workflow, or of a cluster ("" = all)."""
        with self._lock:
            self._invalidations += 1
            if workflow is None:
                keys = [key for key in self._entries if not cluster or key[0] == cluster]
            else:
                keys = [(cluster, workflow)] if (cluster, workflow) in self._entries else []
            for key in keys:
                if drop:
                    del self._entries[key]
                else:
                    self._entries[key] = replace(self._entries[key], valid=False)
        if keys:
            self._metrics.count_cache("invalidated", len(keys))


class InvalidationWatch:
    """A background thread that follows WatchWorkflows and invalidates cache entries on
    CHANGED, REMOVED, BROKEN and ADDED events, reconnecting with backoff; it ends when
    the transport closes."""

    def __init__(self, transport: Transport, cache: SpecCache) -> None:
        self._transport = transport
        self._cache = cache
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._call: Any = None
        self.subscribed = threading.Event()

    def start(self, cluster: str, on_event: Callable[[pb.WorkflowEvent], None] | None) -> None:
        self._transport.check_open()
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the invalidation watch is already running")
            self._thread = threading.Thread(
                target=self._loop,
                args=(cluster, on_event),
                name="token-fetcher-watch",
                daemon=True,
            )
        self._thread.start()

    def stop(self) -> None:
        """End the stream and wait for the thread; call after the transport's ``closed``
        is set, so the thread does not reconnect."""
        with self._lock:
            call, thread = self._call, self._thread
        if call is not None:
            call.cancel()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _loop(self, cluster: str, on_event: Callable[[pb.WorkflowEvent], None] | None) -> None:
        closed = self._transport.closed
        attempt = 0
        while not closed.is_set():
            call = self._transport.stub.WatchWorkflows(pb.WatchWorkflowsRequest(cluster=cluster))
            with self._lock:
                self._call = call
            if closed.is_set():  # stop() may have missed this call
                call.cancel()
                break
            try:
                for event in call:
                    if event.type == pb.WorkflowEvent.TYPE_SUBSCRIBED:
                        attempt = 0
                        # Changes made while the stream was down were never reported.
                        self._cache.invalidate(cluster, None, drop=False)
                        self.subscribed.set()
                    elif event.type == pb.WorkflowEvent.TYPE_REMOVED:
                        self._cache.invalidate(event.cluster, event.workflow, drop=True)
                    elif event.type != pb.WorkflowEvent.TYPE_UNSPECIFIED:
                        self._cache.invalidate(event.cluster, event.workflow, drop=False)
                    if on_event is not None:
                        try:
                            on_event(event)
                        except Exception:
                            _log.exception("on_event callback failed")
            except grpc.RpcError as exc:
                if not closed.is_set():
                    _log.warning("workflow watch on %s failed: %s", self._transport.target,
                                 exc.code())
            except Exception:  # keep invalidating after surprises; close() still stops it
                if not closed.is_set():
                    _log.exception("workflow watch on %s failed", self._transport.target)
            self.subscribed.clear()
            if closed.is_set():
                break
            self._transport.metrics.watch_reconnects.inc()
            if closed.wait(self._transport.backoff(attempt)):
                break
            attempt += 1
