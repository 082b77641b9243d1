"""Two partitions with a real Airflow: one api-server and scheduler (LocalExecutor), and
two dag-processors, each ``--bundle-name`` for its partition's TokenFetcherDagBundle and
each with a token fetcher of its own, over one metadata folder.

The partitions serve disjoint sets of DAGs. Then one workflow moves from partition a to
b the way a user moves it (``migrate --partition b``) while its first catch-up run
waits at a gate: that run finishes from partition a's bundle, the later ones are made by
partition b, and every grid point after the migration date runs exactly once.

Airflow sends a task to the bundle its DAG is in *now*, at the bundle version its run
was created at; so run 1's tasks after the move run from partition b's bundle at a
version partition a made. The partitions share one store_dir, where it finds it.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from airflow_helpers import (
    bundle_deployment_env,
    first_run_at_its_gate,
    midnight_or_skip,
    prepare_home,
    query,
    runs_by_grid_point,
    start_deployment,
    wait_alive,
)

from tests.helpers import free_port
from token_fetcher.airflow.manifest import MANIFEST_FILE_NAME, Manifest
from token_fetcher.cli import main as token_fetcher
from token_fetcher.metadata_discovery import discover_metadata
from token_fetcher.partitions import Partitioning

pytestmark = pytest.mark.slow

CLUSTER = "example_python"
MOVED = "partition_move"
DAG_ID = f"{CLUSTER}__{MOVED}"
PARTITIONS = ("a", "b")
BUNDLES = {name: f"pinball-{name}" for name in PARTITIONS}
# Served but never run (migrated for a date to come): placed by the hash, and one
# recorded explicitly.
BY_HASH = ["daily_reporting", "event_ingest", "hourly_metrics"]
PINNED_TO_B = "weekly_cleanup"
DAY = timedelta(days=1)
DEADLINE = 270  # seconds for the whole scenario, below pytest-timeout so a timeout shows the logs

# A gate (a condition polling a file every second), one job-runner job and the final job;
# daily at midnight UTC, DELAY policy: one active run, so a run is made only after the
# previous one finished.
WORKFLOW_SOURCE = """

from datetime import datetime as _dt, timedelta as _td
from pinball.scheduler.overrun_policy import OverrunPolicy as _OP
from pinball_ext.job_templates import CommandJobTemplate as _CJT, JobTemplate as _JT
from pinball_ext.workflow.config import JobConfig as _JC, ScheduleConfig as _SC
from pinball_ext.workflow.config import WorkflowConfig as _WC
from example_workflows.templates import PathExistsConditionTemplate as _Gate

WORKFLOWS['partition_move'] = _WC(
    jobs={
        'gate': _JC(_Gate('gate', path=%(gate)r, max_attempts=900, retry_delay_sec=1)),
        'work': _JC(_JT('LoadEventsJob'), dependency=['gate']),
    },
    final_job_config=_JC(_CJT('final', 'true')),
    schedule=_SC(recurrence=_td(days=1), reference_timestamp=_dt(2020, 1, 1),
                 overrun_policy=_OP.DELAY))
