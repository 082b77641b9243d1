"""TokenFetcherClient: the scheduler's side of the token fetcher.

One gRPC channel per client, a deadline on every unary call, retries with backoff
and jitter for UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED only, and a cache of workflow specs
keyed by (cluster, workflow):

- a fresh entry (confirmed less than ``cache_ttl`` seconds ago) answers without an RPC;
- an expired entry is revalidated by fingerprint (``if_none_match``): the server
  answers ``not_modified`` without resending the spec;
- when the server cannot be reached, the last answer is served, marked ``stale``, up
  to ``max_stale`` seconds after it was last confirmed; after that the error is raised;
- optionally a background WatchWorkflows stream invalidates entries as soon as the
  server reports a change, instead of waiting for the TTL.

Results share protobuf messages with the cache, so a hit costs a lookup: treat them
as read-only (copy before mutating).

Imports only the generated stubs and ``token_fetcher.migration``, never the server side.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import cachetools
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry, Counter, Histogram

from token_fetcher import migration
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.migration import MetadataError, MigrationMetadata

__all__ = [
    "Broken",
    "ContractError",
    "DEFAULT_TARGET",
    "InvalidArgument",
    "LayoutSnapshot",
    "MigratedWorkflow",
    "NotFound",
    "SpecResult",
    "TokenFetcherClient",
    "TokenFetcherError",
    "Unavailable",
    "WorkflowWatch",
    "error_for",
]

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
# CANCELLED too: this client never cancels a unary call, so CANCELLED comes from the server
# side, typically a server shutting down as the call reached it (grpc/grpc#41785).
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.CANCELLED})
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# A sidecar answers in about half a millisecond; the default buckets start at 5 ms.
_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# gRPC's default reconnect backoff grows to 120 s; a sidecar that restarted should be
# reachable again within seconds.
_DEFAULT_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


# --- errors -------------------------------------------------------------------------


class TokenFetcherError(Exception):
    """A call that failed; ``code`` is the grpc.StatusCode (None when the client itself
    found the problem) and ``details`` the server's message."""

    def __init__(self, details: str, code: grpc.StatusCode | None = None) -> None:
        self.details = details
        self.code = code
        super().__init__(f"{code.name}: {details}" if code is not None else details)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.details, self.code))


class NotFound(TokenFetcherError):
    """NOT_FOUND: no such cluster, workflow, job or fingerprint."""


class Broken(TokenFetcherError):
    """FAILED_PRECONDITION: the workflow fails to parse and there is no good version."""


class InvalidArgument(TokenFetcherError):
    """INVALID_ARGUMENT: a malformed request."""


class Unavailable(TokenFetcherError):
    """UNAVAILABLE, DEADLINE_EXCEEDED or (server-side) CANCELLED after the retries: the
    server is unreachable, overloaded, shutting down, or the cluster is still loading."""


class ContractError(TokenFetcherError):
    """The server's answer breaks the contract (e.g. a handover that disagrees with the
    spec's schedule); raised by the client, ``code`` is None."""


