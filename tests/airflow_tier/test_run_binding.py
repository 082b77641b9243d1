"""Run binding with a real Airflow: api-server, scheduler (LocalExecutor), dag-processor.

The DAG comes from TokenFetcherDagBundle (a versioned bundle whose version follows the
layouts). Run 1 is created and held by a condition; the legacy definition changes; run 1
still runs the old command; run 2, created afterwards, runs the new one.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from airflow_helpers import (
    bundle_deployment_env,
    finished_runs,
    first_run_at_its_gate,
    prepare_home,
    query,
    start_deployment,
    wait_alive,
    write_migration,
)

from tests.helpers import cluster_config, free_port

pytestmark = pytest.mark.slow

CLUSTER = "example_python"
WORKFLOW = "binding_check"
DAG_ID = f"{CLUSTER}__{WORKFLOW}"

# Appended to the example repo's workflows: a gate (a condition polling a file every
# second), one job-runner job, and the final job; daily grid at midnight, DELAY policy
# (one active run at a time, so run 2 is created only after run 1 finishes).
WORKFLOW_SOURCE = """

from datetime import datetime as _dt, timedelta as _td
from pinball.scheduler.overrun_policy import OverrunPolicy as _OP
from pinball_ext.job_templates import CommandJobTemplate as _CJT, JobTemplate as _JT
from pinball_ext.workflow.config import JobConfig as _JC, ScheduleConfig as _SC
from pinball_ext.workflow.config import WorkflowConfig as _WC
from example_workflows.templates import PathExistsConditionTemplate as _Gate

WORKFLOWS['binding_check'] = _WC(
    jobs={
        'gate': _JC(_Gate('gate', path=%(gate)r, max_attempts=900, retry_delay_sec=1)),
        'work': _JC(_JT(%(job_class)r), dependency=['gate']),
    },
    final_job_config=_JC(_CJT('final', 'true')),
    schedule=_SC(recurrence=_td(days=1), reference_timestamp=_dt(2020, 1, 1),
                 overrun_policy=_OP.DELAY))
"""

DEADLINE = 240  # seconds for the whole scenario (typically about a minute), below pytest-timeout


def test_a_created_run_keeps_its_layout_and_the_next_run_gets_the_new_one(
    start_server, example_copy, tmp_path, airflow_processes
):
    started = time.monotonic()
    deadline = started + DEADLINE
    repo = example_copy("python_repo")
    gate = tmp_path / "gate"
    definitions = repo / "example_workflows" / "workflows.py"
    original = definitions.read_text()
    definitions.write_text(
        original + WORKFLOW_SOURCE % {"gate": str(gate), "job_class": "LoadEventsJob"}
    )
    server = start_server(cluster_config(CLUSTER, repo))

    home = tmp_path / "airflow"
    prepare_home(home)
    migrations = home / "migrations"
    now = datetime.now(UTC).replace(microsecond=0)
    # Two grid points are due (T1 in (now-2d, now-1d], T2 = T1 + 1d), the third is not.
    migration_date = now - timedelta(days=2)
    write_migration(migrations, CLUSTER, WORKFLOW, migration_date.strftime("%Y-%m-%d %H:%M:%S"))
    t1 = (migration_date + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    t2 = t1 + timedelta(days=1)
    job_log = tmp_path / "jobs.log"
    env = bundle_deployment_env(
        home,
        api_port=free_port(),
        target=f"127.0.0.1:{server.port}",
        migrations=migrations,
        job_cwd=repo,
    )
    env["EXAMPLE_JOB_LOG"] = str(job_log)
    start_deployment(airflow_processes, env)
    db = home / "airflow.db"

    # Run 1 is created at the first layout's bundle version and its gate is polling.
    runs = wait_alive(
        airflow_processes,
        lambda: first_run_at_its_gate(db, DAG_ID),
        "run 1 with its gate polling",
        deadline,
    )
    assert len(runs) == 1, runs
    first_version = runs[0][2]

    # The legacy definition changes while run 1 waits.
    definitions.write_text(
        original + WORKFLOW_SOURCE % {"gate": str(gate), "job_class": "RevenueReportJob"}
    )

    def new_version_parsed():
        rows = query(db, "select bundle_version from dag where dag_id = ?", DAG_ID)
        versions = query(
            db,
            "select bundle_version from dag_version where dag_id = ? order by version_number",
            DAG_ID,
        )
        if (
            rows
            and rows[0][0]
            and rows[0][0] != first_version
            and versions
            and versions[-1][0] == rows[0][0]
        ):
            return rows[0][0]
        return None

    second_version = wait_alive(
        airflow_processes,
        new_version_parsed,
        "the new layout's bundle version to be parsed",
        deadline,
    )
    gate.touch()

    runs = wait_alive(
        airflow_processes, lambda: finished_runs(db, DAG_ID, 2), "both runs to finish", deadline
    )
    assert [run[1] for run in runs] == ["success", "success"], runs
    assert [run[2] for run in runs] == [first_version, second_version]
    assert job_log.read_text().splitlines()[:2] == [
        f"LoadEventsJob env=example,end_date={(t1 - timedelta(days=1)).date()}",
        f"RevenueReportJob env=example,end_date={(t2 - timedelta(days=1)).date()}",
    ]
    # Both versions are in the store, with different fingerprints for the workflow.
    from token_fetcher.airflow.manifest import Manifest

    stored = {
        v: Manifest.read(home / "store" / f"{v}.json") for v in (first_version, second_version)
    }
    assert (
        stored[first_version].fingerprints()[DAG_ID]
        != stored[second_version].fingerprints()[DAG_ID]
    )
    print(f"run binding scenario took {time.monotonic() - started:.1f} s")