"""


def test_two_partitions_serve_disjoint_dags_and_a_moved_workflow_runs_each_point_once(
    start_server, example_copy, tmp_path, airflow_processes
):
    started = time.monotonic()
    deadline = started + DEADLINE
    repo = example_copy("python_repo")
    gate = tmp_path / "gate"
    definitions = repo / "example_workflows" / "workflows.py"
    definitions.write_text(definitions.read_text() + WORKFLOW_SOURCE % {"gate": str(gate)})
    clusters = {CLUSTER: {"repo": str(repo), "pinball_config": str(repo / "pinball.yaml")}}
    # Each partition's dag-processor has its own token fetcher, as deployed.
    servers = {
        name: start_server(clusters, state_dir=tmp_path / f"state-{name}") for name in PARTITIONS
    }
    targets = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}

    home = tmp_path / "airflow"
    prepare_home(home)
    migrations = home / "migrations"
    today = midnight_or_skip()
    migration_date = today - 2 * DAY - DAY / 2
    grid = {today - 2 * DAY, today - DAY, today}

    def migrate(workflows: list[str], date, partition: str = "") -> None:
        argv = ["migrate", "--cluster", CLUSTER, "--metadata-dir", str(migrations),
                "--migration-date", date.strftime("%Y-%m-%d %H:%M:%S"),
                "--target", targets["a"]]
        argv += [item for workflow in workflows for item in ("--workflow", workflow)]
        assert token_fetcher(argv + (["--partition", partition] if partition else [])) == 0

    migrate([MOVED], migration_date, partition="a")
    migrate(BY_HASH, today + 30 * DAY)
    migrate([PINNED_TO_B], today + 30 * DAY, partition="b")

    job_log = tmp_path / "jobs.log"
    env = bundle_deployment_env(home, api_port=free_port(), target=targets["a"],
                                migrations=migrations, job_cwd=repo, partitions=targets)
    env["EXAMPLE_JOB_LOG"] = str(job_log)
    start_deployment(airflow_processes, env, bundle_names=list(BUNDLES.values()))
    db = home / "airflow.db"

    def owners() -> dict[str, str]:
        """Each DAG's bundle by the metadata files (any partition computes the same)."""
        partitioning = Partitioning(PARTITIONS[0], PARTITIONS)
        return {
            f"{entry.cluster_name}__{entry.workflow_name}": BUNDLES[partitioning.owner(entry)]
            for entry in discover_metadata(migrations).entries
        }

    def served_as(expected: dict[str, str]):
        def check():
            rows = dict(query(db, "select dag_id, bundle_name from dag where not is_stale"))
            return rows if rows == expected else None
        return check

    def bundles_written(dag_id: str) -> list[str]:
        """The bundle of each version of the DAG Airflow recorded, oldest first."""
        rows = query(db, "select bundle_name from dag_version where dag_id = ? "
                     "order by version_number", dag_id)
        return [name for (name,) in rows]

    def made_by(run_id: str) -> str:
        """The bundle of the DAG version a run was created with."""
        [(name,)] = query(db, "select v.bundle_name from dag_run r join dag_version v "
                          "on v.id = r.created_dag_version_id where r.dag_id = ? and "
                          "r.run_id = ?", DAG_ID, run_id)
        return name

    # Disjoint: every DAG in the bundle of its partition, and only ever written by it.
    before = owners()
    assert set(before.values()) == set(BUNDLES.values()), before
    assert before[DAG_ID] == BUNDLES["a"]
    assert before[f"{CLUSTER}__{PINNED_TO_B}"] == BUNDLES["b"]
    wait_alive(airflow_processes, served_as(before), "each DAG in its partition", deadline)
    [first_run] = wait_alive(airflow_processes, lambda: first_run_at_its_gate(db, DAG_ID),
                             "run 1 with its gate polling", deadline)
    assert made_by(first_run[0]) == BUNDLES["a"]
    for dag_id, bundle in before.items():
        assert set(bundles_written(dag_id)) == {bundle}, dag_id

    # The move, as a user makes it: the same migration date, another partition.
    migrate([MOVED], migration_date, partition="b")
    after = owners()
    assert after == {**before, DAG_ID: BUNDLES["b"]}

    def left_partition_a() -> bool:
        path = home / "bundles" / BUNDLES["a"] / "current" / MANIFEST_FILE_NAME
        layouts = {layout.dag_id for layout in Manifest.read(path).layouts}
        return DAG_ID not in layouts and served_as(after)()

    wait_alive(airflow_processes, left_partition_a, "the DAG to move to partition b", deadline)
    gate.touch()

    def all_ran():
        runs = runs_by_grid_point(db, DAG_ID)
        return runs if set(runs) == grid and set(runs.values()) == {"success"} else None

    wait_alive(airflow_processes, all_ran, "a run at every grid point", deadline)

    # Each grid point ran once: one run each in the metadata database, and one execution
    # of the job each (it gets the day before the grid point as its end_date).
    executions = Counter(job_log.read_text().splitlines())
    assert executions == Counter(
        f"LoadEventsJob env=example,end_date={(point - DAY).date()}" for point in grid
    )
    # Run 1 was made by partition a before the move, the later ones by partition b.
    runs = query(db, "select run_id, bundle_version from dag_run where dag_id = ? "
                 "order by data_interval_end", DAG_ID)
    assert [made_by(run_id) for run_id, _ in runs] == [BUNDLES["a"], BUNDLES["b"], BUNDLES["b"]]
    # Airflow ran run 1's tasks after the move from the bundle the DAG is in now, at the
    # version run 1 was created at: partition b's bundle found it in the shared store.
    assert runs[0][1] == first_run[2]
    assert (home / "bundles" / BUNDLES["b"] / "versions" / first_run[2]).is_dir()
    # The DAG went from a to b once, and nothing else moved.
    written = bundles_written(DAG_ID)
    switch = written.index(BUNDLES["b"])
    assert set(written[:switch]) == {BUNDLES["a"]} and set(written[switch:]) == {BUNDLES["b"]}
    assert served_as(after)()
    print(f"partitions scenario took {time.monotonic() - started:.1f} s")
