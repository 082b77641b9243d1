"""A migrated example workflow executed end to end with ``dag.test()``: its legacy
commands really run (local mode, cwd = the legacy repo root) in dependency order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow_helpers import write_loader, write_migration

from token_fetcher.airflow.operators import end_date_for, scheduled_run_time
from token_fetcher.client import TokenFetcherClient

CLUSTER = "example_python"


@pytest.fixture
def example_dags(airflow_home, python_server, tf_settings, monkeypatch, tmp_path):
    """The session's dags folder with the loader and three migrated workflows."""
    server, repo = python_server, python_server.repo
    dags = airflow_home / "dags"
    migrations = tmp_path / "migrations"
    for workflow in ("daily_reporting", "event_ingest", "failure_drill"):
        write_migration(migrations, CLUSTER, workflow)
    write_loader(dags)
    tf_settings(server, job_cwd=str(repo), migrations_dir=str(migrations))
    job_log = tmp_path / "jobs.log"
    monkeypatch.setenv("EXAMPLE_JOB_LOG", str(job_log))
    bag = DagBag(dag_folder=str(dags))
    assert bag.import_errors == {}
    return bag, server, job_log


def test_daily_reporting_runs_its_legacy_commands_in_dependency_order(example_dags):
    bag, _, job_log = example_dags
    dag = bag.dags[f"{CLUSTER}__daily_reporting"]
    run_time = datetime(2020, 1, 2, 6, tzinfo=UTC)  # the second grid point after migration
    run = dag.test(logical_date=run_time)
    assert run.state == "success"
    lines = job_log.read_text().splitlines()
    # The condition and the final job are shell commands, not job runner calls.
    assert lines[0] == "LoadEventsJob env=example,end_date=2020-01-01"
    assert sorted(lines[1:3]) == [
        "EngagementReportJob env=example,end_date=2020-01-01",
        "RevenueReportJob env=example,end_date=2020-01-01",
    ]
    assert lines[3:] == ["PublishDashboardJob env=example,end_date=2020-01-01"]
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == dict.fromkeys(
        [
            "job_code_deployed",
            "load_events",
            "revenue_report",
            "engagement_report",
            "publish_dashboard",
            "final",
        ],
        "success",
    )


def test_the_7_hourly_grid_renders_end_date_from_the_run_time(example_dags):
    bag, server, job_log = example_dags
    dag = bag.dags[f"{CLUSTER}__event_ingest"]
    run_time = datetime(2020, 1, 2, 0, tzinfo=UTC)  # a grid point at midnight
    run = dag.test(logical_date=run_time)
    assert run.state == "success"
    # end_date = the UTC date of the run time minus one day.
    assert job_log.read_text().splitlines() == [
        "ParseLogsJob env=example,end_date=2020-01-01",
        "DedupeEventsJob env=example,end_date=2020-01-01",
    ]
    # The operator's rendering is the server's: compare with GetJobTokens.
    task = dag.task_dict["parse_logs"]
    with TokenFetcherClient(f"127.0.0.1:{server.port}") as client:
        tokens = client.get_job_tokens(CLUSTER, "event_ingest", run_time, jobs=["parse_logs"])
    context = {"data_interval_end": run_time, "data_interval_start": run_time - timedelta(hours=7)}
    assert task.command_for(context) == tokens.jobs[0].command
    assert tokens.fingerprint == task.fingerprint


def test_the_scheduled_time_is_the_interval_end_not_the_logical_date():
    # A scheduled 7-hourly run at 2020-01-02 10:00 has the data interval
    # [2020-01-02 03:00, 2020-01-02 10:00): its ds (the interval's start) is 2020-01-02,
    # Pinball's end_date (the run time's UTC date minus one day) is 2020-01-01.
    context = {
        "data_interval_start": datetime(2020, 1, 2, 3, tzinfo=UTC),
        "data_interval_end": datetime(2020, 1, 2, 10, tzinfo=UTC),
        "logical_date": datetime(2020, 1, 2, 3, tzinfo=UTC),
        "ds": "2020-01-02",
    }
    run_time = scheduled_run_time(context)
    assert run_time == datetime(2020, 1, 2, 10, tzinfo=UTC)
    assert end_date_for(run_time) == "2020-01-01"
    # For the daily grid the two agree: a run at 2020-01-02 06:00 has ds 2020-01-01.
    daily = {
        "data_interval_start": datetime(2020, 1, 1, 6, tzinfo=UTC),
        "data_interval_end": datetime(2020, 1, 2, 6, tzinfo=UTC),
        "ds": "2020-01-01",
    }
    assert end_date_for(scheduled_run_time(daily)) == daily["ds"]


def test_a_failing_job_fails_the_run_and_its_children_never_run(example_dags):
    bag, _, job_log = example_dags
    dag = bag.dags[f"{CLUSTER}__failure_drill"]
    run = dag.test(logical_date=datetime(2020, 1, 1, 9, tzinfo=UTC))
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["job_code_deployed"] == "success"
    assert states["always_fails"] == "failed"
    assert states["never_runs"] == "upstream_failed"
    assert job_log.read_text().splitlines() == ["FailingJob env=example,end_date=2019-12-31"]