_ERROR_CLASSES: dict[grpc.StatusCode, type[TokenFetcherError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Broken,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.CANCELLED: Unavailable,
}


def error_for(code: grpc.StatusCode, details: str) -> TokenFetcherError:
    """The TokenFetcherError subclass for a status code (the base class for others)."""
    return _ERROR_CLASSES.get(code, TokenFetcherError)(details, code)


def _code_from_number(number: int) -> grpc.StatusCode:
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecResult:
    """One workflow's spec. ``status`` is the server's parse status (PARSE_STATUS_STALE:
    the latest definition is broken, the last good one is served); ``stale`` says the
    client served its cache because the server could not be reached."""

    spec: pb.WorkflowSpec
    fingerprint: str
    status: int
    errors: tuple[pb.ParseError, ...]
    stale: bool = False


@dataclass(frozen=True)
class MigratedWorkflow:
    """What the DagBag needs for one metadata file: the spec, its fingerprint and the
    handover (computed from the spec's schedule; checked against the server's)."""

    metadata: MigrationMetadata
    spec: pb.WorkflowSpec
    fingerprint: str
    handover: migration.Handover
    status: int
    errors: tuple[pb.ParseError, ...]
    stale: bool = False
    # The server saw the layout change while no file its parse read changed.
    dynamic: bool = False


_SNAPSHOT_MAGIC = b"TFLS"
_SNAPSHOT_VERSION = 1
_SNAPSHOT_HEADER = struct.Struct(">4sB")
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class LayoutSnapshot:
    """The layout a DagRun is bound to: the job tokens rendered for its run time and
    the spec at the same fingerprint. Restorable from bytes without the server."""

    tokens: pb.GetJobTokensResponse
    spec: pb.WorkflowSpec

    @property
    def fingerprint(self) -> str:
        return self.tokens.fingerprint

    @property
    def run_time(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.tokens.run_time.seconds)

    def to_bytes(self) -> bytes:
        """``b"TFLS"``, a version byte (1), then the GetJobTokensResponse and the
        WorkflowSpec, each as a 4-byte big-endian length and its deterministic
        protobuf serialization."""
        parts = [_SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, _SNAPSHOT_VERSION)]
        for message in (self.tokens, self.spec):
            data = message.SerializeToString(deterministic=True)
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> LayoutSnapshot:
        """Parse to_bytes() output; anything else raises ValueError."""
        view = memoryview(data)
        if len(view) < _SNAPSHOT_HEADER.size:
            raise ValueError("layout snapshot: too short")
        magic, version = _SNAPSHOT_HEADER.unpack_from(view)
        if magic != _SNAPSHOT_MAGIC:
            raise ValueError("layout snapshot: not a layout snapshot (bad magic)")
        if version != _SNAPSHOT_VERSION:
            raise ValueError(f"layout snapshot: unsupported version {version}")
        offset = _SNAPSHOT_HEADER.size
        messages: list[Any] = []
        for message_type in (pb.GetJobTokensResponse, pb.WorkflowSpec):
            if offset + _LENGTH.size > len(view):
                raise ValueError("layout snapshot: truncated")
            (length,) = _LENGTH.unpack_from(view, offset)
            offset += _LENGTH.size
            if offset + length > len(view):
                raise ValueError("layout snapshot: truncated")
            message = message_type()
            try:
                message.ParseFromString(bytes(view[offset : offset + length]))
            except Exception as exc:  # protobuf's DecodeError; its module varies
                raise ValueError(f"layout snapshot: bad {message_type.__name__}") from exc
            messages.append(message)
            offset += length
        if offset != len(view):
            raise ValueError("layout snapshot: trailing bytes")
        return cls(tokens=messages[0], spec=messages[1])


