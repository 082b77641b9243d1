"""TokenFetcherDagBundle without a scheduler: versions follow the layouts, a pinned
version rebuilds its own layouts, an outage keeps the version."""

from __future__ import annotations

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow_helpers import write_migration

from tests.helpers import wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.airflow import LOADER_FILE_NAME, PROBLEMS_FILE_NAME
from token_fetcher.airflow.manifest import MANIFEST_FILE_NAME, Manifest
from token_fetcher.client import TokenFetcherClient

CLUSTER = "example_python"
DAG_ID = f"{CLUSTER}__daily_reporting"


@pytest.fixture
def setup(make_bundle):
    for workflow in ("daily_reporting", "hourly_metrics"):
        write_migration(make_bundle.migrations, CLUSTER, workflow)
    return make_bundle.server, make_bundle.server.repo, make_bundle, make_bundle.store


def fingerprints(path) -> dict[str, str]:
    bag = DagBag(dag_folder=str(path), safe_mode=True)
    assert bag.import_errors == {}
    return {dag_id: dag.task_dict["final"].fingerprint for dag_id, dag in bag.dags.items()}


def test_versions_follow_the_layouts_and_a_pinned_version_keeps_its_own(setup):
    server, repo, make_bundle, store = setup
    bundle = make_bundle()
    bundle.initialize()
    first = bundle.get_current_version().version
    assert sorted(p.name for p in bundle.path.iterdir()) == sorted(
        [LOADER_FILE_NAME, MANIFEST_FILE_NAME, PROBLEMS_FILE_NAME, "TOKEN_FETCHER_VERSION"]
    )
    old = fingerprints(bundle.path)
    assert sorted(old) == [DAG_ID, f"{CLUSTER}__hourly_metrics"]

    bundle.refresh()  # nothing changed: same version
    assert bundle.get_current_version().version == first

    # The legacy definition changes; the server re-parses it.
    reporting = repo / "example_workflows" / "reporting.py"
    reporting.write_text(
        reporting.read_text().replace(
            "'echo \"daily_reporting done\"'", "'echo \"daily_reporting finished\"'"
        )
    )
    with TokenFetcherClient(f"127.0.0.1:{server.port}", cache_ttl=0) as client:
        wait_for(
            lambda: client.get_spec(CLUSTER, "daily_reporting").fingerprint != old[DAG_ID],
            message="the server to see the change",
        )
    bundle.refresh()
    second = bundle.get_current_version().version
    assert second != first
    new = fingerprints(bundle.path)
    assert new[DAG_ID] != old[DAG_ID]
    assert new[f"{CLUSTER}__hourly_metrics"] == old[f"{CLUSTER}__hourly_metrics"]
    assert {p.name for p in store.iterdir()} == {f"{first}.json", f"{second}.json"}

    # A worker for a run created at the first version gets the first layouts back.
    pinned = make_bundle(version=first)
    pinned.initialize()
    assert pinned.path.name == first
    assert fingerprints(pinned.path) == old
    bag = DagBag(dag_folder=str(pinned.path))
    final = bag.dags[DAG_ID].task_dict["final"]
    assert final.command_segments == ['echo "daily_reporting done"']
    with pytest.raises(ValueError):
        pinned.refresh()

    # The token fetcher goes away: the version (and its layouts) stay.
    server.stop(grace=0)
    bundle.refresh()
    assert bundle.get_current_version().version == second
    assert Manifest.read(bundle.path / MANIFEST_FILE_NAME).fingerprints() == new


def test_a_version_missing_from_the_store_is_an_error(setup):
    _, _, make_bundle, _ = setup
    with pytest.raises(FileNotFoundError, match="store_dir must be shared"):
        make_bundle(version="tf-00000000000000000000000000000000").initialize()


def test_a_line_shift_and_an_unrelated_broken_workflow_keep_the_version(setup):
    server, repo, make_bundle, store = setup
    bundle = make_bundle()
    bundle.initialize()
    first = bundle.get_current_version().version
    # A comment moves every line of daily_reporting's module; weekly_cleanup (not
    # migrated here) breaks.
    reporting = repo / "example_workflows" / "reporting.py"
    reporting.write_text("# A comment that moves every line below it.\n" + reporting.read_text())
    maintenance = repo / "example_workflows" / "maintenance.py"
    maintenance.write_text(
        maintenance.read_text().replace("        dependency=[]),", "        dependency=['nope']),")
    )
    with TokenFetcherClient(f"127.0.0.1:{server.port}", cache_ttl=0) as client:
        wait_for(
            lambda: client.get_spec(CLUSTER, "weekly_cleanup").status == pb.PARSE_STATUS_STALE,
            message="the server to see both edits",
        )
    bundle.refresh()
    assert bundle.get_current_version().version == first
    assert [p.name for p in store.iterdir()] == [f"{first}.json"]
