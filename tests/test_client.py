"""TokenFetcherClient against a real gRPC server on 127.0.0.1 running a fake servicer.

The fake (canned specs, call counting, injected failures, a controllable watch
stream) stands in for the real server, which is tested on its own; test_client_cli.py
reuses it.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from tests.helpers import FakeClock, wait_for
from token_fetcher import handovers, migration
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.client import (
    Broken,
    ContractError,
    Handover,
    InvalidArgument,
    MigratedWorkflow,
    NotFound,
    TokenFetcherClient,
    TokenFetcherError,
    Unavailable,
)
from token_fetcher.client._cache import Entry
from token_fetcher.migration import MetadataError, MigrationMetadata

CLUSTER = "core001"
DAY = 86_400
REFERENCE = 1_577_836_800  # 2020-01-01T00:00:00Z
MIGRATION_DATE = datetime(2020, 3, 1, 12, 0, tzinfo=UTC)
RUN_TIME = datetime(2020, 3, 2, tzinfo=UTC)
WAIT = 10.0  # the deadline for every condition a test waits on
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 100),
)


# --- the fake server ------------------------------------------------------------------


def make_spec(name: str, version: int = 1, cluster: str = CLUSTER) -> pb.WorkflowSpec:
    """Two jobs, extract -> load; ``version`` shows in the commands."""

    def job(job_name: str, parents: list[str], children: list[str]) -> pb.JobSpec:
        return pb.JobSpec(
            name=job_name,
            kind=pb.JOB_KIND_JOB,
            template="pinball_ext.job_templates.CommandJobTemplate",
            template_name=job_name,
            parents=parents,
            children=children,
            command=pb.CommandTemplate(segments=[f"run {job_name} v{version} --end ", ""]),
            priority=1.0,
            max_attempts=2,
        )

    return pb.WorkflowSpec(
        cluster=cluster,
        name=name,
        jobs=[job("extract", [], ["load"]), job("load", ["extract"], [])],
        schedule=pb.Schedule(
            reference_time=Timestamp(seconds=REFERENCE),
            recurrence_seconds=DAY,
            overrun_policy=pb.OVERRUN_POLICY_SKIP,
        ),
        source=pb.SourceLocation(file=f"workflows/{name}.py", line=10),
        format=pb.DEFINITION_FORMAT_PYTHON,
    )


def fingerprint_of(spec: pb.WorkflowSpec) -> str:
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()[:16]


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class FakeTokenFetcher(pb_grpc.TokenFetcherServicer):
    """Canned specs with history; counts calls, records requests, injects failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions: dict[str, pb.WorkflowSpec] = {}
        self.current: dict[tuple[str, str], str] = {}
        self.broken: set[tuple[str, str]] = set()
        self.calls: Counter[str] = Counter()
        self.requests: defaultdict[str, list] = defaultdict(list)
        self.failures: defaultdict[str, list[grpc.StatusCode]] = defaultdict(list)
        self.blocking: set[str] = set()  # methods that answer only when cancelled
        self.handover_skew = 0
        self.watchers: list[queue.Queue] = []

    # Test controls.

    def put(self, spec: pb.WorkflowSpec) -> str:
        fingerprint = fingerprint_of(spec)
        with self.lock:
            self.versions[fingerprint] = spec
            self.current[spec.cluster, spec.name] = fingerprint
        return fingerprint

    def emit(self, event_type: int, workflow: str, cluster: str = CLUSTER) -> None:
        event = pb.WorkflowEvent(type=event_type, cluster=cluster, workflow=workflow)
        with self.lock:
            for watcher in self.watchers:
                watcher.put(event)

    def count(self, *methods: str) -> int:
        with self.lock:
            return sum(self.calls[method] for method in methods)

    # Plumbing.

    def _enter(self, method: str, request, context) -> None:
        with self.lock:
            self.calls[method] += 1
            self.requests[method].append(request)
            failure = self.failures[method].pop(0) if self.failures[method] else None
        if failure is not None:
            context.abort(failure, f"injected {failure.name}")
        if method in self.blocking:
            cancelled = threading.Event()
            context.add_callback(cancelled.set)
            cancelled.wait()
            context.abort(grpc.StatusCode.CANCELLED, "gave up")

    def _spec(
        self, cluster: str, workflow: str, fingerprint: str = ""
    ) -> tuple[str, pb.WorkflowSpec]:
        with self.lock:
            key = (cluster, workflow)
            if fingerprint:
                spec = self.versions.get(fingerprint)
                if spec is None or (spec.cluster, spec.name) != key:
                    raise _Abort(
                        grpc.StatusCode.NOT_FOUND, f"no version {fingerprint} of {workflow}"
                    )
                return fingerprint, spec
            if key in self.broken:
                raise _Abort(
                    grpc.StatusCode.FAILED_PRECONDITION, f"{workflow}: SyntaxError at line 3"
                )
            if key not in self.current:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"no workflow {workflow} in {cluster}")
            current = self.current[key]
            return current, self.versions[current]

    def _resolve(self, request: pb.ResolveMigrationRequest) -> pb.ResolveMigrationResponse:
        if not request.cluster or not request.workflow:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "cluster and workflow")
        fingerprint, spec = self._spec(request.cluster, request.workflow)
        split = handovers.handover(
            REFERENCE, spec.schedule.recurrence_seconds, request.migration_time.seconds
        )
        handover = pb.Handover(
            migration_time=request.migration_time,
            first_new_run_time=Timestamp(seconds=split.first_new_run + self.handover_skew),
        )
        if split.last_legacy_run is not None:
            handover.last_legacy_run_time.seconds = split.last_legacy_run
        if request.if_none_match == fingerprint:
            return pb.ResolveMigrationResponse(
                not_modified=True,
                fingerprint=fingerprint,
                handover=handover,
                status=pb.PARSE_STATUS_OK,
            )
        return pb.ResolveMigrationResponse(
            fingerprint=fingerprint, spec=spec, handover=handover, status=pb.PARSE_STATUS_OK
        )

    @staticmethod
    def _answer(context, build: Callable[[], object]):
        try:
            return build()
        except _Abort as abort:
            context.abort(abort.code, abort.message)

    # The service.

    def ListWorkflows(self, request, context):
        self._enter("ListWorkflows", request, context)
        with self.lock:
            names = sorted(name for cluster, name in self.current if cluster == request.cluster)
            specs = {name: self.versions[self.current[request.cluster, name]] for name in names}
        if not names:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no cluster {request.cluster}")
        start = int(request.page_token or 0)
        size = request.page_size or 100
        page = names[start : start + size]
        return pb.ListWorkflowsResponse(
            workflows=[
                pb.WorkflowSummary(
                    name=name,
                    fingerprint=fingerprint_of(specs[name]),
                    job_count=len(specs[name].jobs),
                    schedule=specs[name].schedule,
                    status=pb.PARSE_STATUS_OK,
                )
                for name in page
            ],
            next_page_token=str(start + size) if start + size < len(names) else "",
            total_size=len(names),
        )

    def GetWorkflowSpec(self, request, context):
        self._enter("GetWorkflowSpec", request, context)

        def build() -> pb.GetWorkflowSpecResponse:
            fingerprint, spec = self._spec(request.cluster, request.workflow, request.fingerprint)
            if request.if_none_match == fingerprint:
                return pb.GetWorkflowSpecResponse(
                    not_modified=True, fingerprint=fingerprint, status=pb.PARSE_STATUS_OK
                )
            return pb.GetWorkflowSpecResponse(
                fingerprint=fingerprint, spec=spec, status=pb.PARSE_STATUS_OK
            )

        return self._answer(context, build)

    def GetJobTokens(self, request, context):
        self._enter("GetJobTokens", request, context)

        def build() -> pb.GetJobTokensResponse:
            fingerprint, spec = self._spec(request.cluster, request.workflow, request.fingerprint)
            run = request.run_time.seconds
            instance = str(run * 1000)
            end_date = (datetime.fromtimestamp(run, UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
            return pb.GetJobTokensResponse(
                cluster=spec.cluster,
                workflow=spec.name,
                fingerprint=fingerprint,
                run_time=request.run_time,
                instance=instance,
                end_date=end_date,
                jobs=[
                    pb.JobToken(
                        name=f"/workflow/{spec.name}/{instance}/job/waiting/{job.name}",
                        job=job.name,
                        command=end_date.join(job.command.segments),
                        inputs=list(job.parents) or ["__WORKFLOW_START__"],
                    )
                    for job in spec.jobs
                    if not request.jobs or job.name in request.jobs
                ],
                status=pb.PARSE_STATUS_OK,
            )

        return self._answer(context, build)

    def ResolveMigration(self, request, context):
        self._enter("ResolveMigration", request, context)
        return self._answer(context, lambda: self._resolve(request))

    def BatchResolveMigrations(self, request, context):
        self._enter("BatchResolveMigrations", request, context)
        results = []
        for item in request.migrations:
            try:
                results.append(pb.ResolveMigrationResult(response=self._resolve(item)))
            except _Abort as abort:
                results.append(
                    pb.ResolveMigrationResult(
                        error=pb.ErrorStatus(code=abort.code.value[0], message=abort.message)
                    )
                )
        return pb.BatchResolveMigrationsResponse(results=results)

    def WatchWorkflows(self, request, context):
        self._enter("WatchWorkflows", request, context)
        events: queue.Queue = queue.Queue()
        # Wakes the generator when the call ends (client cancel, server stop).
        context.add_callback(lambda: events.put(None))
        with self.lock:
            self.watchers.append(events)
        try:
            yield pb.WorkflowEvent(type=pb.WorkflowEvent.TYPE_SUBSCRIBED)
            while (event := events.get()) is not None:
                yield event
        finally:
            with self.lock:
                self.watchers.remove(events)


class Server:
    """A grpc.server on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self, fake: FakeTokenFetcher) -> None:
        self.fake = fake
        self.port = 0
        self._server: grpc.Server | None = None
        self.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=48))
        pb_grpc.add_TokenFetcherServicer_to_server(self.fake, server)
        port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert port, "could not bind"
        self.port = port
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(None).wait()
            self._server = None


def metadata(workflow: str = "alpha", date: datetime = MIGRATION_DATE) -> MigrationMetadata:
    return MigrationMetadata(CLUSTER, workflow, date)


@pytest.fixture
def fake() -> FakeTokenFetcher:
    fake = FakeTokenFetcher()
    for name in ("alpha", "beta", "gamma", "delta"):
        fake.put(make_spec(name))
    return fake


@pytest.fixture
def server(fake: FakeTokenFetcher) -> Iterator[Server]:
    server = Server(fake)
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(server: Server, clock: FakeClock) -> Iterator[Callable[..., TokenFetcherClient]]:
    clients: list[TokenFetcherClient] = []

    def make(**options: object) -> TokenFetcherClient:
        settings: dict = dict(
            timeout=5.0,
            cache_ttl=10.0,
            max_stale=60.0,
            retries=2,
            clock=clock,
            backoff_base=0.001,
            backoff_max=0.01,
            channel_options=FAST_RECONNECT,
        )
        settings.update(options)
        client = TokenFetcherClient(server.target, **settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., TokenFetcherClient]) -> TokenFetcherClient:
    return make_client()


def sample(client: TokenFetcherClient, name: str, **labels: str) -> float:
    return client.registry.get_sample_value(name, labels) or 0.0


# --- cache ------------------------------------------------------------------------------


def test_cache_hit_makes_no_rpc(client: TokenFetcherClient, fake: FakeTokenFetcher) -> None:
    first = client.get_spec(CLUSTER, "alpha")
    second = client.get_spec(CLUSTER, "alpha")
    assert fake.count("GetWorkflowSpec") == 1
    assert second.spec == make_spec("alpha") and second.fingerprint == first.fingerprint
    assert not first.stale and not second.stale
    client.migrated_workflow(metadata("alpha"))  # shares the (cluster, workflow) entry
    assert fake.count("GetWorkflowSpec", "ResolveMigration") == 1


def test_expired_entry_is_revalidated_by_fingerprint(
    client: TokenFetcherClient, fake: FakeTokenFetcher, clock: FakeClock
) -> None:
    first = client.get_spec(CLUSTER, "alpha")
    clock.advance(11)
    again = client.get_spec(CLUSTER, "alpha")
    request = fake.requests["GetWorkflowSpec"][-1]
    assert request.if_none_match == first.fingerprint
    assert again.spec == first.spec and not again.stale
    assert sample(client, "token_fetcher_client_cache_events_total", event="not_modified") == 1
    # Confirmed again: fresh for another TTL.
    clock.advance(9)
    client.get_spec(CLUSTER, "alpha")
    assert fake.count("GetWorkflowSpec") == 2

    clock.advance(2)
    migrated = client.migrated_workflow(metadata("alpha"))  # ResolveMigration revalidates too
    assert fake.requests["ResolveMigration"][-1].if_none_match == first.fingerprint
    assert migrated.spec == first.spec and not migrated.stale
    assert sample(client, "token_fetcher_client_cache_events_total", event="not_modified") == 2

    new_fingerprint = fake.put(make_spec("alpha", version=2))
    clock.advance(11)
    changed = client.get_spec(CLUSTER, "alpha")
    assert changed.fingerprint == new_fingerprint
    assert changed.spec == make_spec("alpha", version=2)


def test_stale_while_server_down_then_error_then_fresh_after_restart(
    make_client: Callable[..., TokenFetcherClient], server: Server, clock: FakeClock
) -> None:
    client = make_client(timeout=1.0)
    fresh = client.get_spec(CLUSTER, "alpha")
    client.migrated_workflow(metadata("beta"))
    server.stop()

    clock.advance(30)  # past the TTL, within max_stale
    stale = client.get_spec(CLUSTER, "alpha")
    assert stale.stale and stale.spec == fresh.spec
    stale_migration = client.migrated_workflow(metadata("beta"))
    assert stale_migration.stale and stale_migration.spec == make_spec("beta")
    assert sample(client, "token_fetcher_client_cache_events_total", event="stale_served") == 2

    clock.advance(31)  # 61 s since last confirmed: past max_stale
    with pytest.raises(Unavailable) as caught:
        client.get_spec(CLUSTER, "alpha")
    assert caught.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    with pytest.raises(Unavailable):
        client.get_spec(CLUSTER, "gamma")  # never cached: nothing to serve

    server.start()  # same port
    answers: list = []

    def fresh_again() -> bool:
        try:
            answers.append(client.get_spec(CLUSTER, "alpha"))
        except Unavailable:  # the channel is still backing off
            return False
        return not answers[-1].stale

    wait_for(fresh_again, WAIT, message="a fresh answer from the restarted server")
    assert answers[-1].spec == fresh.spec


def test_no_stale_answers_when_max_stale_is_zero(
    make_client: Callable[..., TokenFetcherClient], server: Server, clock: FakeClock
) -> None:
    client = make_client(max_stale=0)
    client.get_spec(CLUSTER, "alpha")
    server.stop()
    clock.advance(11)
    with pytest.raises(Unavailable):
        client.get_spec(CLUSTER, "alpha")


def test_broken_is_raised_at_once_even_with_a_cached_answer(
    client: TokenFetcherClient, fake: FakeTokenFetcher, clock: FakeClock
) -> None:
    client.get_spec(CLUSTER, "alpha")
    fake.broken.add((CLUSTER, "alpha"))
    clock.advance(11)
    with pytest.raises(Broken) as caught:
        client.get_spec(CLUSTER, "alpha")
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details == "alpha: SyntaxError at line 3"
    assert fake.count("GetWorkflowSpec") == 2  # not retried


# --- retries and errors ---------------------------------------------------------------


def test_retries_unavailable_and_deadline_exceeded(
    client: TokenFetcherClient, fake: FakeTokenFetcher
) -> None:
    fake.failures["GetWorkflowSpec"] = [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ]
    assert client.get_spec(CLUSTER, "alpha").spec == make_spec("alpha")
    assert fake.count("GetWorkflowSpec") == 3
    assert sample(client, "token_fetcher_client_retries_total", method="GetWorkflowSpec") == 2


def test_a_server_side_cancelled_is_retried_then_served_stale(
    client: TokenFetcherClient, fake: FakeTokenFetcher, clock: FakeClock
) -> None:
    """A server shutting down cancels a call that reaches it in that instant
    (grpc/grpc#41785); this client never cancels its unary calls, so CANCELLED means
    "unreachable", like UNAVAILABLE."""
    fake.failures["GetWorkflowSpec"] = [grpc.StatusCode.CANCELLED]
    fresh = client.get_spec(CLUSTER, "alpha")
    assert fake.count("GetWorkflowSpec") == 2
    clock.advance(11)
    fake.failures["GetWorkflowSpec"] = [grpc.StatusCode.CANCELLED] * 3  # retries=2
    stale = client.get_spec(CLUSTER, "alpha")
    assert stale.stale and stale.fingerprint == fresh.fingerprint


def test_gives_up_after_the_retries(
    make_client: Callable[..., TokenFetcherClient], fake: FakeTokenFetcher
) -> None:
    client = make_client(retries=3)
    fake.failures["GetJobTokens"] = [grpc.StatusCode.UNAVAILABLE] * 10
    with pytest.raises(Unavailable) as caught:
        client.get_job_tokens(CLUSTER, "alpha", RUN_TIME)
    assert caught.value.details == "injected UNAVAILABLE"
    assert fake.count("GetJobTokens") == 4


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, Broken),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.INTERNAL, TokenFetcherError),
    ],
)
def test_other_errors_are_not_retried(
    client: TokenFetcherClient,
    fake: FakeTokenFetcher,
    failure: grpc.StatusCode,
    error: type[TokenFetcherError],
) -> None:
    fake.failures["GetJobTokens"] = [failure]
    with pytest.raises(error) as caught:
        client.get_job_tokens(CLUSTER, "alpha", RUN_TIME)
    assert type(caught.value) is error
    assert caught.value.code == failure
    assert caught.value.details == f"injected {failure.name}"
    assert fake.count("GetJobTokens") == 1


def test_not_found_carries_the_server_message(
    client: TokenFetcherClient, fake: FakeTokenFetcher
) -> None:
    with pytest.raises(NotFound, match="no workflow nope in core001") as caught:
        client.get_spec(CLUSTER, "nope")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert fake.count("GetWorkflowSpec") == 1


def test_a_real_deadline_is_retried_then_raised(
    make_client: Callable[..., TokenFetcherClient], fake: FakeTokenFetcher
) -> None:
    client = make_client(timeout=0.2, retries=1)
    fake.blocking.add("GetWorkflowSpec")
    with pytest.raises(Unavailable) as caught:
        client.get_spec(CLUSTER, "alpha")
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    outcome = {"method": "GetWorkflowSpec", "outcome": "DEADLINE_EXCEEDED"}
    assert client.registry.get_sample_value("token_fetcher_client_calls_total", outcome) == 2


def test_errors_pickle_with_code_and_details() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(NotFound("no workflow x", grpc.StatusCode.NOT_FOUND)))
    assert type(error) is NotFound
    assert (error.code, error.details) == (grpc.StatusCode.NOT_FOUND, "no workflow x")


# --- plain calls ------------------------------------------------------------------------


def test_list_workflows_follows_every_page(
    client: TokenFetcherClient, fake: FakeTokenFetcher
) -> None:
    answer = client.list_workflows(CLUSTER, page_size=3)
    assert [summary.name for summary in answer.workflows] == ["alpha", "beta", "delta", "gamma"]
    assert answer.total_size == 4 and answer.next_page_token == ""
    assert fake.count("ListWorkflows") == 2


def test_run_time_naive_is_utc_aware_is_converted_fraction_rejected(
    client: TokenFetcherClient, fake: FakeTokenFetcher
) -> None:
    naive = client.get_job_tokens(CLUSTER, "alpha", datetime(2020, 3, 2))
    offset = datetime(2020, 3, 2, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    aware = client.get_job_tokens(CLUSTER, "alpha", offset)
    expected = int(RUN_TIME.timestamp())
    assert naive.run_time.seconds == aware.run_time.seconds == expected
    assert naive.jobs[0].command == "run extract v1 --end 2020-03-01"
    with pytest.raises(ValueError, match="whole seconds"):
        client.get_job_tokens(CLUSTER, "alpha", datetime(2020, 3, 2, microsecond=5))
    assert fake.count("GetJobTokens") == 2


def test_resolve_and_batch_resolve_are_uncached(
    client: TokenFetcherClient, fake: FakeTokenFetcher, tmp_path
) -> None:
    path = migration.write_metadata(tmp_path, metadata("alpha"))
    answer = client.resolve_migration(path)
    assert answer.handover.first_new_run_time.seconds == int(
        datetime(2020, 3, 2, tzinfo=UTC).timestamp()
    )
    client.resolve_migration(metadata("alpha"))
    results = client.batch_resolve([metadata("alpha"), metadata("nope")])
    assert results[0].response.spec == make_spec("alpha")
    assert results[1].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert fake.count("ResolveMigration", "BatchResolveMigrations") == 3


def test_watch_yields_subscribed_first_and_cancel_ends_it(
    client: TokenFetcherClient, fake: FakeTokenFetcher
) -> None:
    with client.watch(CLUSTER) as events:
        assert next(events).type == pb.WorkflowEvent.TYPE_SUBSCRIBED
        fake.emit(pb.WorkflowEvent.TYPE_CHANGED, "alpha")
        changed = next(events)
        assert (changed.type, changed.workflow) == (pb.WorkflowEvent.TYPE_CHANGED, "alpha")
        events.cancel()
        assert list(events) == []


# --- the scheduler's calls -------------------------------------------------------------


def test_migrated_workflow_handover_agrees_with_the_server(
    client: TokenFetcherClient, tmp_path
) -> None:
    path = migration.write_metadata(tmp_path, metadata("alpha"))
    migrated = client.migrated_workflow(path)
    assert isinstance(migrated, MigratedWorkflow)
    assert migrated.metadata == metadata("alpha") and migrated.metadata.path == path
    assert migrated.spec == make_spec("alpha")
    assert migrated.fingerprint == fingerprint_of(make_spec("alpha"))
    # Aware UTC datetimes, usable as they are for get_job_tokens().
    march_1 = datetime(2020, 3, 1, tzinfo=UTC)
    assert migrated.handover == Handover(MIGRATION_DATE, march_1, march_1 + timedelta(days=1))
    assert migrated.handover.first_new_run_time.utcoffset() == timedelta(0)
    # A cached entry serves any migration date; the handover follows it.
    june_1 = datetime(2019, 6, 1, tzinfo=UTC)
    early = client.migrated_workflow(metadata("alpha", june_1))
    assert early.handover == Handover(june_1, None, datetime(2020, 1, 1, tzinfo=UTC))


def test_a_fresh_hit_reuses_what_it_built_for_the_same_metadata_only(
    client: TokenFetcherClient, fake: FakeTokenFetcher, clock: FakeClock, tmp_path
) -> None:
    client.migrated_workflow(metadata("alpha"))  # miss: resolved
    first = client.migrated_workflow(metadata("alpha"))
    assert client.migrated_workflow(metadata("alpha")) is first
    assert client.migrated_workflows([metadata("alpha")])[0] is first
    # Another path, date or partition is another result, never the one built before.
    path = migration.write_metadata(tmp_path, metadata("alpha"))
    from_file = client.migrated_workflow(path)
    assert from_file is not first and from_file.metadata.path == path
    june_1 = datetime(2019, 6, 1, tzinfo=UTC)
    early = client.migrated_workflow(metadata("alpha", june_1))
    assert early.handover == Handover(june_1, None, datetime(2020, 1, 1, tzinfo=UTC))
    partitioned = replace(metadata("alpha"), partition="b")
    assert client.migrated_workflow(partitioned).metadata.partition == "b"
    # A revalidated entry is a new entry: it builds again.
    clock.advance(11)
    revalidated = client.migrated_workflow(metadata("alpha"))
    assert revalidated is not first and revalidated == first
    assert fake.count("ResolveMigration") == 2


def test_a_replaced_cache_entry_starts_with_nothing_built() -> None:
    entry = Entry("f", make_spec("alpha"), pb.PARSE_STATUS_OK, (), confirmed_at=0.0)
    entry.built.append("what a hit built")
    assert replace(entry, valid=False).built == []
    assert replace(entry, status=pb.PARSE_STATUS_BROKEN).built == []


def test_a_handover_that_disagrees_with_the_schedule_is_an_error(
    client: TokenFetcherClient, fake: FakeTokenFetcher
) -> None:
    fake.handover_skew = 60
    with pytest.raises(ContractError, match="disagrees"):
        client.migrated_workflow(metadata("alpha"))


def test_batch_makes_one_round_trip_for_the_misses_only(
    client: TokenFetcherClient, fake: FakeTokenFetcher, tmp_path
) -> None:
    client.get_spec(CLUSTER, "alpha")  # cached: stays out of the batch
    broken_file = tmp_path / "broken.json"
    broken_file.write_text("{")
    items = [metadata("alpha"), metadata("missing"), str(broken_file), metadata("beta")]
    results = client.migrated_workflows(items)

    assert fake.count("BatchResolveMigrations") == 1
    sent = fake.requests["BatchResolveMigrations"][0].migrations
    assert [item.workflow for item in sent] == ["missing", "beta"]
    assert isinstance(results[0], MigratedWorkflow) and results[0].spec == make_spec("alpha")
    assert isinstance(results[1], NotFound) and "missing" in results[1].details
    assert isinstance(results[2], MetadataError)
    assert isinstance(results[3], MigratedWorkflow) and results[3].spec == make_spec("beta")

    again = client.migrated_workflows([metadata("alpha"), metadata("beta")])
    assert all(isinstance(item, MigratedWorkflow) for item in again)
    assert fake.count("BatchResolveMigrations") == 1  # all hits: no round trip


def test_large_batches_are_split_to_stay_under_the_message_limit(
    make_client: Callable[..., TokenFetcherClient], fake: FakeTokenFetcher
) -> None:
    client = make_client(batch_size=3)
    names = ["alpha", "beta", "gamma", "delta", "missing"]
    results = client.migrated_workflows([metadata(name) for name in names])
    assert [type(result) for result in results] == [MigratedWorkflow] * 4 + [NotFound]
    assert [len(r.migrations) for r in fake.requests["BatchResolveMigrations"]] == [3, 2]


def test_batch_serves_stale_items_and_returns_errors_when_unreachable(
    make_client: Callable[..., TokenFetcherClient], fake: FakeTokenFetcher, clock: FakeClock
) -> None:
    client = make_client(retries=0)
    client.get_spec(CLUSTER, "alpha")
    clock.advance(11)
    fake.failures["BatchResolveMigrations"] = [grpc.StatusCode.UNAVAILABLE]
    results = client.migrated_workflows([metadata("alpha"), metadata("beta")])
    assert isinstance(results[0], MigratedWorkflow) and results[0].stale
    assert isinstance(results[1], Unavailable)
    assert fake.requests["BatchResolveMigrations"][0].migrations[0].if_none_match


# --- watch-driven invalidation ---------------------------------------------------------


def test_a_watch_event_reaches_the_cache_before_the_ttl(
    client: TokenFetcherClient, fake: FakeTokenFetcher
) -> None:
    seen: queue.Queue = queue.Queue()
    client.start_watch(CLUSTER, on_event=seen.put)
    assert seen.get(timeout=WAIT).type == pb.WorkflowEvent.TYPE_SUBSCRIBED
    assert client.watching
    first = client.get_spec(CLUSTER, "alpha")
    client.get_spec(CLUSTER, "beta")

    v2 = fake.put(make_spec("alpha", version=2))
    fake.emit(pb.WorkflowEvent.TYPE_CHANGED, "alpha")
    assert seen.get(timeout=WAIT).type == pb.WorkflowEvent.TYPE_CHANGED
    changed = client.get_spec(CLUSTER, "alpha")  # the clock has not moved
    assert changed.fingerprint == v2 and changed.fingerprint != first.fingerprint
    assert fake.requests["GetWorkflowSpec"][-1].if_none_match == first.fingerprint
    client.get_spec(CLUSTER, "beta")
    assert fake.count("GetWorkflowSpec") == 3  # beta still a hit

    fake.emit(pb.WorkflowEvent.TYPE_REMOVED, "beta")
    assert seen.get(timeout=WAIT).type == pb.WorkflowEvent.TYPE_REMOVED
    client.get_spec(CLUSTER, "beta")
    assert fake.requests["GetWorkflowSpec"][-1].if_none_match == ""  # dropped, not marked
    assert sample(client, "token_fetcher_client_cache_events_total", event="invalidated") == 2


def test_the_watch_reconnects_and_invalidates_what_it_may_have_missed(
    make_client: Callable[..., TokenFetcherClient], server: Server, fake: FakeTokenFetcher
) -> None:
    seen: queue.Queue = queue.Queue()
    client = make_client()
    client.start_watch(on_event=seen.put)
    assert seen.get(timeout=WAIT).type == pb.WorkflowEvent.TYPE_SUBSCRIBED
    first = client.get_spec(CLUSTER, "alpha")

    server.stop()
    server.start()
    assert seen.get(timeout=WAIT).type == pb.WorkflowEvent.TYPE_SUBSCRIBED
    client.get_spec(CLUSTER, "alpha")
    assert fake.requests["GetWorkflowSpec"][-1].if_none_match == first.fingerprint
    assert sample(client, "token_fetcher_client_watch_reconnects_total") >= 1


def test_close_stops_the_watch_thread(make_client: Callable[..., TokenFetcherClient]) -> None:
    client = make_client(watch_invalidation=True)
    wait_for(lambda: client.watching, WAIT, message="the watch to subscribe")
    thread = client._watch._thread
    client.close()
    client.close()  # idempotent
    assert thread is not None and not thread.is_alive()
    assert not client.watching
    with pytest.raises(RuntimeError, match="closed"):
        client.get_spec(CLUSTER, "alpha")


# --- threads, metrics, lifecycle -------------------------------------------------------


def test_32_threads_share_one_client(
    client: TokenFetcherClient, fake: FakeTokenFetcher, clock: FakeClock
) -> None:
    names = ["alpha", "beta", "gamma", "delta"]
    expected = {name: fingerprint_of(make_spec(name)) for name in names}
    barrier = threading.Barrier(32)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait(timeout=WAIT)
            for i in range(40):
                name = names[(worker + i) % len(names)]
                if i % 3 == 0:
                    assert client.get_spec(CLUSTER, name).fingerprint == expected[name]
                elif i % 3 == 1:
                    migrated = client.migrated_workflow(metadata(name))
                    assert migrated.fingerprint == expected[name]
                else:
                    tokens = client.get_job_tokens(CLUSTER, name, RUN_TIME)
                    assert tokens.fingerprint == expected[name]
                if worker == 0 and i % 10 == 0:
                    clock.advance(11)  # expire entries under the other threads' feet
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert fake.count("GetJobTokens") == 32 * 13
    # Worker 0 looks beta up twice after its last clock move: at least that one hits.
    assert sample(client, "token_fetcher_client_cache_events_total", event="hit") >= 1


def test_metrics_are_read_from_the_registry(
    client: TokenFetcherClient, fake: FakeTokenFetcher, clock: FakeClock
) -> None:
    client.get_spec(CLUSTER, "alpha")  # miss
    client.get_spec(CLUSTER, "alpha")  # hit
    clock.advance(11)
    client.get_spec(CLUSTER, "alpha")  # revalidated, not_modified
    with pytest.raises(NotFound):
        client.get_spec(CLUSTER, "nope")  # miss

    def events(event: str) -> float:
        return sample(client, "token_fetcher_client_cache_events_total", event=event)

    assert [events(e) for e in ("hit", "miss", "revalidated", "not_modified")] == [1, 2, 1, 1]
    assert events("stale_served") == 0
    calls = "token_fetcher_client_calls_total"
    assert sample(client, calls, method="GetWorkflowSpec", outcome="OK") == 2
    assert sample(client, calls, method="GetWorkflowSpec", outcome="NOT_FOUND") == 1
    duration = "token_fetcher_client_call_duration_seconds_count"
    assert sample(client, duration, method="GetWorkflowSpec") == 3


def test_clients_keep_their_metrics_apart(server: Server) -> None:
    shared = CollectorRegistry()
    with (
        TokenFetcherClient(server.target) as one,
        TokenFetcherClient(server.target) as two,
        TokenFetcherClient(server.target, registry=shared) as three,
    ):
        one.get_spec(CLUSTER, "alpha")
        assert one.registry is not two.registry
        assert sample(two, "token_fetcher_client_cache_events_total", event="miss") == 0
        three.get_spec(CLUSTER, "alpha")
        assert shared.get_sample_value("token_fetcher_client_cache_events_total", {"event": "miss"})
    assert one.closed and two.closed and three.closed


def test_secure_channel_when_credentials_are_given(server: Server) -> None:
    # The fake serves plaintext, so a TLS client cannot talk to it: proof that the
    # credentials were used.
    credentials = grpc.ssl_channel_credentials()
    with (
        TokenFetcherClient(server.target, credentials=credentials, timeout=1, retries=0) as client,
        pytest.raises(Unavailable),
    ):
        client.get_spec(CLUSTER, "alpha")
