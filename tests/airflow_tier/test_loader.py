"""The loader file parsed by Airflow's own DagBag against a real token-fetcher server."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow_helpers import write_loader, write_migration

from token_fetcher.airflow import LOADER_FILE_NAME, PROBLEMS_FILE_NAME, loader, problems_file_text
from token_fetcher.airflow.operators import MigratedConditionSensor, MigratedJobOperator
from token_fetcher.airflow.timetable import PinballTimetable

CLUSTER = "example_python"
WORKFLOWS = [
    "daily_reporting",
    "db_backup",
    "event_ingest",
    "failure_drill",
    "hourly_metrics",
    "partner_ingest",
    "weekly_cleanup",
]


def rpc_count(method: str) -> float:
    """RPCs the loader's clients made in this process (see the _fresh_clients fixture)."""
    total = 0.0
    for client in loader._clients.values():
        for outcome in ("OK", "UNAVAILABLE"):
            total += (
                client.registry.get_sample_value(
                    "token_fetcher_client_calls_total", {"method": method, "outcome": outcome}
                )
                or 0.0
            )
    return total


def parse(folder) -> DagBag:
    # safe_mode=True: the loader file passes Airflow's "airflow" + "dag" heuristic.
    return DagBag(dag_folder=str(folder), safe_mode=True)


@pytest.fixture
def migrated(dags_folder, python_server, tf_settings):
    """Every example_python workflow migrated on 2020-01-01, the loader in the folder."""
    for workflow in WORKFLOWS:
        write_migration(dags_folder / "migrations", CLUSTER, workflow)
    write_loader(dags_folder)
    tf_settings(
        python_server,
        job_cwd=str(python_server.repo),
        migrations_dir=str(dags_folder / "migrations"),
    )
    return dags_folder


def dag_ids(bag: DagBag) -> list[str]:
    return sorted(bag.dag_ids)


def test_one_dag_per_metadata_file_with_one_batched_round_trip(migrated):
    bag = parse(migrated)
    assert bag.import_errors == {}
    assert dag_ids(bag) == [f"{CLUSTER}__{workflow}" for workflow in WORKFLOWS]
    assert rpc_count("BatchResolveMigrations") == 1
    assert rpc_count("ResolveMigration") == 0
    assert rpc_count("GetWorkflowSpec") == 0


def test_daily_reporting_tasks_dependencies_and_parameters(migrated):
    dag = parse(migrated).dags[f"{CLUSTER}__daily_reporting"]
    downstream = {task.task_id: sorted(task.downstream_task_ids) for task in dag.tasks}
    assert downstream == {
        "job_code_deployed": ["load_events"],
        "load_events": ["engagement_report", "revenue_report"],
        "revenue_report": ["publish_dashboard"],
        "engagement_report": ["publish_dashboard"],
        "publish_dashboard": ["final"],
        "final": [],
    }
    tasks = dag.task_dict
    gate = tasks["job_code_deployed"]
    assert isinstance(gate, MigratedConditionSensor)
    # PathExistsConditionTemplate(max_attempts=12, retry_delay_sec=600)
    assert gate.poke_interval == 600
    assert gate.timeout == 12 * 600
    assert gate.mode == "reschedule"
    assert gate.retries == 0
    assert gate.command_segments == ["test -e example_jobs"]

    load = tasks["load_events"]
    assert isinstance(load, MigratedJobOperator)
    assert load.retries == 1  # EmrJobTemplate max_attempts=2
    assert load.retry_delay == timedelta(0)
    assert load.execution_timeout is None
    assert load.weight_rule == "absolute"
    # Scores: own priority plus every job depending on it, transitively.
    weights = {task.task_id: task.priority_weight for task in dag.tasks}
    assert weights == {
        "final": 1,
        "publish_dashboard": 2,  # 1 + 1
        "revenue_report": 3,  # 1 + 2
        "engagement_report": 8,  # 5.5 + 2 = 7.5, rounded up
        "load_events": 39,  # 30 + 1 + 5.5 + 1 + 1 = 38.5
        "job_code_deployed": 40,  # 1 + 38.5
    }
    engagement = tasks["engagement_report"]
    assert engagement.execution_timeout == timedelta(hours=4)
    assert engagement.warn_timeout_seconds == 2 * 60 * 60
    assert tasks["publish_dashboard"].retries == 2
    # Failure emails: the job's, and the workflow's notify_emails for the run.
    [notifier] = tasks["revenue_report"].on_failure_callback
    assert notifier.to == ["reporting-oncall@example.com"]
    assert not tasks["final"].on_failure_callback
    assert tasks["revenue_report"].job_emails == ["reporting-oncall@example.com"]
    [run_notifier] = dag.on_failure_callback
    assert run_notifier.to == ["reporting-oncall@example.com", "analytics@example.com"]
    # The command template: end_date cut out of the job runner line.
    assert load.command_segments == [
        "cd . && python -m pinball_ext.job.job_runner "
        "--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS "
        '--job_class_name=LoadEventsJob --job_params="env=example,end_date=',
        '" --executor=emr --executor_config="cluster_id=j-EXAMPLE0001,queue=reporting" ',
    ]
    assert isinstance(dag.timetable, PinballTimetable)
    assert dag.catchup is True
    assert dag.max_active_runs == 1
    # DELAY_UNTIL_SUCCESS: a failed run pauses the DAG; no task waits for its past.
    assert dag.max_consecutive_failed_dag_runs == 1
    assert not any(task.depends_on_past for task in dag.tasks)


