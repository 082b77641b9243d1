"""TokenFetcherClient: one thin method per call the scheduler makes, over the transport
(deadlines, retries) and the cache (TTL, revalidation, stale-if-error, watch)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client._cache import InvalidationWatch, SpecCache
from token_fetcher.client._errors import (
    ContractError,
    TokenFetcherError,
    error_for,
)
from token_fetcher.client._models import MigratedWorkflow, SpecResult, WorkflowWatch
from token_fetcher.client._resolution import MetadataOrPath, Resolver, as_metadata, resolve_request
from token_fetcher.client._transport import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TARGET,
    ClientMetrics,
    Transport,
)
from token_fetcher.migration import MetadataError

__all__ = ["TokenFetcherClient"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)


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
        self._resolver = Resolver(self._transport, self._cache)
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
        request = resolve_request(as_metadata(metadata_or_path), if_none_match)
        return self._transport.call("ResolveMigration", request)

    def batch_resolve(self, items: Iterable[MetadataOrPath]) -> list[pb.ResolveMigrationResult]:
        """Many ResolveMigration answers in one round trip, uncached, in request order."""
        request = pb.BatchResolveMigrationsRequest(
            migrations=[resolve_request(as_metadata(item), "") for item in items]
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
        return self._resolver.migrated_workflow(metadata_or_path)

    def migrated_workflows(
        self, items: Sequence[MetadataOrPath]
    ) -> list[MigratedWorkflow | TokenFetcherError | MetadataError]:
        """migrated_workflow() for many files in one BatchResolveMigrations round trip
        per ``batch_size`` cache misses (hits stay out of it). Results are in input
        order; a failed item holds its exception instead of raising it."""
        return self._resolver.migrated_workflows(items, self.batch_size)

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


def _timestamp(value: datetime, name: str = "run_time") -> Timestamp:
    """Aware datetimes are converted to UTC, naive ones are taken as UTC."""
    if value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    if value.microsecond:
        # A fraction would name another run (the instance is the epoch milliseconds).
        raise ValueError(f"{name} must be whole seconds, got {value.isoformat()}")
    return Timestamp(seconds=(value - _EPOCH) // _ONE_SECOND)
