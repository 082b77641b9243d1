"""Purity: after any change, every served workflow is what a fresh full parse of the current
sources gives (each re-parse is a full parse in a fresh worker). A module that patches the
shims, then is reverted, is in tests/reliability/test_catalog_purity.py."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.helpers import example_clusters, metric, replace_file, scrape, wait_for
from token_fetcher import snapshot_merge
from token_fetcher._proto import token_fetcher_pb2 as pb

PY, JS = "example_python", "example_json"
RUN = 1577944800  # 2020-01-02 06:00 UTC


def fingerprints(stub, cluster: str) -> dict[str, tuple[str, int]]:
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster))
    return {w.name: (w.fingerprint, w.status) for w in listing.workflows}


def parses(server, cluster: str) -> float:
    return metric(scrape(server.metrics_port), "token_fetcher_parses_total", 0.0, cluster=cluster)


@pytest.fixture
def repos(example_copy) -> tuple[Path, Path]:
    return example_copy("python_repo"), example_copy("json_repo")


def edit_and_wait(server, stub, watch_events, cluster: str, edit) -> pb.WorkflowEvent:
    """Apply ``edit`` and return the first watch event of the re-parse it causes."""
    watch = watch_events(stub, cluster)
    watch.subscribed()
    loads = parses(server, cluster)
    edit()
    [first] = watch.take(lambda event: event.type != pb.WorkflowEvent.TYPE_SUBSCRIBED)
    wait_for(lambda: parses(server, cluster) > loads, message="the re-parse to be counted")
    return first


def same_as_a_full_parse(start_server, stub_for, tmp_path, repos, cluster, served) -> None:
    fresh = start_server(clusters=example_clusters(*repos), state_dir=tmp_path / "fresh")
    assert fingerprints(stub_for(fresh), cluster) == served
    fresh.stop(grace=1)


def test_editing_one_python_module_serves_a_full_parse(
        start_server, stub_for, watch_events, repos, tmp_path):
    server = start_server(clusters=example_clusters(*repos))
    stub = stub_for(server)
    before = fingerprints(stub, PY)
    module = repos[0] / "example_workflows" / "maintenance.py"
    event = edit_and_wait(server, stub, watch_events, PY,
                          lambda: replace_file(module, "'echo backup done'",
                                               "'echo backup finished'"))
    assert (event.type, event.workflow) == (pb.WorkflowEvent.TYPE_CHANGED, "db_backup")
    after = fingerprints(stub, PY)
    assert {n for n in after if after[n] != before[n]} == {"db_backup"}
    same_as_a_full_parse(start_server, stub_for, tmp_path, repos, PY, after)


def test_a_re_parse_rebuilds_only_the_workflows_whose_result_changed(
        start_server, stub_for, watch_events, repos, tmp_path, monkeypatch):
    """Still a full parse in a fresh worker; the server just skips rebuilding the specs of
    workflows whose part of the result is byte for byte the last parse's."""
    rebuilt: list[str] = []
    build_version = snapshot_merge.version_of

    def counting_version(workflow):
        rebuilt.append(workflow.name)
        return build_version(workflow)

    monkeypatch.setattr(snapshot_merge, "version_of", counting_version)
    server = start_server(clusters=example_clusters(*repos))
    stub = stub_for(server)
    assert "db_backup" in rebuilt
    rebuilt.clear()
    module = repos[0] / "example_workflows" / "maintenance.py"
    edit_and_wait(server, stub, watch_events, PY,
                  lambda: replace_file(module, "'echo backup done'", "'echo backup finished'"))
    assert rebuilt == ["db_backup"]
    same_as_a_full_parse(start_server, stub_for, tmp_path, repos, PY, fingerprints(stub, PY))


def test_editing_a_shared_module_serves_a_full_parse(
        start_server, stub_for, watch_events, repos, tmp_path):
    server = start_server(clusters=example_clusters(*repos))
    stub = stub_for(server)
    templates = repos[0] / "example_workflows" / "templates.py"
    event = edit_and_wait(server, stub, watch_events, PY, lambda: (
        replace_file(templates, "executor=Platform.EMR", "executor=Platform.QUBOLE")))
    assert event.type == pb.WorkflowEvent.TYPE_CHANGED
    same_as_a_full_parse(start_server, stub_for, tmp_path, repos, PY, fingerprints(stub, PY))


