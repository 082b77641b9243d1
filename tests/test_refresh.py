"""Refresh on a real server: edits are noticed, watchers hear of them, broken definitions keep
their last good version, and past fingerprints resolve after a restart."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.helpers import EXAMPLES, example_clusters, rpc_error, wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb

PY = "example_python"
JS = "example_json"
Event = pb.WorkflowEvent
RUN = Timestamp(seconds=1577944800)  # 2020-01-02 06:00 UTC, a daily_reporting run


def fingerprints(stub, cluster: str) -> dict[str, str]:
    response = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster))
    return {w.name: w.fingerprint for w in response.workflows}


def get_spec(stub, workflow: str, cluster: str = PY, fingerprint: str = ""):
    return stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=cluster, workflow=workflow,
                                                          fingerprint=fingerprint))


def write(path: Path, text: str) -> None:
    """Replace a file at once, as editors and checkouts do: the poller never sees it half
    written (a hidden temp file is ignored by both definition readers)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    write(path, text.replace(old, new))


def job(spec_response, name: str) -> pb.JobSpec:
    return {j.name: j for j in spec_response.spec.jobs}[name]


def test_python_edit_is_served_and_announced(start_server, stub_for, example_copy,
                                             watch_events):
    repo = example_copy("python_repo")
    server = start_server(example_clusters(python_repo=repo))
    stub = stub_for(server)
    before = fingerprints(stub, PY)
    watch = watch_events(stub, PY)
    watch.subscribed()

    edit(repo / "example_workflows" / "reporting.py",
         "EmrJobTemplate('LoadEventsJob', priority=30)",
         "EmrJobTemplate('LoadEventsJob', priority=31)")

    [event] = watch.take(lambda e: e.type == Event.TYPE_CHANGED)
    assert (event.cluster, event.workflow) == (PY, "daily_reporting")
    assert event.old_fingerprint == before["daily_reporting"]
    assert event.new_fingerprint not in ("", before["daily_reporting"])
    assert list(event.errors) == []
    current = get_spec(stub, "daily_reporting")
    assert current.fingerprint == event.new_fingerprint
    assert current.status == pb.PARSE_STATUS_OK
    assert (job(current, "load_events").priority, job(current, "load_events").score) == (31, 39.5)
    # Only that workflow changed; no other event came before the CHANGED one.
    after = fingerprints(stub, PY)
    assert {n: f for n, f in after.items() if n != "daily_reporting"} == {
        n: f for n, f in before.items() if n != "daily_reporting"}
    assert [e.type for e in watch.seen] == [Event.TYPE_SUBSCRIBED, Event.TYPE_CHANGED]
    # The version replaced still resolves by its fingerprint.
    old = get_spec(stub, "daily_reporting", fingerprint=before["daily_reporting"])
    assert job(old, "load_events").priority == 30
    tokens = stub.GetJobTokens(pb.GetJobTokensRequest(
        cluster=PY, workflow="daily_reporting", run_time=RUN,
        fingerprint=before["daily_reporting"], jobs=["load_events"]))
    assert tokens.fingerprint == before["daily_reporting"]
    assert tokens.jobs[0].priority == 38.5


