"""Bad requests: empty, huge and odd names, unknown clusters, absurd page sizes and tokens,
timestamps out of range, 1 ms deadlines, and every request message fuzzed (typed fields
from the descriptor, and raw bytes). Each is answered INVALID_ARGUMENT or NOT_FOUND with a
message that says why, never UNKNOWN or INTERNAL, and the server stays healthy.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import descriptor as descriptor_module
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import health, scrape
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.client import TokenFetcherClient, Unavailable
from token_fetcher.config import parse_config
from token_fetcher.handlers import SERVICE
from token_fetcher.migration import MigrationMetadata
from token_fetcher.request_checks import MAX_EPOCH, MIN_EPOCH
from token_fetcher.server import TokenFetcherServer

from .reliability_helpers import JS, PY, codes_counted

Code = grpc.StatusCode
INVALID, NOT_FOUND = Code.INVALID_ARGUMENT, Code.NOT_FOUND
RUN = Timestamp(seconds=1577944800)  # 2020-01-02 06:00 UTC
MEGABYTE = 1_000_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server over the bundled examples for this module's read-only requests."""
    from tests.helpers import EXAMPLES

    from .reliability_helpers import cluster_from_yaml

    base = tmp_path_factory.mktemp("bad-requests")
    config = parse_config({
        "listen": "127.0.0.1:0", "metrics": "127.0.0.1:0", "state_dir": str(base / "state"),
        "poll_interval_seconds": 0.5,
        "clusters": {PY: cluster_from_yaml(EXAMPLES / "python_repo"),
                     JS: cluster_from_yaml(EXAMPLES / "json_repo")}}, base)
    server = TokenFetcherServer(config, shutdown_notice_seconds=0)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        assert server.catalog.wait_ready(60)
        yield server, channel, pb_grpc.TokenFetcherStub(channel)
    finally:
        channel.close()
        server.stop(grace=1)


@pytest.fixture
def stub(served):
    return served[2]


def failure(call, request, timeout: float = 10) -> grpc.RpcError:
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{type(request).__name__} succeeded: {str(request)[:200]}")


# --- names ----------------------------------------------------------------------------------

# (label, value, expected code, words the message must contain; {what} is the field's name)
NAMES = [
    ("empty", "", INVALID, ["{what}", "required"]),
    ("1 MB", "x" * MEGABYTE, INVALID, ["{what}", str(MEGABYTE), "512"]),
    ("513 characters", "y" * 513, INVALID, ["{what}", "513", "512"]),
    ("../", "../", NOT_FOUND, ["'../'"]),
    ("/", "/", NOT_FOUND, ["'/'"]),
    ("absolute path", "/etc/passwd", NOT_FOUND, ["'/etc/passwd'"]),
    ("traversal", "../../../../etc/passwd", NOT_FOUND, ["etc/passwd"]),
    ("NUL inside", "daily\x00reporting", INVALID, ["{what}", "control"]),
    ("NUL alone", "\x00", INVALID, ["{what}", "control"]),
    ("escape", "\x1b[31mred", INVALID, ["{what}", "control"]),
    ("DEL", "a\x7fb", INVALID, ["{what}", "control"]),
    ("tab inside", "a\tb", INVALID, ["{what}", "control"]),
    ("newline at the end", "daily_reporting\n", INVALID, ["{what}", "control"]),
    ("leading space", " daily_reporting", INVALID, ["{what}", "whitespace"]),
    ("only spaces", "   ", INVALID, ["{what}", "whitespace"]),
    ("unicode line separator", "daily\u2028", INVALID, ["{what}", "whitespace"]),
    ("no-break space at the end", "daily_reporting\u00a0", INVALID, ["{what}", "whitespace"]),
    ("japanese", "毎日のレポート", NOT_FOUND, ["毎日のレポート"]),
    ("emoji", "\U0001f4a5", NOT_FOUND, ["\U0001f4a5"]),
    ("right-to-left override", "\u202edaily", NOT_FOUND, ["daily"]),
    ("C1 control inside", "a\x85b", NOT_FOUND, ["\\x85"]),
    ("SQL", "'; DROP TABLE versions; --", NOT_FOUND, ["DROP TABLE"]),
    ("format string", "%s%n{0}${x}", NOT_FOUND, ["%s%n{0}${x}"]),
]