def test_editing_and_deleting_json_job_files_serves_a_full_parse(
        start_server, stub_for, watch_events, repos, tmp_path):
    server = start_server(clusters=example_clusters(*repos))
    stub = stub_for(server)
    before = fingerprints(stub, JS)
    workflows = repos[1] / "repo" / "workflow"
    job = workflows / "json_heartbeat" / "job" / "heartbeat"

    def bump_attempts() -> None:
        config = json.loads(job.read_text())
        config["max_attempts"] = config["max_attempts"] + 1
        temp = job.with_name(".heartbeat.tmp")
        temp.write_text(json.dumps(config))
        os.replace(temp, job)

    event = edit_and_wait(server, stub, watch_events, JS, bump_attempts)
    assert (event.type, event.workflow) == (pb.WorkflowEvent.TYPE_CHANGED, "json_heartbeat")
    event = edit_and_wait(server, stub, watch_events, JS,
                          lambda: (workflows / "json_table_sync/job/SyncAuditJob").unlink())
    assert (event.type, event.workflow) == (pb.WorkflowEvent.TYPE_CHANGED, "json_table_sync")
    after = fingerprints(stub, JS)
    assert {n for n in after if after[n] != before[n]} == {"json_heartbeat", "json_table_sync"}
    spec = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=JS,
                                                          workflow="json_table_sync")).spec
    assert [job.name for job in spec.jobs] == ["sync_tables"]
    same_as_a_full_parse(start_server, stub_for, tmp_path, repos, JS, after)
    # The deleted file is no longer expected: the watch settles instead of re-parsing.
    settled = parses(server, JS)
    edit_and_wait(server, stub, watch_events, JS, bump_attempts)
    assert parses(server, JS) == settled + 1


# With the gate on, a parse waits at a named pipe in the repo root (a parse can write
# nowhere the test can see): the test, opening the pipe's write end, learns that the parse
# got there, changes a file, and lets the parse go on by closing it.
GATE = """
import os as _os
_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.exists(_os.path.join(_ROOT, 'gate-on')):
    with open(_os.path.join(_ROOT, 'gate.fifo')) as _gate:
        _gate.read()
"""
GATED_WORKFLOWS = """from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

from team.commands import COMMAND
""" + GATE + """
WORKFLOWS = {
    'daily': WorkflowConfig(
        jobs={'work': JobConfig(CommandJobTemplate('work', COMMAND))},
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
}
"""


def change_during_a_parse(stub, cluster: str, root: Path, change) -> None:
    """Reload ``cluster``, whose definitions pass the GATE, and ``change()`` while the parse
    waits there."""
    if not (root / "gate.fifo").exists():
        os.mkfifo(root / "gate.fifo", 0o666)
    (root / "gate-on").touch()
    reloading = threading.Thread(target=stub.Reload, args=(pb.ReloadRequest(cluster=cluster),))
    reloading.start()

    def gate_reached() -> int | None:
        try:
            return os.open(root / "gate.fifo", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:  # ENXIO: no reader yet
            if error.errno != errno.ENXIO:
                raise
            return None

    gate = wait_for(gate_reached, message="the parse to reach the gate")
    change()
    (root / "gate-on").unlink()
    os.close(gate)  # the parse goes on, with what it read before the change
    reloading.join(30)


def test_a_file_changed_while_the_worker_runs_is_parsed_again(start_server, stub_for, tmp_path):
    """The worker hashes the files it read when it is done: a file replaced after it was
    imported would be recorded with its new content although the parse used the old one."""
    root = tmp_path / "team_repo"
    package = root / "team"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "commands.py").write_text("COMMAND = 'echo old'\n")
    (package / "workflows.py").write_text(GATED_WORKFLOWS)
    server = start_server({"team": {
        "repo": str(root), "parser": "pinball_ext.workflow.parser.PyWorkflowParser",
        "parser_params": {"workflows_config": "team.workflows.WORKFLOWS"}}})
    stub = stub_for(server)

    def command() -> str:
        tokens = stub.GetJobTokens(pb.GetJobTokensRequest(
            cluster="team", workflow="daily", jobs=["work"], run_time=Timestamp(seconds=RUN)))
        return tokens.jobs[0].command

    assert command() == "echo old"
    change_during_a_parse(stub, "team", root, lambda: replace_file(
        package / "commands.py", "'echo old'", "'echo new'"))
    wait_for(lambda: command() == "echo new", message="the edit made during the parse")


def test_a_pinball_yaml_changed_while_the_worker_runs_is_parsed_again(start_server, stub_for,
                                                                      repos):
    """The catalog reads the Pinball YAML before the parse and hashed it after."""
    python_repo = repos[0]
    workflows = python_repo / "example_workflows" / "workflows.py"
    workflows.write_text(GATE + workflows.read_text())
    stub = stub_for(start_server(clusters=example_clusters(*repos)))

    def command() -> str:
        tokens = stub.GetJobTokens(pb.GetJobTokensRequest(
            cluster=PY, workflow="daily_reporting", jobs=["load_events"],
            run_time=Timestamp(seconds=RUN)))
        return tokens.jobs[0].command

    assert "env=example" in command()
    change_during_a_parse(stub, PY, python_repo, lambda: replace_file(
        python_repo / "pinball.yaml", "env: example", "env: staging"))
    wait_for(lambda: "env=staging" in command(), message="the edit made during the parse")
