"""Bundle manifests of the Airflow integration without Airflow (token_fetcher.airflow.manifest
imports none): the version is the layouts and nothing else, the store is pruned, and the
problems file raises the problems.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
from datetime import UTC, datetime

import pytest

from tests.helpers import example_clusters, replace_file, wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.airflow import problems_file_text
from token_fetcher.airflow.loader import MigratedWorkflowProblems
from token_fetcher.airflow.manifest import (
    MANIFEST_FILE_NAME,
    Manifest,
    build_manifest,
    prune_store,
)
from token_fetcher.airflow.problems import Problem
from token_fetcher.client import TokenFetcherClient
from token_fetcher.migration import MigrationMetadata, write_metadata

PY = "example_python"
MIGRATED = ("daily_reporting", "hourly_metrics", "weekly_cleanup")


@pytest.fixture
def migrated(start_server, example_copy, tmp_path):
    """A server over a copy of the examples, and metadata files for three of its
    workflows plus one it does not know (a problem)."""
    repo = example_copy("python_repo")
    server = start_server(clusters=example_clusters(repo, example_copy("json_repo")))
    migrations = tmp_path / "migrations"
    date = datetime(2020, 1, 1, tzinfo=UTC)
    for workflow in (*MIGRATED, "no_such_workflow"):
        write_metadata(migrations, MigrationMetadata(PY, workflow, date))
    return server, repo, migrations


def manifest_of(server, migrations, previous: Manifest | None = None) -> Manifest:
    with TokenFetcherClient(f"127.0.0.1:{server.port}", timeout=2, retries=0) as client:
        return build_manifest(client, migrations, previous=previous)


def test_an_outage_keeps_the_bundle_version(migrated):
    server, _, migrations = migrated
    first = manifest_of(server, migrations)
    assert sorted(layout.workflow for layout in first.layouts) == sorted(MIGRATED)
    [problem] = first.problems
    assert "NOT_FOUND" in problem.message

    port = server.port
    server.stop(grace=0)
    with TokenFetcherClient(f"127.0.0.1:{port}", timeout=1, retries=0) as client:
        during = build_manifest(client, migrations, previous=first)
    # The problem reads differently while the server is away; the layouts are the
    # previous ones; the version does not move.
    [problem] = during.problems
    assert "UNAVAILABLE" in problem.message
    assert during.fingerprints() == first.fingerprints()
    assert during.version == first.version


BROKEN_WORKFLOW = """
WORKFLOWS['broken_from_the_start'] = WorkflowConfig(
    jobs={'a': JobConfig(CommandJobTemplate('a', 'true'), dependency=['missing'])},
    final_job_config=JobConfig(CommandJobTemplate('final', 'true')),
    schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1)))
"""


def test_a_line_shift_and_broken_workflows_keep_the_bundle_version(migrated):
    server, repo, migrations = migrated
    first = manifest_of(server, migrations)
    reporting = repo / "example_workflows" / "reporting.py"
    reporting.write_text("# A comment that moves every line below it.\n" + reporting.read_text())
    # weekly_cleanup breaks after its migration: the server serves its last good layout.
    # A workflow broken from the start is migrated too: it gives no DAG.
    maintenance = repo / "example_workflows" / "maintenance.py"
    replace_file(maintenance, "        dependency=[]),", "        dependency=['no_such_job']),")
    maintenance.write_text(maintenance.read_text() + BROKEN_WORKFLOW)
    write_metadata(
        migrations, MigrationMetadata(PY, "broken_from_the_start", datetime(2020, 1, 1, tzinfo=UTC))
    )
    with TokenFetcherClient(f"127.0.0.1:{server.port}", cache_ttl=0) as client:
        wait_for(
            lambda: client.get_spec(PY, "weekly_cleanup").status == pb.PARSE_STATUS_STALE,
            message="the server to see the broken definition",
        )
    second = manifest_of(server, migrations, previous=first)
    assert second.version == first.version
    broken = [p for p in second.problems if p.workflow == "broken_from_the_start"]
    assert len(broken) == 1 and "missing_parent: " in broken[0].message
    assert "example_workflows/maintenance.py:" in broken[0].message
    cleanup = {layout.workflow: layout for layout in second.layouts}["weekly_cleanup"]
    [error] = cleanup.definition_errors
    assert error.startswith("missing_parent: ")
    assert "workflow weekly_cleanup" in error
    assert "example_workflows/maintenance.py:" in error
    # The diagnostics travel with the manifest, outside its version.
    again = Manifest.from_json(second.to_json())
    assert again.version == second.version
    assert {x.workflow: x.definition_errors for x in again.layouts}["weekly_cleanup"] == (error,)


BAD_TASK_ID = """
WORKFLOWS['bad_task_id'] = WorkflowConfig(
    jobs={'not a task id': JobConfig(CommandJobTemplate('x', 'true'))},
    final_job_config=JobConfig(CommandJobTemplate('final', 'true')),
    schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1)))
