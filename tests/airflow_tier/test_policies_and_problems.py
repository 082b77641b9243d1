"""Overrun policies, problems and retention with a real Airflow: api-server, scheduler
(LocalExecutor) and dag-processor, the DAGs from TokenFetcherDagBundle.

- Two workflows, DELAY_UNTIL_SUCCESS and DELAY: run 1 is held by a condition while a job
  is added and another removed; run 1 finishes with the old layout and run 2 with the
  new one, for both (a per-task ``depends_on_past`` stalled run 2 at the new job). A
  DELAY_UNTIL_SUCCESS workflow whose run 1 fails is paused: run 2 does not start.
- Problems, read back through the api-server: a workflow broken from the start is an
  import error naming cluster, workflow, file, line and error kind; a workflow that
  breaks after its migration keeps its DAG with a stale tag and a banner; both clear
  when the definitions are fixed.
- The store (``keep_versions=1``) keeps the version run 1 runs while newer ones come,
  and prunes it once no unfinished run uses it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from airflow_helpers import (
    bundle_deployment_env,
    dag_runs,
    finished_runs,
    first_run_at_its_gate,
    prepare_home,
    query,
    start_deployment,
    wait_alive,
    write_migration,
)

from tests.helpers import cluster_config, free_port
from token_fetcher.airflow import PROBLEMS_FILE_NAME
from token_fetcher.airflow.dags import STALE_TAG

pytestmark = pytest.mark.slow

CLUSTER = "example_python"
GATED = ("until_success", "delayed")
FAILING = f"{CLUSTER}__fails_until_success"
STALE, BROKEN = f"{CLUSTER}__goes_stale", f"{CLUSTER}__broken_at_first"
DEADLINE = 240  # seconds for the whole scenario (pytest-timeout stops a test at 300)

# Appended to the example repo's workflows. Two gated workflows (a condition polling a
# file every second, then the jobs, then the final job) and two without runs (migrated
# today: their first run is tomorrow) to break and fix.
WORKFLOWS_SOURCE = """

from datetime import datetime as _dt, timedelta as _td
from pinball.scheduler.overrun_policy import OverrunPolicy as _OP
from pinball_ext.job_templates import CommandJobTemplate as _CJT
from pinball_ext.workflow.config import JobConfig as _JC, ScheduleConfig as _SC
from pinball_ext.workflow.config import WorkflowConfig as _WC
from example_workflows.templates import PathExistsConditionTemplate as _Gate


def _workflow(jobs, policy=None):
    return _WC(
        jobs=jobs,
        final_job_config=_JC(_CJT('final', 'true')),
        schedule=_SC(recurrence=_td(days=1), reference_timestamp=_dt(2020, 1, 1),
                     overrun_policy=policy))


def _gated(names, policy):
    jobs = {'gate': _JC(_Gate('gate', path=%(gate)r, max_attempts=900, retry_delay_sec=1))}
    for name in names:
        jobs[name] = _JC(_CJT(name, 'true'), dependency=['gate'])
    return _workflow(jobs, policy)


WORKFLOWS['until_success'] = _gated(%(jobs)r, _OP.DELAY_UNTIL_SUCCESS)
WORKFLOWS['delayed'] = _gated(%(jobs)r, _OP.DELAY)
WORKFLOWS['fails_until_success'] = _workflow(
    {'fails': _JC(_CJT('fails', 'false'))}, _OP.DELAY_UNTIL_SUCCESS)
WORKFLOWS['goes_stale'] = _workflow(
    {'only': _JC(_CJT('only', 'true'), dependency=%(stale_parents)r)})
WORKFLOWS['broken_at_first'] = _workflow(
    {'only': _JC(_CJT('only', 'true'), dependency=%(broken_parents)r)})