def test_json_edit_add_and_remove(start_server, stub_for, example_copy, watch_events):
    repo = example_copy("json_repo")
    server = start_server(example_clusters(json_repo=repo))
    stub = stub_for(server)
    before = fingerprints(stub, JS)
    watch = watch_events(stub, JS)
    watch.subscribed()
    workflows = repo / "repo" / "workflow"

    # Edit a job file.
    job_file = workflows / "json_daily_rollup" / "job" / "RollupPublishJob"
    definition = json.loads(job_file.read_text())
    definition["max_attempts"] = definition["max_attempts"] + 4
    write(job_file, json.dumps(definition, indent=4))
    [changed] = watch.take(lambda e: e.type != Event.TYPE_SUBSCRIBED)
    assert (changed.type, changed.workflow) == (Event.TYPE_CHANGED, "json_daily_rollup")
    assert changed.old_fingerprint == before["json_daily_rollup"]
    current = get_spec(stub, "json_daily_rollup", JS)
    assert current.fingerprint == changed.new_fingerprint != before["json_daily_rollup"]
    assert job(current, "RollupPublishJob").max_attempts == definition["max_attempts"]

    # Add a workflow folder (built aside, then moved in whole).
    staging = repo / "staging"
    shutil.copytree(workflows / "json_heartbeat", staging)
    for path in (staging / "schedule", staging / "job" / "heartbeat"):
        edit(path, '"json_heartbeat"', '"json_pulse"')
    staging.rename(workflows / "json_pulse")
    [added] = watch.take(lambda e: e.type != Event.TYPE_SUBSCRIBED)
    assert (added.type, added.cluster, added.workflow) == (Event.TYPE_ADDED, JS, "json_pulse")
    assert added.old_fingerprint == ""
    pulse = get_spec(stub, "json_pulse", JS)
    assert pulse.fingerprint == added.new_fingerprint
    assert pulse.spec.schedule.recurrence_seconds == 1800

    # Delete one.
    shutil.rmtree(workflows / "json_weekly_compaction")
    [removed] = watch.take(lambda e: e.type != Event.TYPE_SUBSCRIBED)
    assert (removed.type, removed.workflow) == (Event.TYPE_REMOVED, "json_weekly_compaction")
    assert removed.old_fingerprint == before["json_weekly_compaction"]
    assert removed.new_fingerprint == ""
    error = rpc_error(get_spec, stub, "json_weekly_compaction", JS)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert sorted(fingerprints(stub, JS)) == [
        "json_daily_rollup", "json_heartbeat", "json_pulse", "json_table_sync"]
    # A run bound to the removed layout can still get its tokens.
    pinned = stub.GetJobTokens(pb.GetJobTokensRequest(
        cluster=JS, workflow="json_weekly_compaction", run_time=RUN,
        fingerprint=before["json_weekly_compaction"], manual=True))
    assert pinned.fingerprint == before["json_weekly_compaction"]
    assert sorted(t.job for t in pinned.jobs) == ["CompactPartitionsJob", "VacuumTablesJob"]
    assert [e.type for e in watch.seen] == [Event.TYPE_SUBSCRIBED, Event.TYPE_CHANGED,
                                            Event.TYPE_ADDED, Event.TYPE_REMOVED]