# (RPC, field, request for a name): the name goes into that field, the rest is valid.
NAME_FIELDS = [
    ("ListWorkflows", "cluster", lambda v: pb.ListWorkflowsRequest(cluster=v)),
    ("GetWorkflowSpec", "cluster",
     lambda v: pb.GetWorkflowSpecRequest(cluster=v, workflow="daily_reporting")),
    ("GetWorkflowSpec", "workflow", lambda v: pb.GetWorkflowSpecRequest(cluster=PY, workflow=v)),
    ("GetWorkflowSpec", "fingerprint", lambda v: pb.GetWorkflowSpecRequest(
        cluster=PY, workflow="daily_reporting", fingerprint=v)),
    ("GetJobTokens", "workflow",
     lambda v: pb.GetJobTokensRequest(cluster=PY, workflow=v, run_time=RUN)),
    ("GetJobTokens", "job", lambda v: pb.GetJobTokensRequest(
        cluster=PY, workflow="daily_reporting", run_time=RUN, jobs=["final", v])),
    ("GetJobToken", "job", lambda v: pb.GetJobTokenRequest(
        cluster=PY, workflow="daily_reporting", job=v, run_time=RUN)),
    ("ResolveMigration", "cluster", lambda v: pb.ResolveMigrationRequest(
        cluster=v, workflow="daily_reporting", migration_time=RUN)),
    ("ResolveMigration", "workflow", lambda v: pb.ResolveMigrationRequest(
        cluster=PY, workflow=v, migration_time=RUN)),
    ("Reload", "cluster", lambda v: pb.ReloadRequest(cluster=v)),
]


def _name_cases():
    for method, field, build in NAME_FIELDS:
        for label, value, code, words in NAMES:
            if field in ("fingerprint", "job") and label == "empty":
                continue  # an empty fingerprint means "current"; GetJobToken's is tested below
            yield pytest.param(method, field, build, value, code, words,
                               id=f"{method}-{field}-{label}")


@pytest.mark.parametrize("method, field, build, value, code, words", list(_name_cases()))
def test_odd_names(stub, method, field, build, value, code, words):
    error = failure(getattr(stub, method), build(value))
    assert error.code() == code, (error.code(), error.details()[:300])
    details = error.details()
    assert len(details) < 2000, "the message echoes a huge name back"
    if code == NOT_FOUND:
        kind = "cluster" if field == "cluster" else field
        assert f"no {kind if kind != 'fingerprint' else 'version'}" in details, details
    for word in words:
        assert word.replace("{what}", field) in details, (word, details)


def test_odd_names_in_a_watch_and_in_a_batch(stub):
    for label, value, code, _ in NAMES:
        if label == "empty":
            continue  # an empty cluster watches every cluster
        error = failure(lambda r, timeout: list(stub.WatchWorkflows(r, timeout=timeout)),
                        pb.WatchWorkflowsRequest(cluster=value))
        assert error.code() == code, (label, error.details()[:200])
    batch = stub.BatchResolveMigrations(pb.BatchResolveMigrationsRequest(migrations=[
        pb.ResolveMigrationRequest(cluster=PY, workflow=value, migration_time=RUN)
        for _, value, _, _ in NAMES]), timeout=30)
    assert [_by_number(r.error.code) for r in batch.results] == [c for _, _, c, _ in NAMES]
    for result, (_, _, _, words) in zip(batch.results, NAMES, strict=True):
        for word in words:
            assert word.replace("{what}", "workflow") in result.error.message


def _by_number(number: int) -> Code:
    return next(code for code in Code if code.value[0] == number)


