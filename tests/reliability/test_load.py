"""Load and soak: 16 concurrent clients mixing every RPC against `token-fetcher serve` for
TOKEN_FETCHER_SOAK_SECONDS (default 60; 20 is enough locally) while another process edits a
definition every second.

Zero failed calls; every answer agrees with the spec of the fingerprint it carries (fetched
by that fingerprint); the server's RSS grows less than 10% from the first to the last 10 s;
no thread or worker process is left behind.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import threading
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.helpers import wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc

from .reliability_helpers import JS, PY, Consistency, Inconsistent, cluster_from_yaml, copy_example

SOAK_SECONDS = float(os.environ.get("TOKEN_FETCHER_SOAK_SECONDS", "60"))
WINDOW = 10.0  # RSS is compared between the first and the last WINDOW seconds
CLIENTS = 16
SERVER_THREADS, MAX_WATCHES, SANDBOX_WORKERS = 16, 32, 2
# The run times the scheduler asks about: a bounded set, as in life (a few runs a day).
RUN_TIMES = [Timestamp(seconds=1577944800 + day * 86400) for day in range(8)]
MIGRATION = Timestamp(seconds=1577836800)  # 2020-01-01

EDITOR = '''
import os, sys, time
python_module, json_job, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
python_text, json_text = open(python_module).read(), open(json_job).read()
assert "'echo backup done'" in python_text and '"max_attempts": 1' in json_text


def replace(path, text):
    temp = path + ".tmp"
    with open(temp, "w") as handle:
        handle.write(text)
    os.replace(temp, path)


started = time.monotonic()
for edit in range(int(seconds) + 5):  # bounded in count and in time
    if time.monotonic() - started > seconds:
        break
    if edit % 2 == 0:
        replace(python_module, python_text.replace("'echo backup done'",
                                                   "'echo backup %d'" % edit))
    else:
        replace(json_job, json_text.replace('"max_attempts": 1', '"max_attempts": %d' % edit))
    print(edit, flush=True)
    time.sleep(max(0.0, started + edit + 1 - time.monotonic()))  # one edit a second
'''


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.failures: list[str] = []

    def ok(self, method: str) -> None:
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _names(stub) -> dict[str, list[str]]:
    return {cluster: [w.name for w in stub.ListWorkflows(
        pb.ListWorkflowsRequest(cluster=cluster), timeout=10).workflows]
        for cluster in (PY, JS)}


def one_call(stub, check: Consistency, names, rng: random.Random, tally: Tally) -> None:
    cluster = rng.choice((PY, JS))
    workflow = rng.choice(names[cluster])
    # Manual runs: any of RUN_TIMES for any workflow, whatever its schedule.
    run = rng.choice(RUN_TIMES)
    roll = rng.random()
    if roll < 0.20:
        method = "GetJobTokens"
        tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=cluster, workflow=workflow,
                                                          run_time=run, manual=True),
                                   timeout=10)
        check.check_tokens(cluster, tokens)
    elif roll < 0.35:
        method = "GetWorkflowSpec"
        answer = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=cluster,
                                                                workflow=workflow), timeout=10)
        check.check_spec(answer.spec, answer.fingerprint)
        again = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
            cluster=cluster, workflow=workflow, if_none_match=answer.fingerprint), timeout=10)
        check.expect(again.not_modified or again.fingerprint != answer.fingerprint,
                     "if_none_match", workflow)
        if not again.not_modified:
            check.check_spec(again.spec, again.fingerprint)
    elif roll < 0.45:
        method = "GetJobToken"
        tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=cluster, workflow=workflow,
                                                          run_time=run, manual=True),
                                   timeout=10)
        job = rng.choice(tokens.jobs).job
        parsed = stub.GetJobToken(pb.GetJobTokenRequest(cluster=cluster, workflow=workflow,
                                                        job=job, run_time=run, manual=True),
                                  timeout=10)
        spec = check.spec(cluster, workflow, parsed.fingerprint)
        [job_spec] = [j for j in spec.jobs if j.name == job]
        check.expect(parsed.spec == job_spec, "GetJobToken spec vs pinned spec", job)
        check.expect(parsed.token.command == tokens.end_date.join(job_spec.command.segments),
                     "GetJobToken command", job)
    elif roll < 0.60:
        method = "ResolveMigration"
        answer = stub.ResolveMigration(pb.ResolveMigrationRequest(
            cluster=cluster, workflow=workflow, migration_time=MIGRATION), timeout=10)
        check.check_resolved(cluster, workflow, answer)
    elif roll < 0.70:
        method = "BatchResolveMigrations"
        items = [(c, rng.choice(names[c])) for c in (PY, JS) for _ in range(5)]
        batch = stub.BatchResolveMigrations(pb.BatchResolveMigrationsRequest(migrations=[
            pb.ResolveMigrationRequest(cluster=c, workflow=w, migration_time=MIGRATION)
            for c, w in items]), timeout=10)
        for (c, w), result in zip(items, batch.results, strict=True):
            check.expect(not result.HasField("error"), "batch item", w, result.error.message)
            check.check_resolved(c, w, result.response)
    elif roll < 0.82:
        method = "ListWorkflows"
        token, pages = "", 0
        while True:
            page = stub.ListWorkflows(pb.ListWorkflowsRequest(
                cluster=cluster, page_size=3, page_token=token), timeout=10)
            for summary in page.workflows:
                check.expect(summary.status == pb.PARSE_STATUS_OK, "status", summary.name)
            if page.workflows:
                check.check_summary(cluster, rng.choice(page.workflows))
            token, pages = page.next_page_token, pages + 1
            if not token or pages > 10:
                break
    elif roll < 0.92:
        method = "GetServerInfo"
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        for c in info.clusters:
            check.expect(c.state == pb.LOAD_STATE_READY and c.workflow_count
                         == c.ok_count + c.stale_count + c.broken_count, "server info", c.name)
        check.expect(info.state_error == "", "state error", info.state_error)
    elif roll < 0.99:
        method = "WatchWorkflows"
        call = stub.WatchWorkflows(pb.WatchWorkflowsRequest(cluster=cluster), timeout=10)
        try:
            first = next(call)
            check.expect(first.type == pb.WorkflowEvent.TYPE_SUBSCRIBED, "subscribed first")
        finally:
            call.cancel()
    else:
        method = "Reload"
        reply = stub.Reload(pb.ReloadRequest(cluster=JS), timeout=30)
        check.expect(reply.cluster.ok_count == reply.cluster.workflow_count, "reload", reply)
    tally.ok(method)


def client_loop(target: str, index: int, until: float, tally: Tally) -> None:
    rng = random.Random(index)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.TokenFetcherStub(channel)
        check = Consistency(stub)
        names = _names(stub)
        for _ in range(1_000_000):  # bounded in count as well as in time
            if time.monotonic() >= until:
                return
            try:
                one_call(stub, check, names, rng, tally)
            except grpc.RpcError as error:
                tally.fail(f"client {index}: {error.code().name}: {error.details()}")
            except Inconsistent as error:
                tally.fail(f"client {index}: inconsistent: {error}")


def watcher_loop(target: str, until: float, tally: Tally, events: list) -> None:
    """A long-lived watch: every CHANGED event's new fingerprint resolves to a spec."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.TokenFetcherStub(channel)
        check = Consistency(stub)
        call = stub.WatchWorkflows(pb.WatchWorkflowsRequest(),
                                   timeout=max(1.0, until - time.monotonic()))
        try:
            for event in call:
                events.append(event.type)
                if event.type == pb.WorkflowEvent.TYPE_CHANGED:
                    check.spec(event.cluster, event.workflow, event.new_fingerprint)
                elif event.type not in (pb.WorkflowEvent.TYPE_SUBSCRIBED,):
                    tally.fail(f"watch: unexpected event {event}")
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # the end of the soak
                tally.fail(f"watch: {error.code().name}: {error.details()}")
        except Inconsistent as error:
            tally.fail(f"watch: inconsistent: {error}")