class WorkflowWatch:
    """An iterator over WorkflowEvent messages (the first is TYPE_SUBSCRIBED).

    ``cancel()`` (or leaving the ``with`` block) ends the iteration cleanly; any other
    end of the stream raises the matching TokenFetcherError.
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> Iterator[pb.WorkflowEvent]:
        return self

    def __next__(self) -> pb.WorkflowEvent:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise error_for(exc.code(), exc.details() or "") from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> WorkflowWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


# --- helpers --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    fingerprint: str
    spec: pb.WorkflowSpec
    status: int
    errors: tuple[pb.ParseError, ...]
    confirmed_at: float
    # False once a watch event says the server may have a newer version.
    valid: bool = True
    dynamic: bool = False


MetadataOrPath = MigrationMetadata | str | os.PathLike[str]


def _as_metadata(value: MetadataOrPath) -> MigrationMetadata:
    if isinstance(value, MigrationMetadata):
        return value
    return migration.read_metadata(value)


def _timestamp(value: datetime, name: str = "run_time") -> Timestamp:
    """Aware datetimes are converted to UTC, naive ones are taken as UTC."""
    if value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    if value.microsecond:
        # A fraction would name another run (the instance is the epoch milliseconds).
        raise ValueError(f"{name} must be whole seconds, got {value.isoformat()}")
    return Timestamp(seconds=(value - _EPOCH) // _ONE_SECOND)


def _server_handover(message: pb.Handover) -> migration.Handover:
    last = message.last_legacy_run.seconds if message.HasField("last_legacy_run") else None
    return migration.Handover(last_legacy_run=last, first_new_run=message.first_new_run.seconds)


class _Metrics:
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
        self.watch_reconnects = Counter(
            "token_fetcher_client_watch_reconnects",
            "Times the invalidation watch stream ended and was reopened.",
            registry=registry,
        )


# --- the client -----------------------------------------------------------------------


class TokenFetcherClient:
    """A thread-safe client for the TokenFetcher service; share one per process.

    ``timeout`` is the deadline of each RPC attempt in seconds; ``retries`` the number
    of extra attempts after UNAVAILABLE, DEADLINE_EXCEEDED or CANCELLED, spaced by exponential
    backoff (``backoff_base`` doubling up to ``backoff_max``) with jitter. ``cache_ttl``
    and ``max_stale`` are seconds measured on ``clock``. ``credentials`` makes the
    channel secure. Metrics go to ``registry`` (by default a private one).
    ``batch_size`` caps the items of one BatchResolveMigrations call.
    ``watch_invalidation=True`` starts the invalidation watch (see start_watch()).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 5.0,
        cache_ttl: float = 30.0,
        max_stale: float = 600.0,
        retries: int = 3,
        credentials: grpc.ChannelCredentials | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 10_000,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        backoff_base: float = 0.05,
        backoff_max: float = 2.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        batch_size: int = 500,
        watch_invalidation: bool = False,
        watch_cluster: str = "",
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.target = target
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.max_stale = max_stale
        self.retries = retries
        # A batch answer holds whole specs (up to ~30 KB each): 500 of them stay well
        # inside the message size limit, where the server's own cap (10,000) may not.
        self.batch_size = batch_size
        self.max_message_bytes = max_message_bytes
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._random = random.Random()
        self._metrics = _Metrics(self.registry)

        options = dict(_DEFAULT_CHANNEL_OPTIONS)
        options["grpc.max_send_message_length"] = max_message_bytes
        options["grpc.max_receive_message_length"] = max_message_bytes
        options.update(channel_options)
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=list(options.items()))
        else:
            self._channel = grpc.secure_channel(target, credentials, options=list(options.items()))
        self._stub = pb_grpc.TokenFetcherStub(self._channel)

        self._lock = threading.Lock()
        self._cache: cachetools.LRUCache[tuple[str, str], _Entry] = cachetools.LRUCache(cache_size)
        # Specs by fingerprint never change, so they are kept without a TTL.
        self._pinned: cachetools.LRUCache[tuple[str, str, str], SpecResult] = cachetools.LRUCache(
            cache_size
        )
        # Bumped by every watch invalidation: an answer fetched while it moved may
        # predate the change, so it is stored as needing revalidation.
        self._invalidations = 0
        self._closed = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._watch_call: Any = None
        self._watching = threading.Event()
        if watch_invalidation:
            self.start_watch(watch_cluster)

    # --- lifecycle ---

    def __enter__(self) -> TokenFetcherClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the watch thread and close the channel; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            call, thread = self._watch_call, self._watch_thread
        if call is not None:
            call.cancel()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._channel.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # --- plain calls ---

    def list_workflows(self, cluster: str, page_size: int = 0) -> pb.ListWorkflowsResponse:
        """Every workflow of a cluster, all pages merged into one response."""
        merged = pb.ListWorkflowsResponse()
        request = pb.ListWorkflowsRequest(cluster=cluster, page_size=page_size)
        seen_tokens: set[str] = set()
        while True:
            page = self._call("ListWorkflows", request)
            merged.workflows.extend(page.workflows)
            if not seen_tokens:
                merged.total_size = page.total_size
                merged.cluster_errors.extend(page.cluster_errors)
            if not page.next_page_token:
                return merged
            if page.next_page_token in seen_tokens:
                raise ContractError(f"ListWorkflows repeated page token {page.next_page_token!r}")
            seen_tokens.add(page.next_page_token)
            request.page_token = page.next_page_token

    def get_spec(self, cluster: str, workflow: str, fingerprint: str = "") -> SpecResult:
        """The current spec (cached by (cluster, workflow)), or the version pinned by
        ``fingerprint`` (cached without TTL: it never changes)."""
        if fingerprint:
            return self._pinned_spec(cluster, workflow, fingerprint)
        key = (cluster, workflow)
        entry, fresh, seen = self._lookup(key)
        if not fresh:
            started = self._clock()
            request = pb.GetWorkflowSpecRequest(
                cluster=cluster, workflow=workflow, if_none_match=entry.fingerprint if entry else ""
            )
            try:
                answer = self._call("GetWorkflowSpec", request)
            except TokenFetcherError as exc:
                return self._spec_result(self._fallback(key, entry, exc), stale=True)
            entry = self._store(key, entry, answer, started, seen)
        assert entry is not None
        return self._spec_result(entry, stale=False)

    def get_job_tokens(
        self,
        cluster: str,
        workflow: str,
        run_time: datetime,
        *,
        fingerprint: str = "",
        jobs: Iterable[str] = (),
    ) -> pb.GetJobTokensResponse:
        """The job tokens for the run at ``run_time`` (aware, or naive meaning UTC;
        whole seconds), from the current layout or the one pinned by ``fingerprint``."""
        request = pb.GetJobTokensRequest(
            cluster=cluster,
            workflow=workflow,
            run_time=_timestamp(run_time),
            jobs=list(jobs),
            fingerprint=fingerprint,
        )
        return self._call("GetJobTokens", request)

    def resolve_migration(
        self, metadata_or_path: MetadataOrPath, *, if_none_match: str = ""
    ) -> pb.ResolveMigrationResponse:
        """The server's answer for one metadata file, uncached."""
        request = _resolve_request(_as_metadata(metadata_or_path), if_none_match)
        return self._call("ResolveMigration", request)

    def batch_resolve(self, items: Iterable[MetadataOrPath]) -> list[pb.ResolveMigrationResult]:
        """Many ResolveMigration answers in one round trip, uncached, in request order."""
        request = pb.BatchResolveMigrationsRequest(
            migrations=[_resolve_request(_as_metadata(item), "") for item in items]
        )
        return list(self._call("BatchResolveMigrations", request).results)

    def watch(self, cluster: str = "", timeout: float | None = None) -> WorkflowWatch:
        """Stream workflow events (all clusters when ``cluster`` is empty). The stream
        is long-lived, so it has no deadline unless ``timeout`` is given."""
        self._check_open()
        call = self._stub.WatchWorkflows(pb.WatchWorkflowsRequest(cluster=cluster), timeout=timeout)
        return WorkflowWatch(call)

    # --- the scheduler's calls ---

    def migrated_workflow(self, metadata_or_path: MetadataOrPath) -> MigratedWorkflow:
        """For the DagBag: the workflow a metadata file names, through the cache."""
        metadata = _as_metadata(metadata_or_path)
        key = (metadata.cluster_name, metadata.workflow_name)
        entry, fresh, seen = self._lookup(key)
        if fresh:
            assert entry is not None
            return self._migrated(metadata, entry, stale=False)
        started = self._clock()
        outcome: pb.ResolveMigrationResponse | TokenFetcherError
        try:
            outcome = self._call("ResolveMigration", _resolve_request(metadata, entry))
        except TokenFetcherError as exc:
            outcome = exc
        return self._settle(metadata, key, entry, seen, started, outcome)

    def migrated_workflows(
        self, items: Sequence[MetadataOrPath]
    ) -> list[MigratedWorkflow | TokenFetcherError | MetadataError]:
        """migrated_workflow() for many files in one BatchResolveMigrations round trip
        per ``batch_size`` cache misses (hits stay out of it). Results are in input
        order; a failed item holds its exception instead of raising it."""
        results: list[Any] = [None] * len(items)
        pending: list[tuple[int, MigrationMetadata, tuple[str, str], _Entry | None, int]] = []
        for index, item in enumerate(items):
            try:
                metadata = _as_metadata(item)
                key = (metadata.cluster_name, metadata.workflow_name)
                entry, fresh, seen = self._lookup(key)
                if fresh:
                    assert entry is not None
                    results[index] = self._migrated(metadata, entry, stale=False)
                else:
                    pending.append((index, metadata, key, entry, seen))
            except (MetadataError, TokenFetcherError) as exc:
                results[index] = exc
        for start in range(0, len(pending), self.batch_size):
            self._resolve_batch(pending[start : start + self.batch_size], results)
        return results

    def _resolve_batch(self, pending: list[Any], results: list[Any]) -> None:
        started = self._clock()
        request = pb.BatchResolveMigrationsRequest(
            migrations=[_resolve_request(metadata, entry) for _, metadata, _, entry, _ in pending]
        )
        outcomes: list[Any]
        try:
            answers = self._call("BatchResolveMigrations", request).results
            if len(answers) != len(pending):
                raise ContractError(
                    f"BatchResolveMigrations answered {len(answers)} of {len(pending)} items"
                )
            outcomes = [
                error_for(_code_from_number(answer.error_code), answer.error_message)
                if answer.error_code
                else answer.response
                for answer in answers
            ]
        except TokenFetcherError as exc:
            # The whole round trip failed: every item gets the error (or its stale answer).
            outcomes = [exc] * len(pending)
        for (index, metadata, key, entry, seen), outcome in zip(pending, outcomes, strict=True):
            try:
                results[index] = self._settle(metadata, key, entry, seen, started, outcome)
            except TokenFetcherError as exc:
                results[index] = exc

    def layout_for_run(
        self, metadata_or_path: MetadataOrPath, run_time: datetime
    ) -> LayoutSnapshot:
        """For the DagFileProcessor: the current layout rendered for ``run_time``, with
        the spec at the fingerprint the tokens were rendered from."""
        metadata = _as_metadata(metadata_or_path)
        tokens = self.get_job_tokens(metadata.cluster_name, metadata.workflow_name, run_time)
        return self._snapshot(metadata.cluster_name, metadata.workflow_name, tokens)

    def layout_by_fingerprint(
        self, cluster: str, workflow: str, fingerprint: str, run_time: datetime
    ) -> LayoutSnapshot:
        """An exact past (or present) layout, for a run bound to ``fingerprint``."""
        if not fingerprint:
            raise ValueError("fingerprint must not be empty")
        tokens = self.get_job_tokens(cluster, workflow, run_time, fingerprint=fingerprint)
        if tokens.fingerprint != fingerprint:
            raise ContractError(
                f"asked for layout {fingerprint!r}, the server rendered {tokens.fingerprint!r}"
            )
        return self._snapshot(cluster, workflow, tokens)

    # --- invalidation watch ---

    def start_watch(
        self,
        cluster: str = "",
        on_event: Callable[[pb.WorkflowEvent], None] | None = None,
    ) -> None:
        """Start a background thread that follows WatchWorkflows and invalidates cache
        entries on CHANGED, REMOVED, BROKEN and ADDED events, reconnecting with backoff.
        ``on_event`` is called (on that thread) after each event is applied."""
        self._check_open()
        with self._lock:
            if self._watch_thread is not None:
                raise RuntimeError("the invalidation watch is already running")
            self._watch_thread = threading.Thread(
                target=self._watch_loop,
                args=(cluster, on_event),
                name="token-fetcher-watch",
                daemon=True,
            )
        self._watch_thread.start()

    @property
    def watching(self) -> bool:
        """True while the invalidation watch is subscribed."""
        return self._watching.is_set()

    def _watch_loop(
        self, cluster: str, on_event: Callable[[pb.WorkflowEvent], None] | None
    ) -> None:
        attempt = 0
        while not self._closed.is_set():
            call = self._stub.WatchWorkflows(pb.WatchWorkflowsRequest(cluster=cluster))
            with self._lock:
                self._watch_call = call
            if self._closed.is_set():  # close() may have missed this call
                call.cancel()
                break
            try:
                for event in call:
                    if event.type == pb.WorkflowEvent.TYPE_SUBSCRIBED:
                        attempt = 0
                        # Changes made while the stream was down were never reported.
                        self._invalidate(cluster, None, drop=False)
                        self._watching.set()
                    elif event.type == pb.WorkflowEvent.TYPE_REMOVED:
                        self._invalidate(event.cluster, event.workflow, drop=True)
                    elif event.type != pb.WorkflowEvent.TYPE_UNSPECIFIED:
                        self._invalidate(event.cluster, event.workflow, drop=False)
                    if on_event is not None:
                        try:
                            on_event(event)
                        except Exception:
                            _log.exception("on_event callback failed")
            except grpc.RpcError as exc:
                if not self._closed.is_set():
                    _log.warning("workflow watch on %s failed: %s", self.target, exc.code())
            except Exception:  # keep invalidating after surprises; close() still stops it
                if not self._closed.is_set():
                    _log.exception("workflow watch on %s failed", self.target)
            self._watching.clear()
            if self._closed.is_set():
                break
            self._metrics.watch_reconnects.inc()
            if self._closed.wait(self._backoff(attempt)):
                break
            attempt += 1

    def _invalidate(self, cluster: str, workflow: str | None, *, drop: bool) -> None:
        """Mark (or drop) the entries of one workflow, or of a cluster ("" = all)."""
        with self._lock:
            self._invalidations += 1
            if workflow is None:
                keys = [key for key in self._cache if not cluster or key[0] == cluster]
            else:
                keys = [(cluster, workflow)] if (cluster, workflow) in self._cache else []
            for key in keys:
                if drop:
                    del self._cache[key]
                else:
                    self._cache[key] = replace(self._cache[key], valid=False)
        if keys:
            self._metrics.cache.labels("invalidated").inc(len(keys))

    # --- cache ---

    def _lookup(self, key: tuple[str, str]) -> tuple[_Entry | None, bool, int]:
        """(entry, fresh, invalidation counter); records hit, miss or revalidated."""
        with self._lock:
            entry = self._cache.get(key)
            seen = self._invalidations
        if entry is None:
            self._metrics.cache.labels("miss").inc()
            return None, False, seen
        if entry.valid and self._clock() - entry.confirmed_at < self.cache_ttl:
            self._metrics.cache.labels("hit").inc()
            return entry, True, seen
        self._metrics.cache.labels("revalidated").inc()
        return entry, False, seen

    def _store(
        self,
        key: tuple[str, str],
        entry: _Entry | None,
        answer: pb.GetWorkflowSpecResponse | pb.ResolveMigrationResponse,
        started: float,
        seen: int,
    ) -> _Entry:
        if answer.not_modified:
            if entry is None:
                raise ContractError(f"{key[0]}/{key[1]}: not_modified without if_none_match")
            self._metrics.cache.labels("not_modified").inc()
            new = replace(
                entry,
                status=answer.status or entry.status,
                errors=tuple(answer.errors),
                confirmed_at=started,
                dynamic=answer.dynamic,
            )
        else:
            new = _Entry(
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
            self._cache[key] = new
            self._pinned[(*key, new.fingerprint)] = self._spec_result(new, stale=False)
        return new

    def _fallback(
        self, key: tuple[str, str], entry: _Entry | None, exc: TokenFetcherError
    ) -> _Entry:
        """The entry to serve stale when ``exc`` means unreachable; raises otherwise."""
        if isinstance(exc, NotFound):
            with self._lock:
                self._cache.pop(key, None)
        if (
            isinstance(exc, Unavailable)
            and entry is not None
            and self._clock() - entry.confirmed_at <= self.max_stale
        ):
            self._metrics.cache.labels("stale_served").inc()
            return entry
        raise exc

    def _settle(
        self,
        metadata: MigrationMetadata,
        key: tuple[str, str],
        entry: _Entry | None,
        seen: int,
        started: float,
        outcome: pb.ResolveMigrationResponse | TokenFetcherError,
    ) -> MigratedWorkflow:
        if isinstance(outcome, TokenFetcherError):
            return self._migrated(metadata, self._fallback(key, entry, outcome), stale=True)
        stored = self._store(key, entry, outcome, started, seen)
        server = outcome.handover if outcome.HasField("handover") else None
        return self._migrated(metadata, stored, stale=False, server_handover=server)

    @staticmethod
    def _spec_result(entry: _Entry, *, stale: bool) -> SpecResult:
        return SpecResult(entry.spec, entry.fingerprint, entry.status, entry.errors, stale)

    @staticmethod
    def _migrated(
        metadata: MigrationMetadata,
        entry: _Entry,
        *,
        stale: bool,
        server_handover: pb.Handover | None = None,
    ) -> MigratedWorkflow:
        schedule = entry.spec.schedule
        name = f"{metadata.cluster_name}/{metadata.workflow_name}"
        if entry.spec.HasField("schedule") and schedule.recurrence_seconds > 0:
            computed = migration.handover(
                schedule.reference_time.seconds,
                schedule.recurrence_seconds,
                metadata.migration_epoch,
            )
        elif server_handover is not None:
            computed = _server_handover(server_handover)
        else:
            raise ContractError(f"{name}: the spec has no usable schedule")
        if server_handover is not None and _server_handover(server_handover) != computed:
            raise ContractError(
                f"{name}: the server's handover {_server_handover(server_handover)} disagrees "
                f"with the spec's schedule {computed}"
            )
        return MigratedWorkflow(
            metadata=metadata,
            spec=entry.spec,
            fingerprint=entry.fingerprint,
            handover=computed,
            status=entry.status,
            errors=entry.errors,
            stale=stale,
            dynamic=entry.dynamic,
        )

    def _pinned_spec(self, cluster: str, workflow: str, fingerprint: str) -> SpecResult:
        with self._lock:
            pinned = self._pinned.get((cluster, workflow, fingerprint))
        if pinned is not None:
            self._metrics.cache.labels("hit").inc()
            return pinned
        self._metrics.cache.labels("miss").inc()
        answer = self._call(
            "GetWorkflowSpec",
            pb.GetWorkflowSpecRequest(cluster=cluster, workflow=workflow, fingerprint=fingerprint),
        )
        if answer.fingerprint != fingerprint:
            raise ContractError(
                f"asked for spec {fingerprint!r}, the server answered {answer.fingerprint!r}"
            )
        result = SpecResult(answer.spec, answer.fingerprint, answer.status, tuple(answer.errors))
        with self._lock:
            self._pinned[(cluster, workflow, fingerprint)] = result
        return result

    def _snapshot(
        self, cluster: str, workflow: str, tokens: pb.GetJobTokensResponse
    ) -> LayoutSnapshot:
        # The spec must be the version the tokens came from, not whatever is current
        # by now: a definition may change between the two calls.
        spec = self._pinned_spec(cluster, workflow, tokens.fingerprint).spec
        return LayoutSnapshot(tokens=tokens, spec=spec)

    # --- transport ---

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise RuntimeError("TokenFetcherClient is closed")

    def _backoff(self, attempt: int) -> float:
        # Half fixed, half random ("equal jitter"): spreads out clients that failed
        # together without ever retrying immediately.
        ceiling = min(self._backoff_max, self._backoff_base * 2**attempt)
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    def _call(self, method: str, request: Any) -> Any:
        self._check_open()
        rpc = getattr(self._stub, method)
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                response = rpc(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                code = exc.code()
                self._metrics.duration.labels(method).observe(time.perf_counter() - started)
                self._metrics.calls.labels(method, code.name).inc()
                if code in _RETRYABLE and attempt < self.retries:
                    self._metrics.retries.labels(method).inc()
                    # Waiting on the close event lets close() cut the backoff short.
                    if not self._closed.wait(self._backoff(attempt)):
                        attempt += 1
                        continue
                details = exc.details() or ""
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
                    details += (f" (max_message_bytes is {self.max_message_bytes} on this "
                                "client; the server has a limit of its own)")
                raise error_for(code, details) from None
            self._metrics.duration.labels(method).observe(time.perf_counter() - started)
            self._metrics.calls.labels(method, "OK").inc()
            return response


def _resolve_request(
    metadata: MigrationMetadata, entry_or_fingerprint: _Entry | str | None
) -> pb.ResolveMigrationRequest:
    if isinstance(entry_or_fingerprint, _Entry):
        if_none_match = entry_or_fingerprint.fingerprint
    else:
        if_none_match = entry_or_fingerprint or ""
    return pb.ResolveMigrationRequest(
        cluster_name=metadata.cluster_name,
        workflow_name=metadata.workflow_name,
        migration_date=Timestamp(seconds=metadata.migration_epoch),
        if_none_match=if_none_match,
    )