def test_unknown_clusters_name_the_known_ones(stub):
    for value in ("core001", "EXAMPLE_PYTHON", "example_python2"):
        error = failure(stub.ListWorkflows, pb.ListWorkflowsRequest(cluster=value))
        assert error.code() == NOT_FOUND
        assert repr(value) in error.details()
        assert PY in error.details() and JS in error.details()


# --- page sizes and tokens ------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [-1, -(2**31), 1001, 2**31 - 1])
def test_absurd_page_sizes(stub, page_size):
    error = failure(stub.ListWorkflows, pb.ListWorkflowsRequest(cluster=PY, page_size=page_size))
    assert error.code() == INVALID
    assert "page_size" in error.details() and str(page_size) in error.details()


@pytest.mark.parametrize("token", [
    "!!!!", "not-a-token", "A" * MEGABYTE, "\x00", "ðŸ’¥", "=", "====",
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # decodes to no text
    base64.b64encode(b"daily_reporting").decode() + "\n",
], ids=["punctuation", "words", "1 MB", "NUL", "mojibake", "padding", "only padding",
        "not UTF-8", "trailing newline"])
def test_absurd_page_tokens(stub, token):
    error = failure(stub.ListWorkflows, pb.ListWorkflowsRequest(cluster=PY, page_token=token))
    assert error.code() == INVALID
    assert "page_token" in error.details() and "not one this server issued" in error.details()
    assert len(error.details()) < 300  # a 1 MB token is not echoed back


def test_a_forged_but_well_formed_page_token_pages_after_its_name(stub):
    """A token is the base64 of the last name served: a forged one can only skip names."""
    token = base64.urlsafe_b64encode(b"zzzz").decode()
    page = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY, page_token=token), timeout=10)
    assert (list(page.workflows), page.next_page_token, page.total_size) == ([], "", 7)


# --- timestamps -----------------------------------------------------------------------------

TIMES = [
    # (label, Timestamp or None, expected code, words)
    ("missing", None, INVALID, ["required"]),
    ("int64 minimum", Timestamp(seconds=-(2**63)), INVALID, ["outside years"]),
    ("int64 maximum", Timestamp(seconds=2**63 - 1), INVALID, ["outside years"]),
    ("year 10000", Timestamp(seconds=MAX_EPOCH + 1), INVALID, [str(MAX_EPOCH + 1)]),
    ("year 1, 1 January", Timestamp(seconds=MIN_EPOCH - 1), INVALID, [str(MIN_EPOCH - 1)]),
    ("negative nanos", Timestamp(seconds=RUN.seconds, nanos=-1), INVALID, ["whole seconds"]),
    ("a second of nanos", Timestamp(seconds=RUN.seconds, nanos=10**9), INVALID,
     ["whole seconds"]),
    ("int32 nanos", Timestamp(seconds=RUN.seconds, nanos=2**31 - 1), INVALID, ["whole seconds"]),
    ("first valid", Timestamp(seconds=MIN_EPOCH), Code.OK, []),
    ("last valid", Timestamp(seconds=MAX_EPOCH), Code.OK, []),
    ("epoch", Timestamp(seconds=0), Code.OK, []),
]

# Manual runs: the range of times is what is tried here, not the schedule's grid.
TIME_FIELDS = [
    ("GetJobTokens", "run_time", lambda t: pb.GetJobTokensRequest(
        cluster=PY, workflow="event_ingest", run_time=t, manual=True)),
    ("GetJobToken", "run_time", lambda t: pb.GetJobTokenRequest(
        cluster=JS, workflow="json_daily_rollup", job="RollupUsersJob", run_time=t,
        manual=True)),
    ("ResolveMigration", "migration_time", lambda t: pb.ResolveMigrationRequest(
        cluster=PY, workflow="event_ingest", migration_time=t)),
]


