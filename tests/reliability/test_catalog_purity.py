"""The catalog side of isolation and purity, on real `token-fetcher serve` processes:

- finding 8: a module that patches the shims, then is reverted: every fingerprint comes
  back, across a restart too;
- finding 9: restarted while a definition crashes the worker (or breaks one workflow), the
  server serves each workflow's last good version from the history, flagged STALE, and
  recovers by itself when the fix lands, also when the very first parse fails;
- finding 10: a layout that changes while no file changed is flagged dynamic;

and the operator's log lines for each (docs/reliability.md, section H).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.helpers import metric, wait_for
from tests.test_dynamic_layouts import CLUSTER as TEAM
from tests.test_dynamic_layouts import team_repo
from token_fetcher._proto import token_fetcher_pb2 as pb

from .reliability_helpers import PY, copy_example, python_cluster_inline, replace_atomically

RUN = Timestamp(seconds=1577944800)  # 2020-01-02 06:00 UTC, a daily_reporting run
OK, STALE, BROKEN = pb.PARSE_STATUS_OK, pb.PARSE_STATUS_STALE, pb.PARSE_STATUS_BROKEN
# Appended to maintenance.py: every JobTemplate command changes, in every module's workflows.
SHIM_PATCH = """
JobTemplate.command_template += ' && echo patched'
"""
# Appended to a definition module: the parse worker dies, or hangs, while importing it.
CRASH = "\nimport os\nos._exit(3)\n"
HANG = "\nimport time\ntime.sleep(3600)\n"
# Ways a whole cluster's parse fails: (appended to ingest.py, the error kind).
WORKER_FAILURES = {"crash": (CRASH, pb.ERROR_KIND_WORKER_CRASHED),
                   "timeout": (HANG, pb.ERROR_KIND_TIMEOUT)}


def listing(stub) -> dict[str, pb.WorkflowSummary]:
    response = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY), timeout=10)
    return {w.name: w for w in response.workflows}


def fingerprints(stub) -> dict[str, str]:
    return {name: w.fingerprint for name, w in listing(stub).items()}


def cluster_info(stub) -> pb.ClusterInfo:
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    return {c.name: c for c in info.clusters}[PY]


def all_ok(stub) -> bool:
    return all(w.status == OK for w in listing(stub).values())


def server_config(repo: Path, state: Path, **settings) -> dict:
    return {"clusters": {PY: python_cluster_inline(repo)}, "state_dir": str(state), **settings}


def serving(serve_process, config: dict, name: str = "server"):
    """A `token-fetcher serve` process whose first load has finished."""
    server = serve_process(config, name=name)
    server.wait_serving()
    return server


def log_lines(server, pattern: str) -> list[str]:
    return [line for line in server.lines if re.search(pattern, line)]


def command_of(stub, workflow: str, job: str) -> str:
    tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow=workflow, jobs=[job],
                                                      run_time=RUN), timeout=10)
    return tokens.jobs[0].command


def test_a_module_that_patches_the_shims_then_is_reverted_restores_every_fingerprint(
        serve_process, tmp_path):
    repo = copy_example(tmp_path, "python_repo")
    config = server_config(repo, tmp_path / "state")
    server = serving(serve_process, config, "first")
    stub = server.stub()
    original = fingerprints(stub)
    module = repo / "example_workflows" / "maintenance.py"
    text = module.read_text()

    # The patch lives in maintenance.py, yet changes daily_reporting (reporting.py) too.
    replace_atomically(module, text + SHIM_PATCH)
    wait_for(lambda: fingerprints(stub)["daily_reporting"] != original["daily_reporting"],
             message="the patch to reach the workflows of other modules")
    patched = fingerprints(stub)
    assert command_of(stub, "daily_reporting", "load_events").endswith(" && echo patched")
    fresh = serving(serve_process, server_config(repo, tmp_path / "fresh-state"), "fresh")
    assert fingerprints(fresh.stub()) == patched
    fresh.close()

    # Restarted while patched: the same layouts; then reverted: every original one.
    server.close()
    server = serving(serve_process, config, "second")
    stub = server.stub()
    assert fingerprints(stub) == patched
    replace_atomically(module, text)
    wait_for(lambda: fingerprints(stub) == original,
             message="every fingerprint to come back after the revert")
    assert " && echo patched" not in command_of(stub, "daily_reporting", "load_events")
    server.close()
    third = serving(serve_process, config, "third")
    assert fingerprints(third.stub()) == original


@pytest.mark.parametrize("failure", sorted(WORKER_FAILURES))
def test_restarted_while_the_worker_fails_serves_last_good_and_recovers(serve_process, tmp_path,
                                                                        failure):
    appended, kind = WORKER_FAILURES[failure]
    repo = copy_example(tmp_path, "python_repo")
    config = server_config(repo, tmp_path / "state", sandbox={"timeout_seconds": 5})
    first = serving(serve_process, config, "first")
    before = fingerprints(first.stub())
    tokens_before = first.stub().GetJobTokens(pb.GetJobTokensRequest(
        cluster=PY, workflow="daily_reporting", run_time=RUN), timeout=10)
    first.close()

    module = repo / "example_workflows" / "ingest.py"
    text = module.read_text()
    replace_atomically(module, text + appended)
    second = serving(serve_process, config, "second")
    stub = second.stub()
    served = listing(stub)
    assert {name: (w.fingerprint, w.status) for name, w in served.items()} == {
        name: (fingerprint, STALE) for name, fingerprint in before.items()}
    assert {e.kind for w in served.values() for e in w.errors} == {kind}
    info = cluster_info(stub)
    assert (info.state, info.stale_count, info.broken_count) == (pb.LOAD_STATE_READY, 7, 0)
    tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                      run_time=RUN), timeout=10)
    assert tokens.status == STALE and list(tokens.jobs) == list(tokens_before.jobs)

    # The log says what is served and why.
    kind_name = pb.ErrorKind.Name(kind).removeprefix("ERROR_KIND_").lower()
    assert len(log_lines(second, rf"WARNING \S+: cluster {PY}: the parse failed: "
                                 rf"{kind_name}: ")) == 1
    stale = log_lines(second, rf"WARNING \S+: cluster {PY}: workflow \w+ is STALE \(its last "
                              rf"good version \w+ is served\): {kind_name}: ")
    assert sorted(re.search(r"workflow (\w+)", line).group(1) for line in stale) == sorted(before)
    assert log_lines(second, rf"INFO \S+: cluster {PY}: loaded in \S+ s: 7 workflows \(0 OK, "
                             r"7 stale, 0 broken, 0 dynamic\)")

    # The fix lands in a module below the repo root, and nothing calls Reload.
    replace_atomically(module, text)
    wait_for(lambda: all_ok(stub), message="the cluster to recover by itself")
    assert fingerprints(stub) == before
    wait_for(lambda: len(log_lines(second, rf"INFO \S+: cluster {PY}: workflow \w+ recovered: "
                                           r"OK")) == 7, message="seven recovered lines")


def test_restarted_with_one_broken_workflow_serves_its_last_good_version(serve_process,
                                                                         tmp_path):
    repo = copy_example(tmp_path, "python_repo")
    config = server_config(repo, tmp_path / "state")
    first = serving(serve_process, config, "first")
    before = fingerprints(first.stub())
    first.close()

    module = repo / "example_workflows" / "maintenance.py"
    text = module.read_text()
    replace_atomically(module, text.replace("dependency=['snapshot_db']",
                                            "dependency=['snapshot_dbb']"))
    second = serving(serve_process, config, "second")
    stub = second.stub()
    served = listing(stub)
    assert (served["db_backup"].status, served["db_backup"].fingerprint) == (
        STALE, before["db_backup"])
    assert [e.kind for e in served["db_backup"].errors] == [pb.ERROR_KIND_MISSING_PARENT]
    assert all(w.status == OK for name, w in served.items() if name != "db_backup")
    replace_atomically(module, text)
    wait_for(lambda: all_ok(stub), message="db_backup to recover by itself")
    assert fingerprints(stub) == before


def test_a_first_parse_that_crashes_recovers_when_the_fix_lands(serve_process, tmp_path):
    repo = copy_example(tmp_path, "python_repo")
    module = repo / "example_workflows" / "ingest.py"
    text = module.read_text()
    replace_atomically(module, text + CRASH)
    server = serving(serve_process, server_config(repo, tmp_path / "state"))
    stub = server.stub()
    info = cluster_info(stub)
    assert info.state == pb.LOAD_STATE_FAILED
    assert [e.kind for e in info.errors] == [pb.ERROR_KIND_WORKER_CRASHED]
    replace_atomically(module, text)
    wait_for(lambda: cluster_info(stub).state == pb.LOAD_STATE_READY and all_ok(stub),
             message="the first load to be retried when the fix lands")
    assert len(listing(stub)) == 7


def test_a_layout_that_changes_at_every_import_is_flagged_and_kept_fresh_by_the_timer(
        serve_process, tmp_path):
    clusters, _ = team_repo(tmp_path, reparse_interval_seconds=0.3)
    server = serving(serve_process, {"clusters": clusters})
    stub = server.stub()
    watch = stub.WatchWorkflows(pb.WatchWorkflowsRequest(cluster=TEAM), timeout=60)
    events = []
    for event in watch:  # bounded by the call's timeout
        if event.type != pb.WorkflowEvent.TYPE_SUBSCRIBED:
            events.append(event)
        if len(events) == 2:
            break
    watch.cancel()
    assert [(e.type, e.workflow) for e in events] == [
        (pb.WorkflowEvent.TYPE_DYNAMIC, "random_daily")] * 2
    assert events[1].old_fingerprint == events[0].new_fingerprint
    served = {w.name: w for w in stub.ListWorkflows(
        pb.ListWorkflowsRequest(cluster=TEAM), timeout=10).workflows}
    assert served["random_daily"].dynamic and not served["stable_daily"].dynamic
    # Announced once, when it turned out to be dynamic.
    assert len(log_lines(server, rf"WARNING \S+: cluster {TEAM}: workflow random_daily has a "
                                 r"dynamic layout")) == 1
    assert not log_lines(server, "stable_daily")
    samples = server.scrape()
    assert metric(samples, "token_fetcher_dynamic_workflows", cluster=TEAM) == 1
    assert metric(samples, "token_fetcher_dynamic_layout_changes_total", cluster=TEAM) >= 2


def test_the_whole_repo_watch_after_a_parse_that_read_nothing_is_bounded(tmp_path, monkeypatch,
                                                                         caplog):
    from token_fetcher import watch_scope

    for index in range(6):
        (tmp_path / f"module_{index}.py").write_text("")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("")
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__" / "m.pyc").write_text("")
    os.mkfifo(tmp_path / "pkg" / "pipe")
    root = str(tmp_path)
    assert watch_scope._repo_tree(root, "team") == [
        root + "/", *(f"{root}/module_{index}.py" for index in range(6)), f"{root}/pkg/"]
    monkeypatch.setattr(watch_scope, "_MAX_TREE_WATCH", 4)
    assert len(watch_scope._repo_tree(root, "team")) == 4
    assert "cluster team: the repo " in caplog.text and "only the first 4" in caplog.text
