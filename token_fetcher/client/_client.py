"""TokenFetcherClient: one thin method per call the scheduler makes, over the transport
(deadlines, retries) and the cache (TTL, revalidation, stale-if-error, watch)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from token_fetcher import handovers, migration
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client._cache import Entry, InvalidationWatch, SpecCache
from token_fetcher.client._errors import (
    ContractError,
    TokenFetcherError,
    code_from_number,
    error_for,
)
from token_fetcher.client._models import Handover, MigratedWorkflow, SpecResult, WorkflowWatch
from token_fetcher.client._transport import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TARGET,
    ClientMetrics,
    Transport,
)
from token_fetcher.migration import MetadataError, MigrationMetadata

__all__ = ["MetadataOrPath", "TokenFetcherClient"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)

MetadataOrPath = MigrationMetadata | str | os.PathLike[str]


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
        # A batch answer holds whole specs (up to ~30 KB each): 500 of them stay well
        # inside the message size limit, where the server's own cap (10,000) may not.
        self.batch_size = batch_size
        self.registry = registry if registry is not None else CollectorRegistry()
        metrics = ClientMetrics(self.registry)
        self._transport = Transport(
            target,
            timeout=timeout,
            retries=retries,
            credentials=credentials,
            metrics=metrics,
            max_message_bytes=max_message_bytes,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            channel_options=channel_options,
        )
        self._cache = SpecCache(cache_size, cache_ttl, max_stale, clock, metrics)
        self._watch = InvalidationWatch(self._transport, self._cache)
        if watch_invalidation:
            self.start_watch(watch_cluster)

    # --- lifecycle ---

    def __enter__(self) -> TokenFetcherClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the watch thread and close the channel; idempotent."""
        if self._transport.closed.is_set():
            return
        self._transport.closed.set()
        self._watch.stop()
        self._transport.close()

    @property
    def closed(self) -> bool:
        return self._transport.closed.is_set()

    @property
    def target(self) -> str:
        return self._transport.target

    @property
    def timeout(self) -> float:
        return self._transport.timeout

    # --- the invalidation watch ---

    def start_watch(
        self,
        cluster: str = "",
        on_event: Callable[[pb.WorkflowEvent], None] | None = None,
    ) -> None:
        """Start a background thread that follows WatchWorkflows and invalidates cache
        entries on CHANGED, REMOVED, BROKEN and ADDED events, reconnecting with backoff.
        ``on_event`` is called (on that thread) after each event is applied."""
        self._watch.start(cluster, on_event)

    @property
    def watching(self) -> bool:
        """True while the invalidation watch is subscribed."""
        return self._watch.subscribed.is_set()

    # --- plain calls ---

    def list_workflows(self, cluster: str, page_size: int = 0) -> pb.ListWorkflowsResponse:
        """Every workflow of a cluster, all pages merged into one response."""
        merged = pb.ListWorkflowsResponse()
        request = pb.ListWorkflowsRequest(cluster=cluster, page_size=page_size)
        seen_tokens: set[str] = set()
        while True:
            page = self._transport.call("ListWorkflows", request)
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
        entry, fresh, seen = self._cache.lookup(key)
        if not fresh:
            started = self._cache.clock()
            request = pb.GetWorkflowSpecRequest(
                cluster=cluster, workflow=workflow, if_none_match=entry.fingerprint if entry else ""
            )
            try:
                answer = self._transport.call("GetWorkflowSpec", request)
            except TokenFetcherError as exc:
                return self._cache.fallback(key, entry, exc).result(stale=True)
            entry = self._cache.store(key, entry, answer, started, seen)
        assert entry is not None
        return entry.result(stale=False)

    def get_job_tokens(
        self,
        cluster: str,
        workflow: str,
        run_time: datetime,
        *,
        fingerprint: str = "",
        jobs: Iterable[str] = (),
        manual: bool = False,
    ) -> pb.GetJobTokensResponse:
        """The job tokens for the run at ``run_time`` (aware, or naive meaning UTC;
        whole seconds), from the current layout or the one pinned by ``fingerprint``.
        ``run_time`` must be one of the schedule's runs (else InvalidArgument naming the
        runs before and after it) unless ``manual`` (a run started by hand)."""
        request = pb.GetJobTokensRequest(
            cluster=cluster,
            workflow=workflow,
            run_time=_timestamp(run_time),
            jobs=list(jobs),
            fingerprint=fingerprint,
            manual=manual,
        )
        return self._transport.call("GetJobTokens", request)

    def resolve_migration(
        self, metadata_or_path: MetadataOrPath, *, if_none_match: str = ""
    ) -> pb.ResolveMigrationResponse:
        """The server's answer for one metadata file, uncached."""
        request = _resolve_request(_as_metadata(metadata_or_path), if_none_match)
        return self._transport.call("ResolveMigration", request)

    def batch_resolve(self, items: Iterable[MetadataOrPath]) -> list[pb.ResolveMigrationResult]:
        """Many ResolveMigration answers in one round trip, uncached, in request order."""
        request = pb.BatchResolveMigrationsRequest(
            migrations=[_resolve_request(_as_metadata(item), "") for item in items]
        )
        return list(self._transport.call("BatchResolveMigrations", request).results)

    def server_info(self) -> pb.ServerInfo:
        """Version, start time, isolation and the state of every cluster."""
        return self._transport.call("GetServerInfo", pb.GetServerInfoRequest())

    def reload(self, cluster: str) -> pb.ReloadResponse:
        """Re-parse a cluster now and wait for the outcome (PERMISSION_DENIED when the
        server disables Reload)."""
        return self._transport.call("Reload", pb.ReloadRequest(cluster=cluster))

    def health(self, service: str = "") -> str:
        """The health service's status of ``service`` ("": the server) by name, e.g.
        "SERVING" or "NOT_SERVING"; one attempt, no retries, as a probe wants."""
        self._transport.check_open()
        try:
            response = health_pb2_grpc.HealthStub(self._transport.channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise error_for(exc.code(), exc.details() or "") from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def watch(self, cluster: str = "", timeout: float | None = None) -> WorkflowWatch:
        """Stream workflow events (all clusters when ``cluster`` is empty). The stream
        is long-lived, so it has no deadline unless ``timeout`` is given."""
        self._transport.check_open()
        call = self._transport.stub.WatchWorkflows(
            pb.WatchWorkflowsRequest(cluster=cluster), timeout=timeout
        )
        return WorkflowWatch(call)

    # --- the scheduler's calls ---

    def migrated_workflow(self, metadata_or_path: MetadataOrPath) -> MigratedWorkflow:
        """For the DagBag: the workflow a metadata file names, through the cache."""
        metadata = _as_metadata(metadata_or_path)
        key = (metadata.cluster_name, metadata.workflow_name)
        entry, fresh, seen = self._cache.lookup(key)
        if fresh:
            assert entry is not None
            return self._migrated(metadata, entry, stale=False)
        started = self._cache.clock()
        outcome: pb.ResolveMigrationResponse | TokenFetcherError
        try:
            outcome = self._transport.call("ResolveMigration", _resolve_request(metadata, entry))
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
        pending: list[tuple[int, MigrationMetadata, tuple[str, str], Entry | None, int]] = []
        for index, item in enumerate(items):
            try:
                metadata = _as_metadata(item)
                key = (metadata.cluster_name, metadata.workflow_name)
                entry, fresh, seen = self._cache.lookup(key)
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
        started = self._cache.clock()
        request = pb.BatchResolveMigrationsRequest(
            migrations=[_resolve_request(metadata, entry) for _, metadata, _, entry, _ in pending]
        )
        outcomes: list[Any]
        try:
            answers = self._transport.call("BatchResolveMigrations", request).results
            if len(answers) != len(pending):
                raise ContractError(
                    f"BatchResolveMigrations answered {len(answers)} of {len(pending)} items"
                )
            outcomes = [
                error_for(code_from_number(answer.error.code), answer.error.message)
                if answer.HasField("error")
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

    def _settle(
        self,
        metadata: MigrationMetadata,
        key: tuple[str, str],
        entry: Entry | None,
        seen: int,
        started: float,
        outcome: pb.ResolveMigrationResponse | TokenFetcherError,
    ) -> MigratedWorkflow:
        if isinstance(outcome, TokenFetcherError):
            return self._migrated(metadata, self._cache.fallback(key, entry, outcome), stale=True)
        stored = self._cache.store(key, entry, outcome, started, seen)
        server = outcome.handover if outcome.HasField("handover") else None
        return self._migrated(metadata, stored, stale=False, server_handover=server)

    @staticmethod
    def _migrated(
        metadata: MigrationMetadata,
        entry: Entry,
        *,
        stale: bool,
        server_handover: pb.Handover | None = None,
    ) -> MigratedWorkflow:
        name = f"{metadata.cluster_name}/{metadata.workflow_name}"
        computed = handovers.schedule_handover(entry.spec, metadata.migration_epoch)
        if computed is None and server_handover is not None:
            computed = _server_handover(server_handover)
        if computed is None:
            raise ContractError(f"{name}: the spec has no usable schedule")
        if server_handover is not None and _server_handover(server_handover) != computed:
            raise ContractError(
                f"{name}: the server's handover {_server_handover(server_handover)} disagrees "
                f"with the spec's schedule {computed}"
            )
        last_legacy_run = computed.last_legacy_run
        return MigratedWorkflow(
            metadata=metadata,
            spec=entry.spec,
            fingerprint=entry.fingerprint,
            handover=Handover(
                migration_time=metadata.migration_date,
                last_legacy_run_time=None if last_legacy_run is None else _utc(last_legacy_run),
                first_new_run_time=_utc(computed.first_new_run),
            ),
            status=entry.status,
            errors=entry.errors,
            stale=stale,
            dynamic=entry.dynamic,
        )

    def _pinned_spec(self, cluster: str, workflow: str, fingerprint: str) -> SpecResult:
        pinned = self._cache.pinned(cluster, workflow, fingerprint)
        if pinned is not None:
            return pinned
        answer = self._transport.call(
            "GetWorkflowSpec",
            pb.GetWorkflowSpecRequest(cluster=cluster, workflow=workflow, fingerprint=fingerprint),
        )
        if answer.fingerprint != fingerprint:
            raise ContractError(
                f"asked for spec {fingerprint!r}, the server answered {answer.fingerprint!r}"
            )
        result = SpecResult(answer.spec, answer.fingerprint, answer.status, tuple(answer.errors))
        self._cache.pin(cluster, workflow, result)
        return result


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


def _utc(epoch: int) -> datetime:
    return _EPOCH + timedelta(seconds=epoch)


def _server_handover(message: pb.Handover) -> handovers.Handover:
    last = (message.last_legacy_run_time.seconds if message.HasField("last_legacy_run_time")
            else None)
    return handovers.Handover(last_legacy_run=last,
                              first_new_run=message.first_new_run_time.seconds)


def _resolve_request(
    metadata: MigrationMetadata, entry_or_fingerprint: Entry | str | None
) -> pb.ResolveMigrationRequest:
    if isinstance(entry_or_fingerprint, Entry):
        if_none_match = entry_or_fingerprint.fingerprint
    else:
        if_none_match = entry_or_fingerprint or ""
    return pb.ResolveMigrationRequest(
        cluster=metadata.cluster_name,
        workflow=metadata.workflow_name,
        migration_time=Timestamp(seconds=metadata.migration_epoch),
        if_none_match=if_none_match,
    )