@pytest.mark.parametrize("method, field, build", TIME_FIELDS, ids=[m for m, _, _ in TIME_FIELDS])
@pytest.mark.parametrize("label, stamp, code, words", TIMES, ids=[t[0] for t in TIMES])
def test_timestamps(stub, method, field, build, label, stamp, code, words):
    request = build(stamp) if stamp is not None else build(None)
    if stamp is None:
        request.ClearField(field)
    if code == Code.OK:
        answer = getattr(stub, method)(request, timeout=10)
        assert answer.fingerprint
        return
    error = failure(getattr(stub, method), request)
    assert error.code() == code, error.details()
    assert field in error.details()
    for word in words:
        assert word in error.details(), (word, error.details())


# --- sizes of lists -------------------------------------------------------------------------


def test_big_lists(stub):
    error = failure(stub.BatchResolveMigrations, pb.BatchResolveMigrationsRequest(
        migrations=[pb.ResolveMigrationRequest()] * 10001), timeout=30)
    assert error.code() == INVALID and "at most 10000" in error.details()
    assert list(stub.BatchResolveMigrations(pb.BatchResolveMigrationsRequest(),
                                            timeout=10).results) == []
    error = failure(stub.GetJobTokens, pb.GetJobTokensRequest(
        cluster=PY, workflow="daily_reporting", run_time=RUN, jobs=["final"] + ["x"] * 100000))
    assert error.code() == NOT_FOUND and "'x'" in error.details()
    repeated = stub.GetJobTokens(pb.GetJobTokensRequest(
        cluster=PY, workflow="daily_reporting", run_time=RUN, jobs=["final"] * 1000), timeout=10)
    assert [t.job for t in repeated.jobs] == ["final"]


# --- a 1 ms deadline ------------------------------------------------------------------------


def test_one_millisecond_deadlines(served, stub):
    server, channel, _ = served
    # A parse takes far longer than 1 ms: the caller hears DEADLINE_EXCEEDED, at once.
    error = failure(stub.Reload, pb.ReloadRequest(cluster=PY), timeout=0.001)
    assert error.code() == Code.DEADLINE_EXCEEDED
    # The server, which may still be parsing for nobody, goes on answering.
    assert stub.Reload(pb.ReloadRequest(cluster=PY), timeout=30).cluster.ok_count == 7
    # A call that may be quicker than 1 ms either answers or runs out of time; nothing else.
    for _ in range(50):
        try:
            stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=PY, workflow="db_backup"),
                                 timeout=0.001)
        except grpc.RpcError as rpc_error:
            assert rpc_error.code() == Code.DEADLINE_EXCEEDED, rpc_error.details()
    # The client library: its own deadline, retried, then Unavailable with the real code.
    with TokenFetcherClient(f"127.0.0.1:{server.port}", timeout=0.001, retries=1,
                            backoff_base=0.001) as client:
        items = [MigrationMetadata(PY, "daily_reporting", datetime(2020, 1, 1, tzinfo=UTC))]
        with pytest.raises(Unavailable) as caught:
            client.batch_resolve(items * 5000)
        assert caught.value.code == Code.DEADLINE_EXCEEDED
    assert health(channel) == "SERVING"


# --- fuzzing every request message ----------------------------------------------------------

ODD = ["", " ", "../", "/", "\x00", "a\x00b", "\t", "x" * 600, "é", "\U0001f4a5", "\u202e",
       "%s", "{}", "'", "\\", "*", "?", "core001", "\ufeff"]
Field = descriptor_module.FieldDescriptor


