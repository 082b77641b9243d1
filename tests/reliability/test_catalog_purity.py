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

import re
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from token_fetcher._proto import token_fetcher_pb2 as pb

from .reliability_helpers import (
    PY,
    copy_example,
    python_cluster_inline,
    replace_atomically,
    wait_for,
)

RUN = Timestamp(seconds=1577944800)  # 2020-01-02 06:00 UTC, a daily_reporting run
OK, STALE, BROKEN = pb.PARSE_STATUS_OK, pb.PARSE_STATUS_STALE, pb.PARSE_STATUS_BROKEN
# Appended to a definition module: the parse worker dies while importing it.
CRASH = "\nimport os\nos._exit(3)\n"


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


def log_lines(server, pattern: str) -> list[str]:
    return [line for line in server.lines if re.search(pattern, line)]


def test_restarted_while_the_worker_crashes_serves_last_good_and_recovers(serve_process,
                                                                          tmp_path):
    repo = copy_example(tmp_path, "python_repo")
    config = server_config(repo, tmp_path / "state")
    first = serve_process(config, name="first")
    first.wait_serving()
    before = fingerprints(first.stub())
    tokens_before = first.stub().GetJobTokens(pb.GetJobTokensRequest(
        cluster=PY, workflow="daily_reporting", run_time=RUN), timeout=10)
    first.close()

    module = repo / "example_workflows" / "ingest.py"
    text = module.read_text()
    replace_atomically(module, text + CRASH)
    second = serve_process(config, name="second")
    second.wait_serving()
    stub = second.stub()
    served = listing(stub)
    assert {name: (w.fingerprint, w.status) for name, w in served.items()} == {
        name: (fingerprint, STALE) for name, fingerprint in before.items()}
    assert {e.kind for w in served.values() for e in w.errors} == {
        pb.ERROR_KIND_WORKER_CRASHED}
    info = cluster_info(stub)
    assert (info.state, info.stale_count, info.broken_count) == (pb.LOAD_STATE_READY, 7, 0)
    tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                      run_time=RUN), timeout=10)
    assert tokens.status == STALE and list(tokens.jobs) == list(tokens_before.jobs)

    # The fix lands in a module below the repo root, and nothing calls Reload.
    replace_atomically(module, text)
    wait_for(lambda: all_ok(stub), message="the cluster to recover by itself")
    assert fingerprints(stub) == before


def test_restarted_with_one_broken_workflow_serves_its_last_good_version(serve_process,
                                                                         tmp_path):
    repo = copy_example(tmp_path, "python_repo")
    config = server_config(repo, tmp_path / "state")
    first = serve_process(config, name="first")
    first.wait_serving()
    before = fingerprints(first.stub())
    first.close()

    module = repo / "example_workflows" / "maintenance.py"
    text = module.read_text()
    replace_atomically(module, text.replace("dependency=['snapshot_db']",
                                            "dependency=['snapshot_dbb']"))
    second = serve_process(config, name="second")
    second.wait_serving()
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
    server = serve_process(server_config(repo, tmp_path / "state"))
    server.wait_serving()
    stub = server.stub()
    info = cluster_info(stub)
    assert info.state == pb.LOAD_STATE_FAILED
    assert [e.kind for e in info.errors] == [pb.ERROR_KIND_WORKER_CRASHED]
    replace_atomically(module, text)
    wait_for(lambda: cluster_info(stub).state == pb.LOAD_STATE_READY and all_ok(stub),
             message="the first load to be retried when the fix lands")
    assert len(listing(stub)) == 7
