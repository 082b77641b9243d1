"""Migrate, roll back and migrate again with a real Airflow (api-server, scheduler with
LocalExecutor, dag-processor over a TokenFetcherDagBundle).

All dates are in the past, so the scheduler catches up at once: Airflow runs the grid
points after the migration up to the rollback date and then nothing (its timetable has no
next run); after the re-migration it runs from the first grid point after the new
migration date. With the Pinball runs the record's handovers account for, every grid
point runs exactly once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from airflow_helpers import (
    bundle_deployment_env,
    midnight_or_skip,
    prepare_home,
    query,
    runs_by_grid_point,
    start_deployment,
    wait_alive,
)

from tests.helpers import cluster_config, free_port
from token_fetcher.cli import main as token_fetcher
from token_fetcher.migration_record import read_records

pytestmark = pytest.mark.slow

CLUSTER = "example_python"
WORKFLOW = "rollback_check"
DAG_ID = f"{CLUSTER}__{WORKFLOW}"
DAY = timedelta(days=1)
DEADLINE = 240  # seconds for the whole scenario, below pytest-timeout so a timeout shows the logs

# Daily at midnight UTC; START_NEW lets the catch-up runs go side by side.
WORKFLOW_SOURCE = """

from datetime import datetime as _dt, timedelta as _td
from pinball.scheduler.overrun_policy import OverrunPolicy as _OP
from pinball_ext.job_templates import CommandJobTemplate as _CJT
from pinball_ext.workflow.config import JobConfig as _JC, ScheduleConfig as _SC
from pinball_ext.workflow.config import WorkflowConfig as _WC

WORKFLOWS['rollback_check'] = _WC(
    jobs={'work': _JC(_CJT('work', 'true'))},
    final_job_config=_JC(_CJT('final', 'true')),
    schedule=_SC(recurrence=_td(days=1), reference_timestamp=_dt(2020, 1, 1),
                 overrun_policy=_OP.START_NEW, max_running_instances=4))
"""


def test_rollback_and_re_migration_with_a_real_scheduler(
    start_server, example_copy, tmp_path, airflow_processes
):
    started = time.monotonic()
    deadline = started + DEADLINE
    repo = example_copy("python_repo")
    definitions = repo / "example_workflows" / "workflows.py"
    definitions.write_text(definitions.read_text() + WORKFLOW_SOURCE)
    server = start_server(cluster_config(CLUSTER, repo))
    target = ["--target", f"127.0.0.1:{server.port}"]

    home = tmp_path / "airflow"
    prepare_home(home)
    migrations = home / "migrations"
    today = midnight_or_skip()
    migration, rollback, again = today - 4 * DAY - DAY / 2, today - 3 * DAY + DAY / 2, \
        today - DAY - DAY / 2

    def stamp(value: datetime) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S")

    workflow = ["--cluster", CLUSTER, "--workflow", WORKFLOW, "--metadata-dir", str(migrations)]
    assert token_fetcher(["migrate", *workflow, "--migration-date", stamp(migration),
                          *target]) == 0
    assert token_fetcher(["rollback", *workflow, "--rollback-date", stamp(rollback),
                          *target]) == 0

    env = bundle_deployment_env(home, api_port=free_port(), target=f"127.0.0.1:{server.port}",
                                migrations=migrations, job_cwd=repo)
    start_deployment(airflow_processes, env)
    db = home / "airflow.db"

    def runs() -> dict[datetime, str]:
        return runs_by_grid_point(db, DAG_ID)

    def finished(expected: set[datetime]):
        def check():
            current = runs()
            if set(current) == expected and set(current.values()) == {"success"}:
                return current
            return None
        return check

    def nothing_next():
        rows = query(db, "select next_dagrun_create_after from dag where dag_id = ?", DAG_ID)
        return bool(rows) and rows[0][0] is None

    # Airflow runs the grid points in (migration, rollback] and then has no next run.
    first_share = {today - 4 * DAY, today - 3 * DAY}
    wait_alive(airflow_processes, finished(first_share), "the runs up to the rollback", deadline)
    wait_alive(airflow_processes, nothing_next, "the timetable to stop at the rollback", deadline)
    assert set(runs()) == first_share

    # Migrated again: Airflow resumes after the new migration date, not before.
    assert token_fetcher(["migrate", *workflow, "--migration-date", stamp(again), *target]) == 0
    second_share = {today - DAY, today}
    wait_alive(airflow_processes, finished(first_share | second_share), "the runs after the "
          "re-migration", deadline)

    # Pinball's runs, by the handovers the record holds: up to the first migration, and
    # from the rollback to the re-migration.
    first, back, second = read_records(migrations)[0]
    assert (first.action, back.action, second.action) == ("migrate", "rollback", "migrate")
    pinball = set()
    point = first.last_legacy_run
    while point >= first.last_legacy_run - 2 * 86_400:
        pinball.add(datetime.fromtimestamp(point, UTC))
        point -= 86_400
    point = back.first_legacy_run
    while second.last_legacy_run is not None and point <= second.last_legacy_run:
        pinball.add(datetime.fromtimestamp(point, UTC))
        point += 86_400
    airflow = set(runs())
    assert pinball.isdisjoint(airflow)
    grid = {today - k * DAY for k in range(8)}
    assert pinball | airflow == grid, sorted(grid - pinball - airflow)
    print(f"rollback scenario took {time.monotonic() - started:.1f} s")