def _field_strategy(field, names: dict[str, list[str]]):
    if field.type == Field.TYPE_STRING:
        real = names.get(field.name, [])
        pools = [st.sampled_from(ODD), st.text(max_size=40)]
        if real:
            pools.insert(0, st.sampled_from(real))
        return st.one_of(*pools)
    if field.type == Field.TYPE_INT32:
        return st.one_of(st.sampled_from([0, 1, 7, 100, 1000, 1001, -1]),
                         st.integers(-(2**31), 2**31 - 1))
    if field.type == Field.TYPE_INT64:
        return st.integers(-(2**63), 2**63 - 1)
    if field.type == Field.TYPE_BOOL:
        return st.booleans()
    if field.type == Field.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return st.builds(Timestamp,
                             seconds=st.one_of(st.integers(MIN_EPOCH - 5, MAX_EPOCH + 5),
                                               st.integers(MIN_EPOCH, MAX_EPOCH),
                                               st.integers(-(2**63), 2**63 - 1),
                                               st.sampled_from([RUN.seconds, 0, MIN_EPOCH,
                                                                MAX_EPOCH])),
                             nanos=st.one_of(st.just(0), st.integers(-(2**31), 2**31 - 1)))
        return message_strategy(field.message_type, names)
    raise AssertionError(f"no strategy for {field.full_name}")


def message_strategy(descriptor, names: dict[str, list[str]]):
    """Requests built field by field from the message's descriptor: every field optional,
    repeated ones as short lists, strings mixing real names, odd ones and any text. Where
    a valid request is known (``VALID``), also that request as it is, and with some of its
    fields replaced, so that the fuzz reaches past the first check."""
    message_class = getattr(pb, descriptor.name)
    fields = {}
    for field in descriptor.fields:
        strategy = _field_strategy(field, names)
        fields[field.name] = st.lists(strategy, max_size=5) if field.is_repeated else strategy
    anything = st.fixed_dictionaries({}, optional=fields).map(lambda kw: message_class(**kw))
    base = VALID.get(descriptor.name)
    if base is None:
        return anything

    def overlay(overrides: dict):
        message = message_class()
        message.CopyFrom(base)
        for name, value in overrides.items():
            message.ClearField(name)
            target = getattr(message, name)
            if descriptor.fields_by_name[name].is_repeated:
                target.extend(value)
            elif isinstance(value, Message):
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    mutated = st.fixed_dictionaries({}, optional=fields).map(overlay)
    one_changed = st.sampled_from(sorted(fields)).flatmap(
        lambda name: fields[name].map(lambda value: overlay({name: value})))
    return st.one_of(st.just(base), one_changed, one_changed, mutated, anything)


_RESOLVE = pb.ResolveMigrationRequest(cluster=PY, workflow="daily_reporting",
                                      migration_time=RUN)
VALID = {
    "ListWorkflowsRequest": pb.ListWorkflowsRequest(cluster=PY, page_size=2),
    "GetWorkflowSpecRequest": pb.GetWorkflowSpecRequest(cluster=PY, workflow="daily_reporting"),
    "GetJobTokensRequest": pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                  run_time=RUN, jobs=["final"]),
    "GetJobTokenRequest": pb.GetJobTokenRequest(cluster=PY, workflow="daily_reporting",
                                                job="final", run_time=RUN),
    "ResolveMigrationRequest": _RESOLVE,
    "BatchResolveMigrationsRequest": pb.BatchResolveMigrationsRequest(
        migrations=[_RESOLVE, _RESOLVE]),
    "WatchWorkflowsRequest": pb.WatchWorkflowsRequest(cluster=JS),
    "ReloadRequest": pb.ReloadRequest(cluster=JS),
}


@pytest.fixture(scope="module")
def real_names(served) -> dict[str, list[str]]:
    _, _, stub = served
    clusters = [PY, JS]
    workflows, fingerprints, jobs, tokens = [], [], [], []
    for cluster in clusters:
        page = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster, page_size=2))
        tokens.append(page.next_page_token)
        for summary in stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster)).workflows:
            workflows.append(summary.name)
            fingerprints.append(summary.fingerprint)
            spec = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=cluster,
                                                                  workflow=summary.name))
            jobs.extend(job.name for job in spec.spec.jobs)
    return {"cluster": clusters, "workflow": workflows, "fingerprint": fingerprints,
            "if_none_match": fingerprints, "job": jobs, "jobs": jobs, "page_token": tokens}