def test_overrun_policies_become_dag_arguments(migrated):
    dags = parse(migrated).dags
    expected = {
        # workflow: (policy, max_active_runs, dagrun_timeout, pause after N failed runs)
        "hourly_metrics": ("START_NEW", 4, None, 0),
        "partner_ingest": ("DELAY", 1, None, 0),
        "daily_reporting": ("DELAY_UNTIL_SUCCESS", 1, None, 1),
        "event_ingest": ("ABORT_RUNNING", 1, timedelta(hours=7), 0),
        "weekly_cleanup": ("SKIP", 1, None, 0),
        "db_backup": ("SKIP", 1, None, 0),  # overrun_policy=None
    }
    for workflow, (policy, runs, timeout, failed_runs) in expected.items():
        dag = dags[f"{CLUSTER}__{workflow}"]
        assert f"overrun policy: {policy}" in dag.doc_md, workflow
        assert dag.max_active_runs == runs, workflow
        assert dag.dagrun_timeout == timeout, workflow
        assert dag.max_consecutive_failed_dag_runs == failed_runs, workflow
        # Policies are per run, never per task: a job added between runs cannot stall.
        assert not any(task.depends_on_past for task in dag.tasks), workflow


def test_inputs_outputs_edges_and_final_job(migrated):
    dags = parse(migrated).dags
    cleanup = dags[f"{CLUSTER}__weekly_cleanup"]
    assert {t.task_id: sorted(t.downstream_task_ids) for t in cleanup.tasks} == {
        "vacuum_tables": ["compact_partitions"],
        "compact_partitions": ["final"],
        "rotate_logs": ["final"],
        "final": [],
    }
    drill = dags[f"{CLUSTER}__failure_drill"]
    assert isinstance(drill.task_dict["job_code_deployed"], MigratedConditionSensor)
    # ConditionTemplateBase defaults: 10 attempts, 300 s apart.
    assert drill.task_dict["job_code_deployed"].timeout == 3000
    assert drill.task_dict["job_code_deployed"].mode == "reschedule"
    ingest = dags[f"{CLUSTER}__event_ingest"]
    assert ingest.task_dict["fetch_logs"].retries == 2
    assert ingest.task_dict["parse_logs"].execution_timeout == timedelta(hours=1)
    assert ingest.task_dict["parse_logs"].warn_timeout_seconds == 30 * 60


def test_a_worker_parse_builds_only_its_dag(migrated, monkeypatch):
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", f"{CLUSTER}__event_ingest")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "parse_logs")
    bag = parse(migrated)
    assert bag.import_errors == {}
    assert dag_ids(bag) == [f"{CLUSTER}__event_ingest"]
    assert rpc_count("BatchResolveMigrations") == 1  # one item in it


def test_a_fresh_process_survives_an_outage_with_the_disk_cache(migrated, python_server):
    before = parse(migrated)
    descriptions = {dag_id: dag.description for dag_id, dag in before.dags.items()}
    python_server.stop(grace=0)
    loader._close_clients()  # a new parse process: empty client cache
    after = parse(migrated)
    assert after.import_errors == {}
    assert {dag_id: dag.description for dag_id, dag in after.dags.items()} == descriptions


def test_the_client_cache_serves_within_max_stale(migrated, python_server, tf_settings, tmp_path):
    # No disk cache to fall back on: only the client's in-memory answers.
    tf_settings(
        python_server,
        cache_dir=str(tmp_path / "unused-cache"),
        cache_ttl="0",
        migrations_dir=str(migrated / "migrations"),
    )
    before = parse(migrated)
    shutil.rmtree(tmp_path / "unused-cache")
    python_server.stop(grace=0)
    after = parse(migrated)
    assert after.import_errors == {}
    assert dag_ids(after) == dag_ids(before)
    assert not (tmp_path / "unused-cache").exists()


def test_a_bad_metadata_file_does_not_hide_the_others(migrated):
    write_migration(migrated / "migrations", CLUSTER, "no_such_workflow")
    (migrated / "migrations" / "broken.json").write_text("{not json")
    bag = parse(migrated)
    assert bag.import_errors == {}
    assert len(bag.dag_ids) == len(WORKFLOWS)
    warnings = "\n".join(w for ws in bag.captured_warnings.values() for w in ws)
    assert "no_such_workflow" in warnings
    assert "broken.json" in warnings


def test_the_problems_file_reports_the_loaders_problems_as_an_import_error(migrated):
    problems_file = migrated / PROBLEMS_FILE_NAME
    problems_file.write_text(problems_file_text())
    missing = write_migration(migrated / "migrations", CLUSTER, "no_such_workflow")
    loader_file = str(migrated / LOADER_FILE_NAME)
    # The DAG processor parses each file on its own; the loader's full parse records its
    # problems, the problems file's parse raises them.
    assert len(parse(loader_file).dag_ids) == len(WORKFLOWS)
    [error] = parse(problems_file).import_errors.values()
    assert "token-fetcher: 1 migrated workflow(s) give no DAG" in error
    assert f"({CLUSTER}/no_such_workflow): NOT_FOUND: no workflow 'no_such_workflow'" in error

    missing.unlink()
    parse(loader_file)
    bag = parse(problems_file)
    assert bag.import_errors == {} and bag.dag_ids == []


def test_nothing_buildable_is_an_import_error(dags_folder, tf_settings, tmp_path):
    write_migration(dags_folder / "migrations", CLUSTER, "daily_reporting")
    write_loader(dags_folder)
    # Nothing listens on port 1.
    tf_settings(
        target="127.0.0.1:1",
        timeout="0.5",
        retries="0",
        migrations_dir=str(dags_folder / "migrations"),
    )
    bag = parse(dags_folder)
    assert bag.dag_ids == []
    [error] = bag.import_errors.values()
    assert "no DAG could be built" in error
    assert "daily_reporting" in error
