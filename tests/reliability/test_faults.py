"""Faults: a parse worker killed, a worker that cannot start, the repo deleted, renamed or
made unreadable, a file half-written, the state directory read-only or full, SIGTERM under
load, and the server killed and restarted under a client.

In every case the last good snapshot keeps being served, flagged stale, the error is
visible in ListWorkflows, GetServerInfo and the metrics, and serving recovers by itself.

We run as root, so permission bits cannot make anything unreadable: the repo is replaced
by a regular file or by a dangling symlink instead, a JSON definition by a directory. A
read-only state directory is a read-only bind mount laid over it mid-run, a full one a
small tmpfs filled up, when this process may mount; otherwise both are simulated by a
directory where SQLite must create its rollback journal (see docs/reliability.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import types
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psutil
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.helpers import EXAMPLES, FakeClock, metric, parse_workers, scrape, wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.client import TokenFetcherClient, Unavailable
from token_fetcher.history import VersionHistory
from token_fetcher.migration import MigrationMetadata

from .reliability_helpers import (
    JS,
    PY,
    cluster_from_yaml,
    copy_example,
    free_port_below_ephemeral_range,
    python_cluster_inline,
    replace_atomically,
)

RUN = Timestamp(seconds=1577944800)  # 2020-01-02 06:00 UTC
OK, STALE = pb.PARSE_STATUS_OK, pb.PARSE_STATUS_STALE
Kind = pb.ErrorKind


def fingerprints(stub, cluster: str) -> dict[str, str]:
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster), timeout=10)
    return {w.name: w.fingerprint for w in listing.workflows}


def listing_of(stub, cluster: str) -> pb.ListWorkflowsResponse:
    return stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster), timeout=10)


def cluster_info(stub, cluster: str) -> pb.ClusterInfo:
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    return {c.name: c for c in info.clusters}[cluster]


def spec_of(stub, cluster: str, workflow: str, fingerprint: str = ""):
    return stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
        cluster=cluster, workflow=workflow, fingerprint=fingerprint), timeout=10)


def all_status(stub, cluster: str, status: int):
    listing = listing_of(stub, cluster)
    return listing if all(w.status == status for w in listing.workflows) else None


def two_clusters(python_repo: Path, json_repo: Path | None = None) -> dict:
    return {PY: python_cluster_inline(python_repo),
            JS: cluster_from_yaml(json_repo or EXAMPLES / "json_repo")}


# --- a parse worker killed mid-parse --------------------------------------------------------

GATE = '''import os as _gate_os, time as _gate_time
while not _gate_os.path.exists({flag!r}):  # a parse that takes its time
    _gate_time.sleep(0.02)
'''


def test_a_worker_killed_mid_parse_is_reported_and_serving_continues(start_server, stub_for,
                                                                      tmp_path):
    repo = copy_example(tmp_path, "python_repo")
    server = start_server(two_clusters(repo))
    stub = stub_for(server)
    before = fingerprints(stub, PY)
    module = repo / "example_workflows" / "maintenance.py"
    original = module.read_text()
    replace_atomically(module, GATE.format(flag=str(tmp_path / "never")) + original)
    [worker] = wait_for(lambda: parse_workers(psutil.Process()), message="the re-parse worker")
    # While the parse is under way the current snapshot is served as it was.
    assert spec_of(stub, PY, "db_backup").status == OK
    os.kill(worker.pid, signal.SIGKILL)

    listing = wait_for(lambda: all_status(stub, PY, STALE), message="stale after the kill")
    assert {w.name: w.fingerprint for w in listing.workflows} == before
    [error] = listing.cluster_errors
    assert error.kind == Kind.ERROR_KIND_WORKER_CRASHED and "SIGKILL" in error.message
    assert all([e.kind for e in w.errors] == [Kind.ERROR_KIND_WORKER_CRASHED]
               for w in listing.workflows)
    info = cluster_info(stub, PY)
    assert (info.state, info.stale_count, info.ok_count) == (pb.LOAD_STATE_READY, 7, 0)
    assert [e.kind for e in info.errors] == [Kind.ERROR_KIND_WORKER_CRASHED]
    # The metrics are updated right after the snapshot is swapped in.
    wait_metric(server, "token_fetcher_parse_errors_total", 1, cluster=PY, kind="worker_crashed")
    wait_metric(server, "token_fetcher_workflows", 7, cluster=PY, status="stale")
    # Serving goes on: the last good tokens, flagged stale; the other cluster untouched.
    tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                      run_time=RUN), timeout=10)
    assert (tokens.status, tokens.fingerprint) == (STALE, before["daily_reporting"])
    assert all_status(stub, JS, OK)
    assert parse_workers(psutil.Process()) == []  # nothing left behind

    # Fixed files are noticed and re-parsed without anyone asking.
    replace_atomically(module, original)
    listing = wait_for(lambda: all_status(stub, PY, OK), message="recovery")
    assert {w.name: w.fingerprint for w in listing.workflows} == before
    assert list(listing.cluster_errors) == []
    wait_metric(server, "token_fetcher_workflows", 0, cluster=PY, status="stale")


def server_metrics(server):
    return scrape(server.metrics_port)


def wait_metric(server, name: str, value: float, **labels) -> None:
    wait_for(lambda: metric(server_metrics(server), name, 0.0, **labels) == value,
             message=f"{name}{labels} == {value}")


def test_a_worker_that_cannot_be_started_is_an_error_not_a_lost_load(start_server, stub_for,
                                                                      monkeypatch):
    """fork() failing (EAGAIN under a pid limit, ENOMEM) used to escape the load."""
    import legacy_parser.isolation as isolation_module

    server = start_server()
    stub = stub_for(server)
    before = fingerprints(stub, PY)

    def cannot_fork(*args, **kwargs):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(isolation_module, "subprocess", types.SimpleNamespace(
        Popen=cannot_fork, PIPE=subprocess.PIPE, TimeoutExpired=subprocess.TimeoutExpired))
    reply = stub.Reload(pb.ReloadRequest(cluster=PY), timeout=30)
    assert (reply.cluster.stale_count, reply.broken) == (7, 7)
    [error] = reply.cluster.errors
    assert error.kind == Kind.ERROR_KIND_WORKER_CRASHED
    assert "cannot start a parse worker: Resource temporarily unavailable" in error.message
    assert fingerprints(stub, PY) == before
    monkeypatch.undo()
    reply = stub.Reload(pb.ReloadRequest(cluster=PY), timeout=30)
    assert (reply.cluster.ok_count, list(reply.cluster.errors)) == (7, [])


# --- the repo deleted, renamed, unreadable; files half-written ------------------------------


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.aside-{uuid.uuid4().hex[:6]}")
    os.rename(path, aside)
    return aside


def repo_deleted(repo: Path):
    saved = repo.with_name(repo.name + ".saved")
    shutil.copytree(repo, saved, symlinks=True)
    shutil.rmtree(repo)
    return lambda: os.rename(saved, repo)


def repo_renamed(repo: Path):
    aside = _move_aside(repo)
    return lambda: os.rename(aside, repo)


def repo_replaced_by_a_file(repo: Path):
    aside = _move_aside(repo)
    repo.write_text("a regular file where the repo folder was\n")

    def restore() -> None:
        repo.unlink()
        os.rename(aside, repo)

    return restore


def repo_dangling_symlink(repo: Path):
    aside = _move_aside(repo)
    repo.symlink_to(repo.parent / "nowhere")

    def restore() -> None:
        repo.unlink()
        os.rename(aside, repo)

    return restore


def python_module_truncated(repo: Path):
    module = repo / "example_workflows" / "maintenance.py"
    original = module.read_text()
    cut = original.index("'db_backup': WorkflowConfig(") + len("'db_backup': Workfl")
    replace_atomically(module, original[:cut])  # as a copy cut off mid-statement leaves it
    return lambda: replace_atomically(module, original)


def json_job_truncated(repo: Path):
    job = repo / "repo" / "workflow" / "json_daily_rollup" / "job" / "RollupUsersJob"
    original = job.read_bytes()
    replace_atomically(job, original[:len(original) // 2])
    return lambda: replace_atomically(job, original)


def json_job_replaced_by_a_directory(repo: Path):
    job = repo / "repo" / "workflow" / "json_table_sync" / "job" / "SyncAuditJob"
    original = job.read_bytes()
    job.unlink()
    job.mkdir()

    def restore() -> None:
        job.rmdir()
        replace_atomically(job, original)

    return restore


def pinball_yaml_cut_mid_character(repo: Path):
    config = repo / "pinball.yaml"
    original = config.read_bytes()
    # The e-mail address ends in a two-byte character, cut after its first byte.
    replace_atomically(config, original + "# café".encode()[:-1])
    return lambda: replace_atomically(config, original)


@dataclass(frozen=True)
class RepoFault:
    cluster: str
    make: object
    kinds: frozenset  # the error kinds that may report it
    words: tuple[str, ...]  # in the error message
    stale: frozenset | None = None  # the workflows that go stale; None: all


IMPORT = frozenset({Kind.ERROR_KIND_IMPORT_ERROR})
CONFIG = frozenset({Kind.ERROR_KIND_INVALID_CONFIG})
REPO_FAULTS = {
    # The Python cluster's parser settings are inline: the fault reaches the worker.
    "python-repo-deleted": RepoFault(PY, repo_deleted, IMPORT, ("example_workflows",)),
    "python-repo-renamed": RepoFault(PY, repo_renamed, IMPORT, ("example_workflows",)),
    "python-repo-replaced-by-a-file": RepoFault(PY, repo_replaced_by_a_file, IMPORT,
                                                ("example_workflows",)),
    "python-repo-dangling-symlink": RepoFault(PY, repo_dangling_symlink, IMPORT,
                                              ("example_workflows",)),
    "python-module-truncated": RepoFault(PY, python_module_truncated,
                                         frozenset({Kind.ERROR_KIND_SYNTAX_ERROR}),
                                         ("maintenance.py",)),
    # The JSON cluster reads its pinball.yaml, which lives in the repo.
    "json-repo-deleted": RepoFault(JS, repo_deleted, CONFIG, ("pinball.yaml", "cannot read")),
    "json-repo-replaced-by-a-file": RepoFault(JS, repo_replaced_by_a_file, CONFIG,
                                              ("pinball.yaml", "cannot read")),
    "json-repo-dangling-symlink": RepoFault(JS, repo_dangling_symlink, CONFIG,
                                            ("pinball.yaml", "cannot read")),
    "json-job-truncated": RepoFault(JS, json_job_truncated,
                                    frozenset({Kind.ERROR_KIND_INVALID_JSON}),
                                    ("invalid JSON",), frozenset({"json_daily_rollup"})),
    "json-job-replaced-by-a-directory": RepoFault(JS, json_job_replaced_by_a_directory,
                                                  frozenset({Kind.ERROR_KIND_IO_ERROR}),
                                                  ("Is a directory", "SyncAuditJob"),
                                                  frozenset({"json_table_sync"})),
    "pinball-yaml-cut-mid-character": RepoFault(JS, pinball_yaml_cut_mid_character, CONFIG,
                                                ("pinball.yaml", "not UTF-8")),
}


@pytest.mark.parametrize("case", sorted(REPO_FAULTS))
def test_repo_fault_keeps_the_last_good_snapshot_and_recovers(start_server, stub_for, tmp_path,
                                                              case):
    fault = REPO_FAULTS[case]
    python_repo = copy_example(tmp_path, "python_repo")
    json_repo = copy_example(tmp_path, "json_repo")
    server = start_server(two_clusters(python_repo, json_repo))
    stub = stub_for(server)
    other = JS if fault.cluster == PY else PY
    before = fingerprints(stub, fault.cluster)
    stale = fault.stale if fault.stale is not None else frozenset(before)

    restore = fault.make(python_repo if fault.cluster == PY else json_repo)

    def degraded():
        listing = listing_of(stub, fault.cluster)
        got = {w.name for w in listing.workflows if w.status == STALE}
        return listing if got == stale else None

    listing = wait_for(degraded, message=f"{case}: stale workflows")
    # The last good version of everything is still served.
    assert {w.name: w.fingerprint for w in listing.workflows} == before
    reported = [e for w in listing.workflows for e in w.errors] + list(listing.cluster_errors)
    assert reported and {e.kind for e in reported} <= fault.kinds, reported
    for error in reported:
        for word in fault.words:
            assert word in error.message, (word, error.message)
    for name in stale:
        answer = spec_of(stub, fault.cluster, name)
        assert (answer.status, answer.fingerprint) == (STALE, before[name])
        assert answer.errors and answer.errors[0].kind in fault.kinds
    info = cluster_info(stub, fault.cluster)
    assert (info.state, info.stale_count, info.ok_count) == (
        pb.LOAD_STATE_READY, len(stale), len(before) - len(stale))
    assert info.errors and {e.kind for e in info.errors} <= fault.kinds
    wait_metric(server, "token_fetcher_workflows", len(stale), cluster=fault.cluster,
                status="stale")
    samples = server_metrics(server)
    for kind in {pb.ErrorKind.Name(e.kind).removeprefix("ERROR_KIND_").lower() for e in reported}:
        assert metric(samples, "token_fetcher_parse_errors_total", cluster=fault.cluster,
                      kind=kind) >= 1
    assert metric(samples, "token_fetcher_workflows", cluster=other, status="ok") == \
        len(fingerprints(stub, other))
    assert all_status(stub, other, OK), f"{case} touched the other cluster"

    restore()
    listing = wait_for(lambda: all_status(stub, fault.cluster, OK), message=f"{case}: recovery")
    assert {w.name: w.fingerprint for w in listing.workflows} == before
    assert list(listing.cluster_errors) == []
    assert list(cluster_info(stub, fault.cluster).errors) == []
    wait_metric(server, "token_fetcher_workflows", 0, cluster=fault.cluster, status="stale")


# --- the state directory read-only or full --------------------------------------------------


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def _can_mount(scratch: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    scratch.mkdir()
    if not _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(scratch)):
        return False
    _run("umount", str(scratch))
    return True


class StateDirFault:
    """Breaks a state directory mid-run, for real when mounts are allowed, else simulated."""

    JOURNAL = "versions.sqlite3-journal"

    def __init__(self, base: Path, how: str) -> None:
        self.how = how
        self.path = base / "state"
        self.path.mkdir(parents=True)
        self.real = _can_mount(base / "probe-mount")
        self.mounts: list[Path] = []
        if self.real and how == "full":
            assert _run("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(self.path))
            self.mounts.append(self.path)

    @property
    def mechanism(self) -> str:
        if not self.real:
            return f"simulated: a directory at {self.JOURNAL}"
        return "a read-only bind mount" if self.how == "read-only" else "a full 512 KiB tmpfs"

    def break_it(self) -> None:
        if not self.real:
            (self.path / self.JOURNAL).mkdir()
        elif self.how == "read-only":
            assert _run("mount", "--bind", "-o", "ro", str(self.path), str(self.path))
            self.mounts.append(self.path)
            _run("mount", "-o", "remount,bind,ro", str(self.path))  # older kernels
            with pytest.raises(OSError):
                (self.path / "probe").write_text("x")
        else:
            fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                with pytest.raises(OSError):
                    for _ in range(10000):
                        os.write(fd, b"\0" * 4096)
            finally:
                os.close(fd)

    def repair(self) -> None:
        if not self.real:
            (self.path / self.JOURNAL).rmdir()
        elif self.how == "read-only":
            assert _run("umount", str(self.mounts.pop()))
        else:
            (self.path / "filler").unlink()

    def cleanup(self) -> None:
        for mount in reversed(self.mounts):
            _run("umount", "-l", str(mount))


@pytest.fixture(params=["read-only", "full"])
def state_fault(request, tmp_path):
    fault = StateDirFault(tmp_path / "state-fault", request.param)
    yield fault
    fault.cleanup()


def test_state_directory_fails_mid_run_and_serving_goes_on_from_memory(start_server, stub_for,
                                                                      state_fault, tmp_path):
    repo = copy_example(tmp_path, "python_repo")
    server = start_server(two_clusters(repo), state_dir=state_fault.path)
    try:
        stub = stub_for(server)
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).state_error == ""
        assert metric(server_metrics(server), "token_fetcher_state_store_healthy") == 1
        before = fingerprints(stub, PY)
        module = repo / "example_workflows" / "maintenance.py"
        original = module.read_text()

        state_fault.break_it()
        replace_atomically(module, original.replace("'echo backup done'", "'echo backup v2'"))
        v2 = wait_for(lambda: (lambda f: f if f != before["db_backup"] else None)(
            spec_of(stub, PY, "db_backup").fingerprint), message="the edit to be served")
        # The history is saved after the new version is served: the failure shows next.
        state_error = wait_for(
            lambda: stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).state_error,
            message=f"the failed save to be reported ({state_fault.mechanism})")
        for part in ("cannot save versions", "versions.sqlite3", "memory only"):
            assert part in state_error, (part, state_error)
        wait_for(lambda: metric(server_metrics(server), "token_fetcher_state_store_healthy")
                 == 0, message="the state store metric to say so")
        # Served from memory: the new version, and the old one by its fingerprint.
        assert spec_of(stub, PY, "db_backup").status == OK
        assert spec_of(stub, PY, "db_backup", before["db_backup"]).fingerprint == \
            before["db_backup"]
        assert all_status(stub, JS, OK)

        state_fault.repair()
        replace_atomically(module, original.replace("'echo backup done'", "'echo backup v3'"))
        wait_for(lambda: stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).state_error
                 == "", message="the state store to recover")
        wait_for(lambda: metric(server_metrics(server), "token_fetcher_state_store_healthy")
                 == 1, message="the state store metric to recover")
        v3 = spec_of(stub, PY, "db_backup").fingerprint
        history = VersionHistory(str(state_fault.path), 10)
        try:
            assert history.load(PY, v3) is not None  # persisted again
            assert history.load(PY, v2) is None  # made while the store was broken
        finally:
            history.close()
    finally:
        server.stop(grace=1)


# --- SIGTERM under 16 concurrent calls ------------------------------------------------------

CALLERS = 16


def _call(stub, index: int, count: int) -> None:
    kind = index % 8
    if kind == 0:  # a new run time each call: rendered, not cached
        run = Timestamp(seconds=RUN.seconds + (index * 100000 + count) * 86400)
        stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                 run_time=run), timeout=10)
    elif kind == 1:
        stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=JS, workflow="json_heartbeat"),
                             timeout=10)
    elif kind == 2:
        stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY, page_size=3), timeout=10)
    elif kind == 3:
        stub.ResolveMigration(pb.ResolveMigrationRequest(
            cluster=PY, workflow="event_ingest", migration_time=RUN), timeout=10)
    elif kind == 4:
        stub.BatchResolveMigrations(pb.BatchResolveMigrationsRequest(migrations=[
            pb.ResolveMigrationRequest(cluster=PY, workflow="db_backup",
                                       migration_time=RUN)] * 50), timeout=10)
    elif kind == 5:
        stub.GetJobToken(pb.GetJobTokenRequest(cluster=PY, workflow="daily_reporting", job="final",
                                               run_time=RUN), timeout=10)
    elif kind == 6:
        stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    elif index == 7:  # a slow call: a parse in the sandbox
        stub.Reload(pb.ReloadRequest(cluster=PY), timeout=10)
    else:  # a watch: it "completes" when the server ends the stream
        for _ in stub.WatchWorkflows(pb.WatchWorkflowsRequest(), timeout=30):
            pass


def test_sigterm_under_sixteen_concurrent_calls(serve_process, tmp_path):
    repo = copy_example(tmp_path, "python_repo")
    server = serve_process({"clusters": two_clusters(repo), "shutdown_grace_seconds": 5})
    server.wait_serving()
    outcomes: list[list[str]] = [[] for _ in range(CALLERS)]
    details: dict = {}

    def caller(index: int) -> None:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.TokenFetcherStub(channel)
            give_up = time.monotonic() + 60
            for count in range(20000):
                if time.monotonic() > give_up:
                    outcomes[index].append("GAVE_UP")
                    return
                try:
                    _call(stub, index, count)
                except grpc.RpcError as error:
                    outcomes[index].append(error.code().name)
                    details[index] = error.details()
                    return
                outcomes[index].append("OK")

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    # Every caller has been answered at least once (the watch: its stream is open).
    wait_for(lambda: all(outcomes[i] for i in range(CALLERS) if i != 15)
             and server.scrape()[("token_fetcher_rpcs_in_flight", frozenset())] >= 1,
             message="every caller answered")
    workers_seen = {p.pid for p in server.workers()}

    code, took = server.terminate(timeout=30)
    assert code == 0, server.log
    # One second of NOT_SERVING notice, then at most the 5 s grace.
    assert took < 1 + 5 + 2, f"exit took {took:.1f} s"
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a call hangs"
    # Every call completed (the watch: its stream ended cleanly) until the first refusal.
    for index, calls in enumerate(outcomes):
        assert calls and set(calls[:-1]) <= {"OK"}, (index, calls[-3:], details.get(index))
        assert calls[-1] == "UNAVAILABLE", (index, calls[-3:], details.get(index))
    assert "shutting down" in server.log
    assert "Traceback" not in server.log, server.log
    leftover = [p for p in psutil.process_iter(["pid", "cmdline"])
                if p.info["pid"] in workers_seen
                or "legacy_parser.worker" in " ".join(p.info["cmdline"] or ())
                and str(tmp_path) in _cwd(p)]
    assert leftover == []


def _cwd(process: psutil.Process) -> str:
    try:
        return process.cwd()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


# --- the server killed and restarted under a client -----------------------------------------


def _fresh(client: TokenFetcherClient):
    try:
        answer = client.get_spec(PY, "daily_reporting")
    except Unavailable:
        return None
    return None if answer.stale else answer


def test_server_killed_and_restarted_under_a_client(serve_process, tmp_path):
    repo = copy_example(tmp_path, "python_repo")
    config = {"clusters": two_clusters(repo), "state_dir": str(tmp_path / "kept-state"),
              "listen": f"127.0.0.1:{free_port_below_ephemeral_range()}"}
    first = serve_process(config, name="first")
    first.wait_serving()
    clock = FakeClock()
    metadata = MigrationMetadata(PY, "daily_reporting", datetime(2020, 1, 1, tzinfo=UTC))
    run = datetime(2020, 1, 2, 6, tzinfo=UTC)
    client = TokenFetcherClient(first.target, timeout=2, retries=1, backoff_base=0.01,
                                backoff_max=0.2, cache_ttl=10, max_stale=100, clock=clock)
    try:
        client.start_watch(PY)
        wait_for(lambda: client.watching, message="the invalidation watch")
        fresh = client.get_spec(PY, "daily_reporting")
        migrated = client.migrated_workflow(metadata)
        tokens = client.get_job_tokens(PY, "daily_reporting", run)
        assert not fresh.stale and not migrated.stale

        first.kill()  # SIGKILL: no drain, no goodbye
        wait_for(lambda: not client.watching, message="the watch to notice")
        clock.now += 50  # expired, within max_stale
        stale = client.get_spec(PY, "daily_reporting")
        assert stale.stale and stale.fingerprint == fresh.fingerprint
        stale_migrated = client.migrated_workflow(metadata)
        assert stale_migrated.stale and stale_migrated.handover == migrated.handover
        clock.now += 100  # past max_stale: the outage surfaces
        with pytest.raises(Unavailable):
            client.get_spec(PY, "daily_reporting")

        second = serve_process(config, name="second")
        assert second.port == first.port
        again = wait_for(lambda: _fresh(client), message="a fresh answer after the restart")
        assert again.fingerprint == fresh.fingerprint
        wait_for(lambda: client.watching, message="the watch to reconnect")
        reconnects = [s.value for m in client.registry.collect() for s in m.samples
                      if s.name == "token_fetcher_client_watch_reconnects_total"]
        assert reconnects and reconnects[0] >= 1
        # The run bound before the crash gets its exact tokens back.
        pinned = client.get_job_tokens(PY, "daily_reporting", run, fingerprint=tokens.fingerprint)
        assert pinned == tokens
        assert client.migrated_workflow(metadata).stale is False
    finally:
        client.close()
    second.wait_serving()  # every cluster loaded (the other one may come a little later)