ALLOWED = {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND}
EXAMPLES_PER_RPC = {"Reload": 40, "WatchWorkflows": 100}  # a Reload parses; the rest: 200
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _invoke(channel: grpc.Channel, method, request) -> tuple[Code, str]:
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.server_streaming:
            call = channel.unary_stream(path, request_serializer=_serializer(request))(
                request, timeout=10)
            try:
                next(call)  # the SUBSCRIBED event, or the error
            finally:
                call.cancel()
        else:
            channel.unary_unary(path, request_serializer=_serializer(request))(request,
                                                                                timeout=10)
    except grpc.RpcError as error:
        if error.code() == Code.CANCELLED and method.server_streaming:
            return Code.OK, ""  # our own cancel
        return error.code(), error.details() or ""
    return Code.OK, ""


def _serializer(request):
    return (lambda data: data) if isinstance(request, bytes) else (
        lambda message: message.SerializeToString())


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
def test_fuzz_every_request_message(served, real_names, method):
    server, channel, _ = served
    seen: dict[Code, int] = {}

    @settings(FUZZ, max_examples=EXAMPLES_PER_RPC.get(method.name, 200))
    @given(request=message_strategy(method.input_type, real_names))
    def check(request):
        code, details = _invoke(channel, method, request)
        seen[code] = seen.get(code, 0) + 1
        allowed = ALLOWED | ({Code.RESOURCE_EXHAUSTED} if method.server_streaming else set())
        assert code in allowed, (code, details, request)
        if code != Code.OK:
            assert details.strip(), (code, request)

    check()
    if method.input_type.name in VALID:  # the fuzz got past the checks, too
        assert seen.get(Code.OK, 0) > 0, seen
    assert health(channel) == "SERVING"
    assert codes_counted(scrape(server.metrics_port)) <= {c.name for c in ALLOWED} | {
        "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED"}


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
def test_fuzz_raw_bytes(served, method):
    """Bytes that may not be a message at all: undecodable ones are INVALID_ARGUMENT."""
    server, channel, _ = served
    valid = pb.GetWorkflowSpecRequest(cluster=PY, workflow="db_backup").SerializeToString()

    @settings(FUZZ, max_examples=60 if method.name == "Reload" else 150)
    @given(data=st.one_of(st.binary(max_size=300),
                          st.binary(max_size=40).map(lambda tail: valid + tail),
                          st.sampled_from([b"\xff", b"\x0a\x05\xff\xfe\xfd\xfc\xfb",
                                           b"\x0a\xff\xff\xff\xff\x0f", b"\x08" * 11])))
    def check(data):
        code, details = _invoke(channel, method, data)
        allowed = ALLOWED | ({Code.RESOURCE_EXHAUSTED} if method.server_streaming else set())
        assert code in allowed, (code, details, data)
        if code == Code.INVALID_ARGUMENT and "not a valid" in details:
            assert method.input_type.full_name in details

    check()
    assert health(channel) == "SERVING"


def test_undecodable_requests_are_invalid_argument_not_internal(served):
    _, channel, _ = served
    call = channel.unary_unary(f"/{SERVICE.full_name}/GetWorkflowSpec")
    for data, reason in ((b"\x0a\x02\xff\xfe", "bad UTF-8"), (b"\xff\xff\xff", "corrupt")):
        error = failure(call, data)
        assert error.code() == INVALID, error.details()
        assert "not a valid token_fetcher.v1.GetWorkflowSpecRequest" in error.details()
        assert reason in error.details()


def test_after_all_of_it_the_server_is_healthy_and_counted_no_internal_error(served):
    server, channel, stub = served
    assert health(channel) == "SERVING"
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert {c.name: c.state for c in info.clusters} == {PY: pb.LOAD_STATE_READY,
                                                        JS: pb.LOAD_STATE_READY}
    codes = codes_counted(scrape(server.metrics_port))
    assert not codes & {"INTERNAL", "UNKNOWN"}, codes