"""


def test_a_job_name_airflow_cannot_take_is_a_problem_not_a_layout(migrated):
    server, repo, migrations = migrated
    maintenance = repo / "example_workflows" / "maintenance.py"
    maintenance.write_text(maintenance.read_text() + BAD_TASK_ID)
    write_metadata(
        migrations, MigrationMetadata(PY, "bad_task_id", datetime(2020, 1, 1, tzinfo=UTC))
    )
    with TokenFetcherClient(f"127.0.0.1:{server.port}", cache_ttl=0) as client:
        wait_for(
            lambda: "bad_task_id" in {w.name for w in client.list_workflows(PY).workflows},
            message="the server to see the new workflow",
        )
    manifest = manifest_of(server, migrations)
    assert "bad_task_id" not in {layout.workflow for layout in manifest.layouts}
    [problem] = [p for p in manifest.problems if p.workflow == "bad_task_id"]
    assert problem.message.startswith("task id (job name) 'not a task id' has characters")


def test_a_format_1_manifest_keeps_the_version_it_was_stored_under(migrated):
    server, _, migrations = migrated
    current = manifest_of(server, migrations)
    # Format 1 hashed the whole content, specs and problems included.
    content = {
        "format": 1,
        "layouts": [layout.to_dict() for layout in sorted(current.layouts, key=lambda x: x.dag_id)],
        "problems": [problem.to_dict() for problem in current.problems],
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    version = "tf-" + hashlib.sha256(text.encode()).hexdigest()[:32]
    stored = json.dumps({**content, "version": version})
    old = Manifest.from_json(stored)
    assert old.version == version != current.version
    assert old.fingerprints() == current.fingerprints()
    with pytest.raises(ValueError, match="does not match its version"):
        Manifest.from_json(json.dumps({**content, "problems": [], "version": version}))


def test_the_store_keeps_the_versions_in_use_and_the_newest(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    versions = [f"tf-{index:032d}" for index in range(6)]
    for age, version in enumerate(reversed(versions)):  # versions[0] is the oldest
        path = store / f"{version}.json"
        path.write_text("{}")
        os.utime(path, ns=(10**18 - age * 10**9,) * 2)
    (store / ".tf-x.json.tmp").write_text("")  # a write under way: not a version
    in_use = {versions[0], versions[2]}
    deleted = prune_store(store, keep=2, protected=in_use)
    assert deleted == [versions[1], versions[3]]
    assert sorted(p.name for p in store.iterdir()) == sorted(
        [".tf-x.json.tmp"] + [f"{v}.json" for v in (versions[0], versions[2], *versions[4:])]
    )
    assert prune_store(store, keep=2, protected=in_use) == []


def test_the_problems_file_raises_the_manifests_problems(tmp_path):
    """In the bundle: the manifest next to it (the dags-folder mode needs Airflow's
    settings: see tests/airflow_tier/test_loader.py)."""
    problems_file = tmp_path / "token_fetcher_problems.py"
    problems_file.write_text(problems_file_text())
    problem = Problem(
        "FAILED_PRECONDITION: workflow 'w' in cluster 'c' fails to parse and has no good "
        "version: cycle: a -> b -> a (cluster c, workflow w, defs.py:7)",
        "/migrations/c/w.json",
        "c",
        "w",
    )
    Manifest((), (problem,)).write(tmp_path / MANIFEST_FILE_NAME)
    with pytest.raises(MigratedWorkflowProblems) as raised:
        runpy.run_path(str(problems_file))
    assert str(raised.value) == f"token-fetcher: 1 migrated workflow(s) give no DAG:\n- {problem}"
    assert "(c/w)" in str(raised.value) and "cycle: " in str(raised.value)

    Manifest((), ()).write(tmp_path / MANIFEST_FILE_NAME)
    runpy.run_path(str(problems_file))  # recovered: no error