"""
FIRST = {"jobs": ["kept", "removed"], "stale_parents": [], "broken_parents": ["missing"]}
SECOND = {"jobs": ["kept", "added"], "stale_parents": ["missing"], "broken_parents": ["missing"]}
FIXED = {"jobs": ["kept", "added"], "stale_parents": [], "broken_parents": []}


class Api:
    """GETs from the api-server (open to all in this test)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v2"

    def get(self, path: str) -> dict | None:
        """The JSON answer, or None while the server is not up or answers an error."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as answer:
                return json.load(answer)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def import_errors(self) -> list[dict] | None:
        answer = self.get("/importErrors")
        return None if answer is None else answer["import_errors"]

    def dag(self, dag_id: str) -> dict | None:
        return self.get(f"/dags/{dag_id}/details")


def tag_names(details: dict) -> set[str]:
    return {tag["name"] for tag in details["tags"]}


def test_policies_survive_a_layout_change_and_problems_show_in_airflow(
    start_server, example_copy, tmp_path, airflow_processes
):
    started = time.monotonic()
    deadline = started + DEADLINE
    repo = example_copy("python_repo")
    gate = tmp_path / "gate"
    definitions = repo / "example_workflows" / "workflows.py"
    original = definitions.read_text()

    def define(stage: dict) -> None:
        definitions.write_text(original + WORKFLOWS_SOURCE % {"gate": str(gate), **stage})

    define(FIRST)
    server = start_server(cluster_config(CLUSTER, repo))
    home = tmp_path / "airflow"
    prepare_home(home)
    migrations = home / "migrations"
    now = datetime.now(UTC).replace(microsecond=0)
    for workflow in (*GATED, "fails_until_success"):  # two grid points are due, not three
        write_migration(
            migrations, CLUSTER, workflow, (now - timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
        )
    for workflow in ("goes_stale", "broken_at_first"):
        write_migration(migrations, CLUSTER, workflow, now.strftime("%Y-%m-%d %H:%M:%S"))
    env = bundle_deployment_env(
        home,
        api_port=free_port(),
        target=f"127.0.0.1:{server.port}",
        migrations=migrations,
        job_cwd=repo,
        keep_versions=1,
    )
    start_deployment(airflow_processes, env)
    db, store = home / "airflow.db", home / "store"
    api = Api(int(env["AIRFLOW__API__PORT"]))

    def wait(condition, message: str):
        return wait_alive(airflow_processes, condition, message, deadline)

    # 1. Run 1 of both gated DAGs waits at its gate; the broken workflow is an import
    # error; the other one is a DAG without the stale tag.
    def first_runs_waiting():
        found = {w: first_run_at_its_gate(db, f"{CLUSTER}__{w}") for w in GATED}
        return found if all(found.values()) else None

    first_runs = wait(first_runs_waiting, "run 1 of both gated DAGs at its gate")
    assert all(len(found) == 1 for found in first_runs.values()), first_runs
    [first_version] = {found[0][2] for found in first_runs.values()}

    def problems_reported():
        errors = api.import_errors()
        mine = [e for e in errors or () if e["filename"] == PROBLEMS_FILE_NAME]
        return mine[0]["stack_trace"] if mine else None

    trace = wait(problems_reported, "the broken workflow's import error")
    assert "token-fetcher: 1 migrated workflow(s) give no DAG" in trace
    assert f"({CLUSTER}/broken_at_first)" in trace
    assert "missing_parent: " in trace
    assert "workflow broken_at_first, job only, example_workflows/workflows.py:" in trace
    details = wait(lambda: api.dag(STALE), "the DAG of goes_stale")
    assert STALE_TAG not in tag_names(details)
    assert "**Stale:**" not in details["doc_md"]

    # 2. A job is added and one removed while run 1 waits; goes_stale breaks.
    define(SECOND)

    def new_layouts_parsed():
        versions = {
            query(
                db,
                "select bundle_version from dag_version where dag_id = ? "
                "order by version_number desc limit 1",
                f"{CLUSTER}__{workflow}",
            )[0][0]
            for workflow in GATED
        }
        return versions if first_version not in versions else None

    wait(new_layouts_parsed, "the new layouts to be parsed")

    def stale_shown():
        details = api.dag(STALE)
        return details if details and STALE_TAG in tag_names(details) else None

    details = wait(stale_shown, "the stale tag on goes_stale")
    assert "**Stale:** the latest definition of this workflow fails to parse" in details["doc_md"]
    assert "missing_parent: " in details["doc_md"]
    assert "workflow goes_stale, job only, example_workflows/workflows.py:" in details["doc_md"]
    # The store keeps only one version, but run 1 still runs the first one.
    assert (store / f"{first_version}.json").exists()
    gate.touch()

    # 3. Both definitions are fixed: the import error and the stale marks go away.
    define(FIXED)

    def recovered():
        errors = api.import_errors()
        details = api.dag(STALE)
        if errors is None or details is None or api.dag(BROKEN) is None:
            return None
        clean = not any(e["filename"] == PROBLEMS_FILE_NAME for e in errors)
        # The api-server caches a DAG's docs up to min_serialized_dag_update_interval.
        unmarked = STALE_TAG not in tag_names(details) and "**Stale:**" not in details["doc_md"]
        return clean and unmarked

    wait(recovered, "the problems to clear")

    # 4. Run 1 ran the old layout and run 2 the new one, for both policies.
    def both_runs_done():
        found = {w: finished_runs(db, f"{CLUSTER}__{w}", 2) for w in GATED}
        return found if all(found.values()) else None

    done = wait(both_runs_done, "run 1 and run 2 of both gated DAGs to finish")
    for workflow, runs in done.items():
        dag_id = f"{CLUSTER}__{workflow}"
        assert [run[1] for run in runs] == ["success", "success"], (workflow, runs)
        tasks = [
            dict(
                query(
                    db,
                    "select task_id, state from task_instance where dag_id = ? and run_id = ?",
                    dag_id,
                    run[0],
                )
            )
            for run in runs
        ]
        assert tasks == [
            {"gate": "success", "kept": "success", "removed": "success", "final": "success"},
            {"gate": "success", "kept": "success", "added": "success", "final": "success"},
        ], workflow
        assert runs[0][2] == first_version != runs[1][2]

    # A failed DELAY_UNTIL_SUCCESS run paused its DAG; its next run was never created.
    details = wait(lambda: api.dag(FAILING), "the DAG of fails_until_success")
    assert details["is_paused"] is True
    assert [run[1] for run in dag_runs(db, FAILING)] == ["failed"]

    # 5. Nothing runs the first version any more: it is pruned; the store holds one.
    current = home / "bundles" / "pinball" / "current" / "TOKEN_FETCHER_VERSION"

    def pruned():
        names = sorted(path.name for path in store.glob("tf-*.json"))
        return names if names == [current.read_text().strip() + ".json"] else None

    wait(pruned, "the store to keep the current version only")
    print(f"policies and problems scenario took {time.monotonic() - started:.1f} s")