def test_last_known_good_after_a_syntax_error(start_server, stub_for, example_copy,
                                              watch_events):
    repo = example_copy("python_repo")
    server = start_server(example_clusters(python_repo=repo))
    stub = stub_for(server)
    before = fingerprints(stub, PY)
    info_before = {c.name: c for c in stub.GetServerInfo(pb.GetServerInfoRequest()).clusters}[PY]
    tokens_before = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY,
                                                             workflow="daily_reporting",
                                                             run_time=RUN))
    watch = watch_events(stub, PY)
    watch.subscribed()

    module = repo / "example_workflows" / "ingest.py"
    original = module.read_text()
    broken_line = original.count("\n") + 1
    write(module, original + "def broken(:\n")

    broken = watch.take(lambda e: e.type == Event.TYPE_BROKEN, count=7)
    assert sorted(e.workflow for e in broken) == sorted(before)
    for event in broken:
        # The last good version stays: the event says which one is still served.
        assert event.old_fingerprint == event.new_fingerprint == before[event.workflow]
        assert [(e.kind, e.file, e.line) for e in event.errors] == [
            (pb.ERROR_KIND_SYNTAX_ERROR, "example_workflows/ingest.py", broken_line)]

    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY))
    assert {w.name: w.fingerprint for w in listing.workflows} == before
    for summary in listing.workflows:
        assert summary.status == pb.PARSE_STATUS_STALE
        assert [e.kind for e in summary.errors] == [pb.ERROR_KIND_SYNTAX_ERROR]
        assert summary.job_count > 0 and summary.HasField("schedule")
    assert [(e.kind, e.file, e.line) for e in listing.cluster_errors] == [
        (pb.ERROR_KIND_SYNTAX_ERROR, "example_workflows/ingest.py", broken_line)]

    spec = get_spec(stub, "daily_reporting")
    assert spec.status == pb.PARSE_STATUS_STALE
    assert spec.fingerprint == before["daily_reporting"]
    assert [(e.kind, e.file, e.line) for e in spec.errors] == [
        (pb.ERROR_KIND_SYNTAX_ERROR, "example_workflows/ingest.py", broken_line)]
    assert "ingest.py" in spec.errors[0].file and spec.errors[0].message
    tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                      run_time=RUN))
    assert tokens.status == pb.PARSE_STATUS_STALE
    assert list(tokens.jobs) == list(tokens_before.jobs)
    resolved = stub.ResolveMigration(pb.ResolveMigrationRequest(
        cluster=PY, workflow="event_ingest", migration_time=RUN))
    assert resolved.status == pb.PARSE_STATUS_STALE and len(resolved.errors) == 1

    info = {c.name: c for c in stub.GetServerInfo(pb.GetServerInfoRequest()).clusters}[PY]
    assert (info.state, info.workflow_count, info.ok_count, info.stale_count,
            info.broken_count) == (pb.LOAD_STATE_READY, 7, 0, 7, 0)
    assert [(e.kind, e.file, e.line) for e in info.errors] == [
        (pb.ERROR_KIND_SYNTAX_ERROR, "example_workflows/ingest.py", broken_line)]
    assert info.last_success_time == info_before.last_success_time
    assert info.last_load_time.ToNanoseconds() > info_before.last_load_time.ToNanoseconds()

    # Fixing the file brings every workflow back to OK with the same fingerprints.
    write(module, original)
    fixed = watch.take(lambda e: e.type == Event.TYPE_CHANGED, count=7)
    assert sorted(e.workflow for e in fixed) == sorted(before)
    assert all(e.old_fingerprint == e.new_fingerprint == before[e.workflow] for e in fixed)
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY))
    assert all(w.status == pb.PARSE_STATUS_OK and not w.errors for w in listing.workflows)
    assert list(listing.cluster_errors) == []
    spec = get_spec(stub, "daily_reporting")
    assert spec.status == pb.PARSE_STATUS_OK and list(spec.errors) == []
    info = {c.name: c for c in stub.GetServerInfo(pb.GetServerInfoRequest()).clusters}[PY]
    assert (info.ok_count, info.stale_count, list(info.errors)) == (7, 0, [])
    assert info.last_success_time.ToNanoseconds() > info_before.last_success_time.ToNanoseconds()


def test_one_broken_workflow_keeps_its_last_good_version(start_server, stub_for, example_copy,
                                                         watch_events):
    repo = example_copy("python_repo")
    stub = stub_for(start_server(example_clusters(python_repo=repo)))
    before = fingerprints(stub, PY)
    watch = watch_events(stub, PY)
    watch.subscribed()
    maintenance = repo / "example_workflows" / "maintenance.py"
    original = maintenance.read_text()
    edit(maintenance, "dependency=['snapshot_db']", "dependency=['snapshot_dbb']")
    [event] = watch.take(lambda e: e.type != Event.TYPE_SUBSCRIBED)
    assert (event.type, event.workflow) == (Event.TYPE_BROKEN, "db_backup")
    assert [(e.kind, e.job) for e in event.errors] == [(pb.ERROR_KIND_MISSING_PARENT,
                                                        "verify_snapshot")]
    listing = {w.name: w for w in stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY)).workflows}
    assert listing["db_backup"].status == pb.PARSE_STATUS_STALE
    assert listing["db_backup"].fingerprint == before["db_backup"]
    assert all(w.status == pb.PARSE_STATUS_OK for n, w in listing.items() if n != "db_backup")
    write(maintenance, original)
    [event] = watch.take(lambda e: e.type != Event.TYPE_SUBSCRIBED)
    assert (event.type, event.workflow) == (Event.TYPE_CHANGED, "db_backup")
    assert get_spec(stub, "db_backup").status == pb.PARSE_STATUS_OK


