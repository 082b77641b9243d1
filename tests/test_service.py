"""Every TokenFetcher RPC and every error code, against a real server on loopback."""

from __future__ import annotations

import calendar
import json
import shutil
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.helpers import (
    blocking_repo,
    example_clusters,
    health_at,
    recomputed_fingerprint,
    rpc_error,
    wait_for,
)
from token_fetcher import __version__, convert
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.config import parse_config
from token_fetcher.server import TokenFetcherServer

PY = "example_python"
JS = "example_json"
PYTHON_WORKFLOWS = {  # name -> job count, the final job included
    "daily_reporting": 6, "db_backup": 3, "event_ingest": 5, "failure_drill": 4,
    "hourly_metrics": 3, "partner_ingest": 4, "weekly_cleanup": 4,
}
JSON_WORKFLOWS = {"json_daily_rollup": 5, "json_heartbeat": 1, "json_table_sync": 2,
                  "json_weekly_compaction": 2}
RUNNER = ("cd . && python -m pinball_ext.job.job_runner "
          "--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS ")
Code = grpc.StatusCode


def utc(*fields: int) -> int:
    return calendar.timegm((*fields, 0, 0, 0, 0, 0, 0)[:6])


def stamp(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server over the bundled examples, shared by the read-only tests of this module."""
    base = tmp_path_factory.mktemp("served")
    config = parse_config({"listen": "127.0.0.1:0", "metrics": "", "state_dir": str(base / "state"),
                           "poll_interval_seconds": 0.05, "clusters": example_clusters()}, base)
    server = TokenFetcherServer(config, shutdown_notice_seconds=0)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        assert server.catalog.wait_ready(60), "first load did not finish"
        yield server, pb_grpc.TokenFetcherStub(channel)
    finally:
        channel.close()
        server.stop(grace=1)


@pytest.fixture
def stub(served) -> pb_grpc.TokenFetcherStub:
    return served[1]


def spec_of(stub, workflow: str, cluster: str = PY) -> pb.GetWorkflowSpecResponse:
    return stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=cluster, workflow=workflow))


# --- ListWorkflows ----------------------------------------------------------------------


def test_list_workflows_python_cluster(stub):
    before = int(time.time())
    response = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY))
    after = int(time.time())
    assert [w.name for w in response.workflows] == sorted(PYTHON_WORKFLOWS)
    assert response.total_size == 7
    assert response.next_page_token == ""
    assert list(response.cluster_errors) == []
    for summary in response.workflows:
        assert summary.status == pb.PARSE_STATUS_OK, summary
        assert list(summary.errors) == []
        assert summary.job_count == PYTHON_WORKFLOWS[summary.name]
        assert len(summary.fingerprint) == 32 and int(summary.fingerprint, 16) >= 0
        schedule = summary.schedule
        next_run = schedule.next_run_time.seconds
        assert before < next_run <= after + schedule.recurrence_seconds
        assert (next_run - schedule.reference_time.seconds) % schedule.recurrence_seconds == 0
    assert len({w.fingerprint for w in response.workflows}) == 7

    daily = response.workflows[0]
    assert daily.name == "daily_reporting"
    assert daily.schedule.reference_time.seconds == utc(2015, 1, 1, 6)
    assert daily.schedule.recurrence_seconds == 86400
    assert daily.schedule.overrun_policy == pb.OVERRUN_POLICY_DELAY_UNTIL_SUCCESS
    assert daily.schedule.max_running_instances == 2
    assert list(daily.schedule.emails) == ["reporting-oncall@example.com", "analytics@example.com"]
    by_name = {w.name: w for w in response.workflows}
    event_ingest = by_name["event_ingest"].schedule
    assert (event_ingest.reference_time.seconds, event_ingest.recurrence_seconds,
            event_ingest.overrun_policy, event_ingest.max_running_instances) == (
        utc(2015, 1, 1), 7 * 3600, pb.OVERRUN_POLICY_ABORT_RUNNING, 1)
    # PinballConfig.DEFAULT_EMAIL comes from pinball.yaml's default_email.
    assert list(by_name["hourly_metrics"].schedule.emails) == ["pinball-alerts@example.com"]
    # The fingerprint is the same one GetWorkflowSpec reports.
    assert spec_of(stub, "daily_reporting").fingerprint == daily.fingerprint


def test_list_workflows_json_cluster(stub):
    response = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=JS))
    assert {w.name: w.job_count for w in response.workflows} == JSON_WORKFLOWS
    assert [w.name for w in response.workflows] == sorted(JSON_WORKFLOWS)
    assert response.total_size == 4
    heartbeat = response.workflows[1].schedule
    assert heartbeat.reference_time.seconds == utc(2015, 1, 1, 0, 15)
    assert heartbeat.recurrence_seconds == 1800
    assert heartbeat.overrun_policy == pb.OVERRUN_POLICY_SKIP


@pytest.mark.parametrize("page_size", [1, 2, 3, 6])
def test_list_workflows_paging(stub, page_size):
    full = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY, page_size=1000))
    names, token, pages = [], "", 0
    while True:
        page = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY, page_size=page_size,
                                                          page_token=token))
        pages += 1
        assert page.total_size == 7
        assert len(page.workflows) == min(page_size, 7 - len(names))
        names += [w.name for w in page.workflows]
        # Pages carry the same summaries as the full listing.
        assert list(page.workflows) == list(full.workflows)[len(names) - len(page.workflows):
                                                             len(names)]
        token = page.next_page_token
        if not token:
            break
        assert pages < 10, "paging does not end"
    assert names == sorted(PYTHON_WORKFLOWS)
    assert pages == -(-7 // page_size)


def test_list_workflows_page_size_zero_means_default(stub):
    response = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY, page_size=0))
    assert len(response.workflows) == 7 and response.next_page_token == ""


def test_list_workflows_exact_page_boundary_has_no_token(stub):
    response = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY, page_size=7))
    assert len(response.workflows) == 7
    assert response.next_page_token == ""


# --- GetWorkflowSpec --------------------------------------------------------------------


def test_get_workflow_spec_python(stub):
    response = spec_of(stub, "daily_reporting")
    spec = response.spec
    assert response.status == pb.PARSE_STATUS_OK
    assert not response.not_modified
    assert list(response.errors) == []
    assert response.fingerprint == recomputed_fingerprint(spec)
    assert (spec.cluster, spec.name, spec.final_job, spec.format) == (
        PY, "daily_reporting", "final", pb.DEFINITION_FORMAT_PYTHON)
    assert [job.name for job in spec.jobs] == [
        "engagement_report", "final", "job_code_deployed", "load_events", "publish_dashboard",
        "revenue_report"]
    assert list(spec.notify_emails) == ["reporting-oncall@example.com", "analytics@example.com"]
    assert (spec.source.file, spec.source.line) == ("example_workflows/reporting.py", 51)
    assert spec.schedule.reference_time.seconds == utc(2015, 1, 1, 6)
    assert spec.schedule.next_run_time.seconds > time.time() - 1
    jobs = {job.name: job for job in spec.jobs}

    load = jobs["load_events"]
    assert load.kind == pb.JOB_KIND_JOB
    assert (load.template, load.template_name) == (
        "example_workflows.templates.EmrJobTemplate", "LoadEventsJob")
    assert list(load.parents) == ["job_code_deployed"]
    assert list(load.children) == ["revenue_report", "engagement_report"]
    assert list(load.inputs) == ["job_code_deployed"]
    assert list(load.outputs) == ["revenue_report", "engagement_report"]
    assert (load.priority, load.score, load.token_priority) == (30.0, 38.5, 38.5)
    assert load.max_attempts == 2
    assert load.executor == "emr"
    assert [(kv.key, kv.value) for kv in load.executor_config] == [
        ("cluster_id", "j-EXAMPLE0001"), ("queue", "reporting")]
    assert list(load.command.segments) == [
        RUNNER + '--job_class_name=LoadEventsJob --job_params="env=example,end_date=',
        '" --executor=emr --executor_config="cluster_id=j-EXAMPLE0001,queue=reporting" ']
    assert (load.source.file, load.source.line) == ("example_workflows/reporting.py", 21)
    assert not load.HasField("warn_timeout_seconds") and not load.HasField("cleanup_template")

    condition = jobs["job_code_deployed"]
    assert condition.kind == pb.JOB_KIND_CONDITION
    assert list(condition.inputs) == ["__WORKFLOW_START__"]
    assert (condition.max_attempts, condition.retry_delay_seconds) == (12, 600)
    assert (condition.score, condition.token_priority) == (39.5, 0.0)
    assert list(condition.command.segments) == ["test -e example_jobs"]

    engagement = jobs["engagement_report"]
    assert (engagement.warn_timeout_seconds, engagement.abort_timeout_seconds) == (7200, 14400)
    assert engagement.HasField("warn_timeout_seconds")
    assert (engagement.priority, engagement.score) == (5.5, 7.5)
    assert jobs["revenue_report"].write_lock == "reporting_db"
    assert list(jobs["final"].parents) == ["publish_dashboard"]
    assert list(jobs["final"].children) == []


def test_get_workflow_spec_json(stub):
    response = spec_of(stub, "json_daily_rollup", cluster=JS)
    spec = response.spec
    assert (spec.cluster, spec.name, spec.final_job, spec.format) == (
        JS, "json_daily_rollup", "", pb.DEFINITION_FORMAT_JSON)
    assert response.fingerprint == recomputed_fingerprint(spec)
    assert len(spec.jobs) == 5
    assert [job.name for job in spec.jobs] == sorted(job.name for job in spec.jobs)
    # JSON-format jobs put 0 on the token, whatever their score.
    assert all(job.token_priority == 0.0 for job in spec.jobs)
    assert any(job.kind == pb.JOB_KIND_CONDITION for job in spec.jobs)


def test_get_workflow_spec_if_none_match(stub):
    current = spec_of(stub, "event_ingest")
    unchanged = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
        cluster=PY, workflow="event_ingest", if_none_match=current.fingerprint))
    assert unchanged.not_modified
    assert unchanged.fingerprint == current.fingerprint
    assert not unchanged.HasField("spec")
    assert unchanged.status == pb.PARSE_STATUS_OK
    other = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
        cluster=PY, workflow="event_ingest", if_none_match="0" * 32))
    assert not other.not_modified
    assert other.spec == current.spec


def test_get_workflow_spec_pinned_to_current_fingerprint(stub):
    current = spec_of(stub, "weekly_cleanup")
    pinned = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
        cluster=PY, workflow="weekly_cleanup", fingerprint=current.fingerprint))
    assert pinned.fingerprint == current.fingerprint
    assert pinned.spec == current.spec
    assert pinned.status == pb.PARSE_STATUS_OK
    both = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
        cluster=PY, workflow="weekly_cleanup", fingerprint=current.fingerprint,
        if_none_match=current.fingerprint))
    assert both.not_modified and not both.HasField("spec")


# --- GetJobTokens and GetJobToken ------------------------------------------------------


def test_get_job_tokens_daily(stub):
    run = utc(2020, 1, 2, 6)
    response = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                        run_time=stamp(run)))
    assert (response.cluster, response.workflow) == (PY, "daily_reporting")
    assert response.fingerprint == spec_of(stub, "daily_reporting").fingerprint
    assert response.run_time.seconds == run
    assert response.instance == "1577944800000"
    assert response.end_date == "2020-01-01"
    assert response.status == pb.PARSE_STATUS_OK
    prefix = "/workflow/daily_reporting/1577944800000"
    assert [token.name for token in response.jobs] == [
        f"{prefix}/job/waiting/{name}" for name in (
            "engagement_report", "final", "job_code_deployed", "load_events",
            "publish_dashboard", "revenue_report")]
    tokens = {token.job: token for token in response.jobs}
    load = tokens["load_events"]
    assert load.payload_name == "LoadEventsJob"
    assert load.command == (
        RUNNER + '--job_class_name=LoadEventsJob --job_params="env=example,end_date=2020-01-01" '
        '--executor=emr --executor_config="cluster_id=j-EXAMPLE0001,queue=reporting" ')
    assert list(load.inputs) == ["job_code_deployed"]
    assert list(load.outputs) == ["revenue_report", "engagement_report"]
    assert (load.priority, load.max_attempts, load.is_condition) == (38.5, 2, False)
    assert {job: token.priority for job, token in tokens.items()} == {
        "engagement_report": 7.5, "final": 1.0, "job_code_deployed": 0.0, "load_events": 38.5,
        "publish_dashboard": 2.0, "revenue_report": 3.0}
    assert tokens["job_code_deployed"].is_condition
    assert tokens["job_code_deployed"].command == "test -e example_jobs"
    assert tokens["final"].command == 'echo "daily_reporting done"'
    assert (tokens["engagement_report"].warn_timeout_seconds,
            tokens["engagement_report"].abort_timeout_seconds) == (7200, 14400)
    assert list(tokens["publish_dashboard"].emails) == ["reporting-oncall@example.com"]
    assert [(e.name, e.job) for e in response.events] == [(
        f"{prefix}/input/job_code_deployed/__WORKFLOW_START__/workflow_start_event",
        "job_code_deployed")]
    schedule = response.schedule
    assert schedule.name == "/schedule/workflow/daily_reporting"
    assert schedule.next_run_time.seconds == utc(2020, 1, 3, 6)
    assert (schedule.recurrence_seconds, schedule.overrun_policy, schedule.workflow,
            schedule.max_running_instances) == (
        86400, pb.OVERRUN_POLICY_DELAY_UNTIL_SUCCESS, "daily_reporting", 2)
    assert list(schedule.emails) == ["reporting-oncall@example.com", "analytics@example.com"]


def test_get_job_tokens_end_date_is_the_day_before_the_run(stub):
    # event_ingest runs every 7 hours (its grid meets midnight every 7th day): a run at
    # midnight belongs to the previous day.
    for run, end_date in ((utc(2020, 1, 1, 17), "2019-12-31"), (utc(2020, 1, 2), "2020-01-01"),
                          (utc(2020, 1, 2, 7), "2020-01-01")):
        response = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="event_ingest",
                                                            run_time=stamp(run)))
        assert response.end_date == end_date
        assert response.instance == str(run * 1000)
        fetch = next(t for t in response.jobs if t.job == "fetch_logs")
        assert fetch.command == 'cd . && echo "fetching logs for $(date -u +%Y%m%d)"'
        notify = next(t for t in response.jobs if t.job == "notify_child")
        assert notify.command == 'echo "child: %(a_cmd_key)s"'
        assert response.schedule.next_run_time.seconds == run + 7 * 3600


def test_get_job_tokens_job_filter(stub):
    run = utc(2020, 1, 2, 6)
    request = pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting", run_time=stamp(run),
                                     jobs=["load_events", "job_code_deployed"])
    response = stub.GetJobTokens(request)
    assert [token.job for token in response.jobs] == ["job_code_deployed", "load_events"]
    assert [event.job for event in response.events] == ["job_code_deployed"]
    full = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                    run_time=stamp(run)))
    assert {t.job: t for t in full.jobs}["load_events"] == response.jobs[1]
    only_load = stub.GetJobTokens(pb.GetJobTokensRequest(
        cluster=PY, workflow="daily_reporting", run_time=stamp(run), jobs=["load_events"]))
    assert [token.job for token in only_load.jobs] == ["load_events"]
    assert list(only_load.events) == []
    assert only_load.schedule == full.schedule


def test_get_job_tokens_pinned_fingerprint(stub):
    run = utc(2021, 6, 1, 1, 15)
    current = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="db_backup",
                                                       run_time=stamp(run)))
    pinned = stub.GetJobTokens(pb.GetJobTokensRequest(
        cluster=PY, workflow="db_backup", run_time=stamp(run), fingerprint=current.fingerprint))
    assert pinned == current
    assert current.end_date == "2021-05-31"


def test_get_job_token(stub):
    run = utc(2020, 1, 2, 6)
    response = stub.GetJobToken(pb.GetJobTokenRequest(cluster=PY, workflow="daily_reporting",
                                                      job="revenue_report", run_time=stamp(run)))
    tokens = stub.GetJobTokens(pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                      run_time=stamp(run)))
    spec = spec_of(stub, "daily_reporting")
    assert response.fingerprint == spec.fingerprint
    assert response.status == pb.PARSE_STATUS_OK
    assert response.token == {t.job: t for t in tokens.jobs}["revenue_report"]
    assert response.spec == {j.name: j for j in spec.spec.jobs}["revenue_report"]
    assert response.token.command.endswith("--write_lock=reporting_db ")
    pinned = stub.GetJobToken(pb.GetJobTokenRequest(cluster=PY, workflow="daily_reporting",
                                                    job="revenue_report", run_time=stamp(run),
                                                    fingerprint=spec.fingerprint))
    assert pinned == response


# --- ResolveMigration and BatchResolveMigrations ---------------------------------------


def resolve(stub, workflow: str, migration: int, **fields) -> pb.ResolveMigrationResponse:
    return stub.ResolveMigration(pb.ResolveMigrationRequest(
        cluster=PY, workflow=workflow, migration_time=stamp(migration), **fields))


@pytest.mark.parametrize("migration, last_legacy, first_new", [
    # Between two runs: the run before is Pinball's, the run after is Airflow's first.
    (utc(2020, 1, 1), utc(2019, 12, 31, 6), utc(2020, 1, 1, 6)),
    # Exactly on a run: that run is still Pinball's.
    (utc(2020, 1, 1, 6), utc(2020, 1, 1, 6), utc(2020, 1, 2, 6)),
    (utc(2020, 1, 1, 6, 0, 1), utc(2020, 1, 1, 6), utc(2020, 1, 2, 6)),
    (utc(2020, 1, 1, 5, 59, 59), utc(2019, 12, 31, 6), utc(2020, 1, 1, 6)),
])
def test_resolve_migration_daily(stub, migration, last_legacy, first_new):
    response = resolve(stub, "daily_reporting", migration)
    assert response.handover.migration_time.seconds == migration
    assert response.handover.last_legacy_run_time.seconds == last_legacy
    assert response.handover.first_new_run_time.seconds == first_new
    assert response.status == pb.PARSE_STATUS_OK
    assert list(response.errors) == []
    assert not response.not_modified
    current = spec_of(stub, "daily_reporting")
    assert response.fingerprint == current.fingerprint
    assert response.spec == current.spec


@pytest.mark.parametrize("migration, last_legacy, first_new", [
    # 2019-12-31 20:00 is reference + 6260 * 7 h; the next run crosses midnight.
    (utc(2020, 1, 1), utc(2019, 12, 31, 20), utc(2020, 1, 1, 3)),
    (utc(2020, 1, 1, 3), utc(2020, 1, 1, 3), utc(2020, 1, 1, 10)),
    (utc(2020, 1, 1, 9, 59, 59), utc(2020, 1, 1, 3), utc(2020, 1, 1, 10)),
])
def test_resolve_migration_seven_hourly(stub, migration, last_legacy, first_new):
    response = resolve(stub, "event_ingest", migration)
    assert response.handover.last_legacy_run_time.seconds == last_legacy
    assert response.handover.first_new_run_time.seconds == first_new
    assert (first_new - utc(2015, 1, 1)) % (7 * 3600) == 0
    assert response.spec.schedule.recurrence_seconds == 7 * 3600


def test_resolve_migration_before_the_reference_time(stub):
    response = resolve(stub, "daily_reporting", utc(2014, 12, 31))
    assert not response.handover.HasField("last_legacy_run_time")
    assert response.handover.first_new_run_time.seconds == utc(2015, 1, 1, 6)


def test_resolve_migration_if_none_match(stub):
    fingerprint = spec_of(stub, "daily_reporting").fingerprint
    response = resolve(stub, "daily_reporting", utc(2020, 1, 1), if_none_match=fingerprint)
    assert response.not_modified and response.fingerprint == fingerprint
    assert not response.HasField("spec")
    # The handover is still answered: it depends on the migration date, not the layout.
    assert response.handover.first_new_run_time.seconds == utc(2020, 1, 1, 6)


def test_batch_resolve_migrations_with_missing_workflow(stub):
    items = [
        pb.ResolveMigrationRequest(cluster=PY, workflow="daily_reporting",
                                   migration_time=stamp(utc(2020, 1, 1))),
        pb.ResolveMigrationRequest(cluster=PY, workflow="no_such_workflow",
                                   migration_time=stamp(utc(2020, 1, 1))),
        pb.ResolveMigrationRequest(cluster=PY, workflow="event_ingest",
                                   migration_time=stamp(utc(2020, 1, 1))),
        pb.ResolveMigrationRequest(cluster="no_such_cluster", workflow="x",
                                   migration_time=stamp(utc(2020, 1, 1))),
        pb.ResolveMigrationRequest(cluster=JS, workflow="json_heartbeat"),
    ]
    response = stub.BatchResolveMigrations(pb.BatchResolveMigrationsRequest(migrations=items))
    results = list(response.results)
    assert len(results) == 5
    for index in (0, 2):
        assert not results[index].HasField("error")
        assert results[index].response == stub.ResolveMigration(items[index])
    assert results[0].response.handover.first_new_run_time.seconds == utc(2020, 1, 1, 6)
    assert results[2].response.handover.first_new_run_time.seconds == utc(2020, 1, 1, 3)
    missing = results[1]
    assert missing.WhichOneof("result") == "error"
    assert missing.error.code == Code.NOT_FOUND.value[0]
    assert "no_such_workflow" in missing.error.message and PY in missing.error.message
    assert results[3].error.code == Code.NOT_FOUND.value[0]
    assert "no_such_cluster" in results[3].error.message
    assert results[4].error.code == Code.INVALID_ARGUMENT.value[0]
    assert "migration_time" in results[4].error.message


@pytest.mark.parametrize("jobs", [0, 40, 2000])  # one-, two- and three-byte lengths
def test_a_kept_spec_goes_into_an_answer_as_protobuf_writes_it(jobs):
    spec = pb.WorkflowSpec(cluster=PY, name="wide",
                           jobs=[pb.JobSpec(name=f"job_{index:04d}") for index in range(jobs)])
    assert convert.message_field(3, spec.SerializeToString()) == \
        pb.ResolveMigrationResponse(spec=spec).SerializeToString()
    answer = (pb.ResolveMigrationResponse(fingerprint="f" * 32).SerializeToString()
              + convert.message_field(3, spec.SerializeToString()))
    assert pb.ResolveMigrationResponse.FromString(answer) == \
        pb.ResolveMigrationResponse(fingerprint="f" * 32, spec=spec)
    # A field number past 15 takes a two-byte key.
    source = pb.SourceLocation(file="example_workflows/maintenance.py", line=12)
    assert convert.message_field(22, source.SerializeToString()) == \
        pb.JobSpec(source=source).SerializeToString()


def test_a_batch_answers_not_modified_as_the_single_call_does(stub):
    fingerprint = spec_of(stub, "daily_reporting").fingerprint
    item = pb.ResolveMigrationRequest(cluster=PY, workflow="daily_reporting",
                                      migration_time=stamp(utc(2020, 1, 1)),
                                      if_none_match=fingerprint)
    [result] = stub.BatchResolveMigrations(pb.BatchResolveMigrationsRequest(
        migrations=[item])).results
    assert result.response == stub.ResolveMigration(item)
    assert result.response.not_modified and not result.response.HasField("spec")


def test_batch_resolve_migrations_empty_and_too_many(stub):
    assert list(stub.BatchResolveMigrations(pb.BatchResolveMigrationsRequest()).results) == []
    item = pb.ResolveMigrationRequest(cluster=PY, workflow="daily_reporting",
                                      migration_time=stamp(utc(2020, 1, 1)))
    error = rpc_error(stub.BatchResolveMigrations,
                      pb.BatchResolveMigrationsRequest(migrations=[item] * 10001))
    assert error.code() == Code.INVALID_ARGUMENT
    assert "10000" in error.details() and "10001" in error.details()


# --- WatchWorkflows, Reload, GetServerInfo ---------------------------------------------


def test_watch_workflows_subscribes(stub, watch_events):
    for cluster in (PY, ""):
        watch = watch_events(stub, cluster)
        first = watch.subscribed()
        assert first.cluster == cluster
        assert abs(first.event_time.seconds - time.time()) < 60


def test_watch_workflows_unknown_cluster(stub):
    error = rpc_error(lambda: list(stub.WatchWorkflows(
        pb.WatchWorkflowsRequest(cluster="no_such_cluster"), timeout=10)))
    assert error.code() == Code.NOT_FOUND
    assert "no_such_cluster" in error.details()


def test_reload_unchanged(stub):
    response = stub.Reload(pb.ReloadRequest(cluster=PY))
    assert (response.added, response.changed, response.removed, response.broken) == (0, 0, 0, 0)
    info = response.cluster
    assert (info.name, info.state, info.workflow_count, info.ok_count, info.job_count) == (
        PY, pb.LOAD_STATE_READY, 7, 7, sum(PYTHON_WORKFLOWS.values()))
    assert list(info.errors) == []
    assert info.last_load_time.seconds >= int(time.time()) - 60
    error = rpc_error(stub.Reload, pb.ReloadRequest(cluster="no_such_cluster"))
    assert error.code() == Code.NOT_FOUND and "no_such_cluster" in error.details()


def test_reload_reports_every_kind_of_change(start_server, stub_for, example_copy,
                                             watch_events):
    repo = example_copy("json_repo")
    # No polling during the test: Reload alone must notice the changes.
    server = start_server(example_clusters(json_repo=repo), poll_interval_seconds=3600)
    stub = stub_for(server)
    watch = watch_events(stub, JS)
    watch.subscribed()
    # Nothing changed yet: no counts, and (checked below) no events either.
    unchanged = stub.Reload(pb.ReloadRequest(cluster=JS))
    assert (unchanged.added, unchanged.changed, unchanged.removed, unchanged.broken) == (
        0, 0, 0, 0)
    before = {w.name: w.fingerprint for w in
              stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=JS)).workflows}
    workflows = repo / "repo" / "workflow"
    # Changed: a job's priority.
    job_file = workflows / "json_daily_rollup" / "job" / "RollupCountsJob"
    job = json.loads(job_file.read_text())
    job["priority"] = job["priority"] + 7
    job_file.write_text(json.dumps(job, indent=4))
    # Added: a copy of json_heartbeat under a new name.
    staging = repo / "staging"
    shutil.copytree(workflows / "json_heartbeat", staging)
    for path in (staging / "schedule", staging / "job" / "heartbeat"):
        path.write_text(path.read_text().replace("json_heartbeat", "json_heartbeat_two"))
    staging.rename(workflows / "json_heartbeat_two")
    # Removed.
    shutil.rmtree(workflows / "json_weekly_compaction")
    # Broken (with a good version: stale).
    (workflows / "json_table_sync" / "job" / "SyncAuditJob").write_text("{ not json")

    response = stub.Reload(pb.ReloadRequest(cluster=JS))
    assert (response.added, response.changed, response.removed, response.broken) == (1, 1, 1, 1)
    info = response.cluster
    assert (info.workflow_count, info.ok_count, info.stale_count, info.broken_count) == (
        4, 3, 1, 0)
    assert [e.kind for e in info.errors] == [pb.ERROR_KIND_INVALID_JSON]
    # The next four events are exactly these (the unchanged Reload above sent none).
    events = {e.workflow: e for e in watch.take(lambda e: True, count=4)}
    assert {name: e.type for name, e in events.items()} == {
        "json_daily_rollup": pb.WorkflowEvent.TYPE_CHANGED,
        "json_heartbeat_two": pb.WorkflowEvent.TYPE_ADDED,
        "json_weekly_compaction": pb.WorkflowEvent.TYPE_REMOVED,
        "json_table_sync": pb.WorkflowEvent.TYPE_BROKEN,
    }
    assert events["json_daily_rollup"].old_fingerprint == before["json_daily_rollup"]
    assert events["json_weekly_compaction"].old_fingerprint == before["json_weekly_compaction"]
    assert events["json_weekly_compaction"].new_fingerprint == ""
    assert events["json_heartbeat_two"].old_fingerprint == ""
    assert events["json_table_sync"].errors[0].file == (
        "repo/workflow/json_table_sync/job/SyncAuditJob")
    after = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=JS))
    assert [w.name for w in after.workflows] == [
        "json_daily_rollup", "json_heartbeat", "json_heartbeat_two", "json_table_sync"]
    assert after.workflows[0].fingerprint == events["json_daily_rollup"].new_fingerprint
    assert after.workflows[3].status == pb.PARSE_STATUS_STALE
    assert after.workflows[3].fingerprint == before["json_table_sync"]


def test_reload_disabled(start_server, stub_for):
    server = start_server(reload_enabled=False)
    stub = stub_for(server)
    error = rpc_error(stub.Reload, pb.ReloadRequest(cluster=PY))
    assert error.code() == Code.PERMISSION_DENIED
    assert "reload_enabled" in error.details()
    assert not stub.GetServerInfo(pb.GetServerInfoRequest()).reload_enabled


def test_get_server_info(served, stub):
    server, _ = served
    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.version == __version__
    assert info.reload_enabled
    assert info.state_error == ""
    assert server.service.started_at == info.start_time.seconds
    assert abs(info.start_time.seconds - time.time()) < 600
    assert [c.name for c in info.clusters] == [PY, JS]
    python, json_cluster = info.clusters
    assert (python.state, python.format, python.workflow_count, python.ok_count,
            python.stale_count, python.broken_count, python.job_count) == (
        pb.LOAD_STATE_READY, pb.DEFINITION_FORMAT_PYTHON, 7, 7, 0, 0,
        sum(PYTHON_WORKFLOWS.values()))
    assert (json_cluster.state, json_cluster.format, json_cluster.workflow_count,
            json_cluster.job_count) == (
        pb.LOAD_STATE_READY, pb.DEFINITION_FORMAT_JSON, 4, sum(JSON_WORKFLOWS.values()))
    for cluster in info.clusters:
        assert list(cluster.errors) == []
        assert cluster.files_watched > 0
        assert cluster.last_load_duration_seconds > 0
        assert cluster.last_success_time == cluster.last_load_time
        assert cluster.last_load_time.seconds >= info.start_time.seconds - 1


def test_get_server_info_reports_a_broken_state_dir(start_server, stub_for, tmp_path):
    not_a_folder = tmp_path / "state-file"
    not_a_folder.write_text("a file where the state folder should be")
    stub = stub_for(start_server(state_dir=not_a_folder))
    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    assert str(not_a_folder) in info.state_error
    assert "memory" in info.state_error
    # Serving goes on from memory.
    assert spec_of(stub, "daily_reporting").status == pb.PARSE_STATUS_OK


# --- Error codes ------------------------------------------------------------------------


def test_not_found_cluster(stub):
    for call, request in (
            (stub.ListWorkflows, pb.ListWorkflowsRequest(cluster="core001")),
            (stub.GetWorkflowSpec, pb.GetWorkflowSpecRequest(cluster="core001", workflow="w")),
            (stub.GetJobTokens, pb.GetJobTokensRequest(cluster="core001", workflow="w",
                                                       run_time=stamp(utc(2020, 1, 1)))),
            (stub.ResolveMigration, pb.ResolveMigrationRequest(
                cluster="core001", workflow="w", migration_time=stamp(0)))):
        error = rpc_error(call, request)
        assert error.code() == Code.NOT_FOUND
        assert "core001" in error.details()
        assert PY in error.details() and JS in error.details()  # says which clusters exist


def test_not_found_workflow(stub):
    error = rpc_error(stub.GetWorkflowSpec, pb.GetWorkflowSpecRequest(cluster=PY,
                                                                      workflow="nightly"))
    assert error.code() == Code.NOT_FOUND
    assert "'nightly'" in error.details() and PY in error.details()
    # A workflow of the other cluster is not found here.
    error = rpc_error(stub.GetWorkflowSpec, pb.GetWorkflowSpecRequest(cluster=PY,
                                                                      workflow="json_heartbeat"))
    assert error.code() == Code.NOT_FOUND


def test_not_found_job(stub):
    run = stamp(utc(2020, 1, 2, 6))
    for call, request in (
            (stub.GetJobTokens, pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                                       run_time=run,
                                                       jobs=["load_events", "load_evnts"])),
            (stub.GetJobToken, pb.GetJobTokenRequest(cluster=PY, workflow="daily_reporting",
                                                     job="load_evnts", run_time=run))):
        error = rpc_error(call, request)
        assert error.code() == Code.NOT_FOUND
        for part in ("load_evnts", "daily_reporting", PY):
            assert part in error.details()


def test_not_found_fingerprint(stub):
    other = spec_of(stub, "hourly_metrics").fingerprint
    for fingerprint in ("0" * 32, other):  # unknown; another workflow's
        for call, request in (
                (stub.GetWorkflowSpec, pb.GetWorkflowSpecRequest(
                    cluster=PY, workflow="daily_reporting", fingerprint=fingerprint)),
                (stub.GetJobTokens, pb.GetJobTokensRequest(
                    cluster=PY, workflow="daily_reporting", fingerprint=fingerprint,
                    run_time=stamp(utc(2020, 1, 2, 6)))),
                (stub.GetJobToken, pb.GetJobTokenRequest(
                    cluster=PY, workflow="daily_reporting", job="final", fingerprint=fingerprint,
                    run_time=stamp(utc(2020, 1, 2, 6))))):
            error = rpc_error(call, request)
            assert error.code() == Code.NOT_FOUND
            for part in (fingerprint, "daily_reporting", PY):
                assert part in error.details()


RUN = stamp(utc(2020, 1, 2, 6))
INVALID = [
    # (method, request, words the message must contain)
    ("ListWorkflows", pb.ListWorkflowsRequest(), ["cluster", "required"]),
    ("ListWorkflows", pb.ListWorkflowsRequest(cluster="x" * 513), ["cluster", "513", "512"]),
    ("ListWorkflows", pb.ListWorkflowsRequest(cluster="example\x07python"),
     ["cluster", "control"]),
    ("ListWorkflows", pb.ListWorkflowsRequest(cluster=PY, page_size=-1), ["page_size", "-1"]),
    ("ListWorkflows", pb.ListWorkflowsRequest(cluster=PY, page_size=1001),
     ["page_size", "1001", "1000"]),
    ("ListWorkflows", pb.ListWorkflowsRequest(cluster=PY, page_token="not-a-token"),
     ["page_token", "not-a-token"]),
    ("ListWorkflows", pb.ListWorkflowsRequest(cluster=PY, page_token="!!!!"),
     ["page_token", "!!!!"]),
    ("ListWorkflows", pb.ListWorkflowsRequest(cluster=PY, page_token="*"), ["page_token"]),
    ("GetWorkflowSpec", pb.GetWorkflowSpecRequest(cluster=PY), ["workflow", "required"]),
    ("GetWorkflowSpec", pb.GetWorkflowSpecRequest(cluster=PY, workflow="w" * 100000),
     ["workflow", "100000", "512"]),
    ("GetWorkflowSpec", pb.GetWorkflowSpecRequest(cluster=PY, workflow="daily\nreporting"),
     ["workflow", "control"]),
    ("GetWorkflowSpec", pb.GetWorkflowSpecRequest(cluster=PY, workflow="daily\x00reporting"),
     ["workflow", "control"]),
    ("GetWorkflowSpec", pb.GetWorkflowSpecRequest(cluster=PY, workflow=" daily_reporting"),
     ["workflow", "whitespace"]),
    ("GetWorkflowSpec", pb.GetWorkflowSpecRequest(cluster=PY, workflow="daily_reporting",
                                                  fingerprint="ab\x01cd"),
     ["fingerprint", "control"]),
    ("GetJobTokens", pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting"),
     ["run_time", "required"]),
    ("GetJobTokens", pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                            run_time=stamp(utc(2020, 1, 2, 6), 500)),
     ["run_time", "whole seconds", "500"]),
    ("GetJobTokens", pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                            run_time=stamp(253402300800)),
     ["run_time", "253402300800"]),
    ("GetJobTokens", pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting",
                                            run_time=stamp(-62135596800)),
     ["run_time", "-62135596800"]),
    ("GetJobTokens", pb.GetJobTokensRequest(cluster=PY, workflow="daily_reporting", run_time=RUN,
                                            jobs=["load\x1bevents"]),
     ["job", "control"]),
    ("GetJobToken", pb.GetJobTokenRequest(cluster=PY, workflow="daily_reporting", run_time=RUN),
     ["job", "required"]),
    ("GetJobToken", pb.GetJobTokenRequest(cluster=PY, workflow="daily_reporting", job="final"),
     ["run_time", "required"]),
    ("ResolveMigration", pb.ResolveMigrationRequest(cluster=PY,
                                                    workflow="daily_reporting"),
     ["migration_time", "required"]),
    ("ResolveMigration", pb.ResolveMigrationRequest(
        cluster=PY, workflow="daily_reporting", migration_time=stamp(0, 1)),
     ["migration_time", "whole seconds"]),
    ("ResolveMigration", pb.ResolveMigrationRequest(cluster="", workflow="x",
                                                    migration_time=stamp(0)),
     ["cluster", "required"]),
    ("Reload", pb.ReloadRequest(), ["cluster", "required"]),
]


@pytest.mark.parametrize("method, request_message, words", INVALID,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(INVALID)])
def test_invalid_argument(stub, method, request_message, words):
    error = rpc_error(getattr(stub, method), request_message)
    assert error.code() == Code.INVALID_ARGUMENT, error.details()
    for word in words:
        assert word in error.details(), (word, error.details())


def test_invalid_argument_in_watch(stub):
    error = rpc_error(lambda: list(stub.WatchWorkflows(
        pb.WatchWorkflowsRequest(cluster="bad\tname"), timeout=10)))
    assert error.code() == Code.INVALID_ARGUMENT
    assert "cluster" in error.details()


def test_failed_precondition_broken_without_good_version(start_server, stub_for, example_copy):
    repo = example_copy("broken/missing_parent")
    syntax = example_copy("broken/syntax_error")
    server = start_server({
        "parents": {"repo": str(repo), "pinball_config": str(repo / "pinball.yaml")},
        "syntax": {"repo": str(syntax), "pinball_config": str(syntax / "pinball.yaml")},
    })
    stub = stub_for(server)
    # The good workflow next to the broken one is served.
    good = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster="parents",
                                                          workflow="good_daily"))
    assert good.status == pb.PARSE_STATUS_OK
    run = stamp(utc(2020, 1, 2, 6))
    for call, request in (
            (stub.GetWorkflowSpec, pb.GetWorkflowSpecRequest(cluster="parents",
                                                             workflow="bad_daily")),
            (stub.GetJobTokens, pb.GetJobTokensRequest(cluster="parents", workflow="bad_daily",
                                                       run_time=run)),
            (stub.GetJobToken, pb.GetJobTokenRequest(cluster="parents", workflow="bad_daily",
                                                     job="load", run_time=run)),
            (stub.ResolveMigration, pb.ResolveMigrationRequest(
                cluster="parents", workflow="bad_daily",
                migration_time=stamp(utc(2020, 1, 1))))):
        error = rpc_error(call, request)
        assert error.code() == Code.FAILED_PRECONDITION, error.details()
        for part in ("bad_daily", "parents", "missing_parent", "extrct",
                     "missing_parent_workflows/workflows.py"):
            assert part in error.details(), (part, error.details())
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster="parents"))
    bad = {w.name: w for w in listing.workflows}["bad_daily"]
    assert bad.status == pb.PARSE_STATUS_BROKEN
    assert bad.fingerprint == "" and not bad.HasField("schedule") and bad.job_count == 0
    assert [(e.kind, e.workflow, e.job) for e in bad.errors] == [
        (pb.ERROR_KIND_MISSING_PARENT, "bad_daily", "load")]
    assert bad.errors[0].line == 19

    # A cluster whose definitions do not import at all: every workflow is unknown.
    error = rpc_error(stub.GetWorkflowSpec, pb.GetWorkflowSpecRequest(cluster="syntax",
                                                                      workflow="daily_report"))
    assert error.code() == Code.FAILED_PRECONDITION
    for part in ("daily_report", "syntax", "syntax_error", "syntax_error_workflows/daily.py:9"):
        assert part in error.details(), (part, error.details())
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster="syntax"))
    assert list(listing.workflows) == [] and listing.total_size == 0
    assert [(e.kind, e.file, e.line) for e in listing.cluster_errors] == [
        (pb.ERROR_KIND_SYNTAX_ERROR, "syntax_error_workflows/daily.py", 9)]
    info = {c.name: c for c in stub.GetServerInfo(pb.GetServerInfoRequest()).clusters}
    assert info["syntax"].state == pb.LOAD_STATE_FAILED
    assert (info["parents"].state, info["parents"].ok_count, info["parents"].broken_count) == (
        pb.LOAD_STATE_READY, 1, 1)


def test_unavailable_while_loading(start_server, stub_for, tmp_path, watch_events):
    slow, flag = blocking_repo(tmp_path)
    server = start_server({**example_clusters(), "slow": slow}, wait_ready=False)
    stub = stub_for(server)
    # The other clusters load meanwhile and are served.
    wait_for(lambda: server.catalog.snapshot(PY).state.name == "READY", message="example_python")
    assert spec_of(stub, "daily_reporting").status == pb.PARSE_STATUS_OK
    for call, request in (
            (stub.ListWorkflows, pb.ListWorkflowsRequest(cluster="slow")),
            (stub.GetWorkflowSpec, pb.GetWorkflowSpecRequest(cluster="slow",
                                                             workflow="slow_daily")),
            (stub.GetJobTokens, pb.GetJobTokensRequest(cluster="slow", workflow="slow_daily",
                                                       run_time=RUN))):
        error = rpc_error(call, request)
        assert error.code() == Code.UNAVAILABLE
        assert "'slow'" in error.details() and "loading" in error.details()
    info = {c.name: c for c in stub.GetServerInfo(pb.GetServerInfoRequest()).clusters}
    assert info["slow"].state == pb.LOAD_STATE_LOADING
    assert health_at(server.port) == "NOT_SERVING"
    assert health_at(server.port, "token_fetcher.v1.TokenFetcher") == "NOT_SERVING"
    # Watching one loading cluster is refused; watching every cluster is not, and tells
    # of the workflows the first load brings.
    error = rpc_error(lambda: list(stub.WatchWorkflows(pb.WatchWorkflowsRequest(cluster="slow"),
                                                       timeout=10)))
    assert error.code() == Code.UNAVAILABLE
    watch = watch_events(stub, "")
    watch.subscribed()

    flag.write_text("go")
    [added] = watch.take(lambda e: e.cluster == "slow")
    assert (added.type, added.workflow, added.old_fingerprint) == (
        pb.WorkflowEvent.TYPE_ADDED, "slow_daily", "")
    wait_for(lambda: health_at(server.port) == "SERVING", message="SERVING")
    assert health_at(server.port, "token_fetcher.v1.TokenFetcher") == "SERVING"
    response = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster="slow",
                                                              workflow="slow_daily"))
    assert [job.name for job in response.spec.jobs] == ["final", "work"]
    assert response.fingerprint == added.new_fingerprint