def run_load(server, seconds: float, tally: Tally, events: list | None = None) -> None:
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client_loop, args=(server.target, i, until, tally),
                                daemon=True) for i in range(CLIENTS)]
    if events is not None:
        threads.append(threading.Thread(target=watcher_loop, args=(server.target, until, tally,
                                                                   events), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    assert not any(thread.is_alive() for thread in threads), "a client hangs"


@pytest.mark.timeout(SOAK_SECONDS + 180)
def test_soak_under_sixteen_clients_and_an_edit_a_second(serve_process, tmp_path):
    assert SOAK_SECONDS >= 2 * WINDOW, "TOKEN_FETCHER_SOAK_SECONDS must be at least 20"
    python_repo = copy_example(tmp_path, "python_repo")
    json_repo = copy_example(tmp_path, "json_repo")
    server = serve_process({
        "clusters": {PY: cluster_from_yaml(python_repo), JS: cluster_from_yaml(json_repo)},
        "poll_interval_seconds": 0.2, "server_threads": SERVER_THREADS,
        "max_watches": MAX_WATCHES, "sandbox": {"workers": SANDBOX_WORKERS}})
    server.wait_serving()
    idle_threads = server.threads()

    # Warm up: every code path once under the same concurrency, so that the pools and caches
    # the server keeps (bounded) are in place before anything is measured.
    warm = Tally()
    run_load(server, 3.0, warm)
    assert warm.failures == [], warm.failures[:5]
    warm_threads = server.threads()

    samples: list[tuple[float, int]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.is_set():
            samples.append((time.monotonic(), server.rss()))
            stop_sampling.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    editor = subprocess.Popen(
        [sys.executable, "-c", EDITOR, str(python_repo / "example_workflows" / "maintenance.py"),
         str(json_repo / "repo" / "workflow" / "json_heartbeat" / "job" / "heartbeat"),
         str(SOAK_SECONDS)], stdout=subprocess.PIPE, text=True)
    tally, events = Tally(), []
    started = time.monotonic()
    sampler.start()
    try:
        run_load(server, SOAK_SECONDS, tally, events)
    finally:
        stop_sampling.set()
        sampler.join(10)
        try:
            edits = len(editor.communicate(timeout=30)[0].split())
        finally:
            if editor.poll() is None:
                editor.kill()
    elapsed = time.monotonic() - started

    assert tally.failures == [], f"{len(tally.failures)} failed: {tally.failures[:5]}"
    assert set(tally.calls) == {"GetJobTokens", "GetWorkflowSpec", "GetJobToken",
                                "ResolveMigration", "BatchResolveMigrations", "ListWorkflows",
                                "GetServerInfo", "WatchWorkflows", "Reload"}, tally.calls
    assert edits >= SOAK_SECONDS - 2
    # The edits were served: the watcher saw them, and resolved each one's spec.
    changed = events.count(pb.WorkflowEvent.TYPE_CHANGED)
    assert changed >= edits // 2, (changed, edits)

    first = [rss for t, rss in samples if t - started < WINDOW]
    last = [rss for t, rss in samples if t - started >= elapsed - WINDOW]
    growth = statistics.mean(last) / statistics.mean(first) - 1
    summary = (f"soak {elapsed:.0f} s: {tally.total} calls ({tally.total / elapsed:.0f}/s), "
               f"{edits} edits, {changed} CHANGED events; RSS first {WINDOW:g} s "
               f"{statistics.mean(first) / 2**20:.1f} MiB, last {statistics.mean(last) / 2**20:.1f}"
               f" MiB ({growth:+.1%}); threads idle {idle_threads}, warm {warm_threads}")
    print(summary)
    assert growth < 0.10, summary

    # Nothing left behind: no child process, no thread beyond the bounded pools (the RPC
    # pool, server_threads + max_watches, and one loader per sandbox worker).
    wait_for(lambda: not server.ps.children(recursive=True), timeout=30,
             message="parse workers to end")
    bound = idle_threads + SERVER_THREADS + MAX_WATCHES + SANDBOX_WORKERS
    wait_for(lambda: server.threads() <= bound, timeout=30,
             message=f"threads back within the pools (now {server.threads()}, bound {bound})")
    print(f"threads after the soak: {server.threads()} (bound {bound})")
    code, _ = server.terminate()
    assert code == 0, server.log
    assert "Traceback" not in server.log, server.log