def test_the_served_fingerprint_asked_by_name_reports_the_served_status(
        start_server, stub_for, example_copy):
    """Asked by its fingerprint, the version served now answers with the workflow's status
    and errors, also once it has left the in-memory versions for the history (as with
    more than 4,096 of them) and comes back as another object."""
    repo = example_copy("python_repo")
    server = start_server(example_clusters(python_repo=repo))
    stub = stub_for(server)
    before = fingerprints(stub, PY)["db_backup"]
    edit(repo / "example_workflows" / "maintenance.py", "dependency=['snapshot_db']",
         "dependency=['snapshot_dbb']")
    wait_for(lambda: get_spec(stub, "db_backup").status == pb.PARSE_STATUS_STALE, timeout=60,
             message="db_backup to go stale")
    server.catalog._versions.clear()
    pinned = get_spec(stub, "db_backup", fingerprint=before)
    assert (pinned.fingerprint, pinned.status) == (before, pb.PARSE_STATUS_STALE)
    assert [(e.kind, e.job) for e in pinned.errors] == [(pb.ERROR_KIND_MISSING_PARENT,
                                                         "verify_snapshot")]


EXTRA_MODULE = """from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

WORKFLOWS = {
    'extra_daily': WorkflowConfig(
        jobs={'work': JobConfig(CommandJobTemplate('work', 'echo work'))},
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
}
"""


def test_a_missing_module_arriving_later_is_noticed(start_server, stub_for, example_copy,
                                                    watch_events):
    """A checkout may write the importing module before the module it imports."""
    repo = example_copy("python_repo")
    stub = stub_for(start_server(example_clusters(python_repo=repo)))
    before = fingerprints(stub, PY)
    watch = watch_events(stub, PY)
    watch.subscribed()
    package = repo / "example_workflows"
    edit(package / "workflows.py", "from example_workflows import ingest, maintenance, reporting",
         "from example_workflows import extra, ingest, maintenance, reporting")
    edit(package / "workflows.py", "WORKFLOWS.update(maintenance.WORKFLOWS)",
         "WORKFLOWS.update(maintenance.WORKFLOWS)\nWORKFLOWS.update(extra.WORKFLOWS)")
    broken = watch.take(lambda e: e.type == Event.TYPE_BROKEN, count=7)
    assert {e.errors[0].kind for e in broken} == {pb.ERROR_KIND_IMPORT_ERROR}
    assert all(e.errors[0].file == "example_workflows/workflows.py" for e in broken)

    write(package / "extra.py", EXTRA_MODULE)
    events = watch.take(lambda e: e.type in (Event.TYPE_CHANGED, Event.TYPE_ADDED), count=8)
    assert sorted((e.type, e.workflow) for e in events) == sorted(
        [(Event.TYPE_ADDED, "extra_daily")]
        + [(Event.TYPE_CHANGED, name) for name in before])
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY))
    assert [w.name for w in listing.workflows] == sorted([*before, "extra_daily"])
    assert all(w.status == pb.PARSE_STATUS_OK for w in listing.workflows)


def test_pinball_yaml_edit_is_noticed(start_server, stub_for, example_copy, watch_events):
    repo = example_copy("python_repo")
    stub = stub_for(start_server(example_clusters(python_repo=repo)))
    before = fingerprints(stub, PY)
    watch = watch_events(stub, PY)
    watch.subscribed()
    edit(repo / "pinball.yaml", "env: example", "env: staging")
    # Every workflow has a JobTemplate job, whose command carries the job_params.
    changed = watch.take(lambda e: e.type == Event.TYPE_CHANGED, count=7)
    assert sorted(e.workflow for e in changed) == sorted(before)
    assert all(e.new_fingerprint != before[e.workflow] for e in changed)
    tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                      run_time=RUN, jobs=["load_events"]))
    assert 'job_params="env=staging,end_date=2020-01-01"' in tokens.jobs[0].command


def test_pinned_fingerprint_survives_a_restart(start_server, stub_for, example_copy, tmp_path):
    repo = example_copy("python_repo")
    state = tmp_path / "kept-state"
    first = start_server(example_clusters(python_repo=repo), state_dir=state)
    stub = stub_for(first)
    old = get_spec(stub, "daily_reporting")
    old_tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                          run_time=RUN))
    edit(repo / "example_workflows" / "reporting.py",
         "JobTemplate('PublishDashboardJob', max_attempts=3",
         "JobTemplate('PublishDashboardJob', max_attempts=5")
    new = wait_for(lambda: (lambda r: r if r.fingerprint != old.fingerprint else None)(
        get_spec(stub, "daily_reporting")), message="the edit to be served")
    assert job(new, "publish_dashboard").max_attempts == 5
    first.stop(grace=1)

    second = start_server(example_clusters(python_repo=repo), state_dir=state)
    stub = stub_for(second)
    assert get_spec(stub, "daily_reporting").fingerprint == new.fingerprint
    pinned = get_spec(stub, "daily_reporting", fingerprint=old.fingerprint)
    assert pinned.fingerprint == old.fingerprint
    assert pinned.status == pb.PARSE_STATUS_OK
    pinned.spec.schedule.ClearField("next_run_time")
    old.spec.schedule.ClearField("next_run_time")
    assert pinned.spec == old.spec
    tokens = stub.GetJobTokens(pb.GetJobTokensRequest(
        cluster=PY, workflow="daily_reporting", run_time=RUN, fingerprint=old.fingerprint))
    assert tokens == old_tokens
    parsed = stub.GetJobToken(pb.GetJobTokenRequest(cluster=PY, workflow="daily_reporting",
                                                    job="publish_dashboard", run_time=RUN,
                                                    fingerprint=old.fingerprint))
    assert parsed.token.max_attempts == 3 and parsed.spec.max_attempts == 3

    # It is the state directory that kept it: a server with a fresh one does not know it.
    fresh = stub_for(start_server(example_clusters(python_repo=repo),
                                  state_dir=tmp_path / "fresh-state"))
    error = rpc_error(get_spec, fresh, "daily_reporting", fingerprint=old.fingerprint)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert old.fingerprint in error.details()


@pytest.mark.parametrize("copy_repos", [False, True], ids=["same-folder", "copied-elsewhere"])
def test_fingerprints_are_stable_across_restarts(start_server, stub_for, example_copy, tmp_path,
                                                 copy_repos):
    first = start_server(state_dir=tmp_path / "state-one")
    stub = stub_for(first)
    expected = {cluster: fingerprints(stub, cluster) for cluster in (PY, JS)}
    first.stop(grace=1)
    clusters = example_clusters()
    if copy_repos:
        clusters = example_clusters(example_copy("python_repo"), example_copy("json_repo"))
        assert clusters[PY]["repo"] != str(EXAMPLES / "python_repo")
    second = start_server(clusters, state_dir=tmp_path / "state-two")
    stub = stub_for(second)
    assert {cluster: fingerprints(stub, cluster) for cluster in (PY, JS)} == expected
    assert len(expected[PY]) == 7 and len(expected[JS]) == 4


def test_same_size_rewrite_within_the_timestamp_granularity_is_noticed(tmp_path):
    """The catalog's file watch trusts stat signatures only once they are old enough: a file
    rewritten with the same size and, on a coarse clock, the same mtime is still re-hashed."""
    from legacy_parser.digests import file_digest
    from token_fetcher.watch import FileWatch

    path = tmp_path / "workflows.py"
    path.write_text("PRIORITY = 30\n")
    watch = FileWatch()
    watch.reset({str(path): file_digest(str(path))}, [])
    assert watch.changed() == []  # the poll records the file's signature
    mtime = path.stat().st_mtime_ns
    with open(path, "r+") as handle:  # same inode, same size
        handle.write("PRIORITY = 31\n")
    os.utime(path, ns=(mtime, mtime))  # the same timestamp tick as the first write
    assert watch.changed() == [str(path)]
    assert watch.changed() == []  # noticed once; the re-parse it starts resets the watch
