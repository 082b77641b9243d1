"""Two TokenFetcherDagBundle partitions over one metadata folder, without a scheduler:
disjoint DAGs whose union is every migrated workflow, a move between them, and their
shared store (test_partitions_scheduler.py has them with a real scheduler)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

from token_fetcher.airflow.bundle import TokenFetcherDagBundle
from token_fetcher.migration import MigrationMetadata, write_metadata
from token_fetcher.partitions import hash_partition

CLUSTER = "example_json"
WORKFLOWS = ["json_daily_rollup", "json_heartbeat", "json_table_sync", "json_weekly_compaction"]


def dag_ids(bundle: TokenFetcherDagBundle) -> set[str]:
    bag = DagBag(dag_folder=str(bundle.path), safe_mode=True)
    assert bag.import_errors == {}
    return set(bag.dags)


def test_two_partitions_serve_disjoint_dags_and_a_move(
    start_server, tmp_path, monkeypatch, tf_settings
) -> None:
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH", str(tmp_path / "b"))
    server = start_server()
    tf_settings(server)
    migrations = tmp_path / "migrations"
    for workflow in WORKFLOWS:
        write_metadata(migrations, MigrationMetadata(CLUSTER, workflow,
                                                     datetime(2020, 1, 1, tzinfo=UTC)))
    bundles = {
        name: TokenFetcherDagBundle(
            name=f"pinball-{name}", migrations_dir=str(migrations), partition=name,
            partitions=["a", "b"], store_dir=str(tmp_path / "store"),
            target=f"127.0.0.1:{server.port}", refresh_interval=1,
        )
        for name in ("a", "b")
    }
    for bundle in bundles.values():
        bundle.initialize()
    served = {name: dag_ids(bundle) for name, bundle in bundles.items()}
    assert served["a"].isdisjoint(served["b"])
    assert served["a"] | served["b"] == {f"{CLUSTER}__{workflow}" for workflow in WORKFLOWS}

    # Move one workflow to the partition the hash did not give it.
    moved = WORKFLOWS[0]
    home = "ab"[hash_partition(CLUSTER, moved, 2)]
    other = "b" if home == "a" else "a"
    write_metadata(migrations, MigrationMetadata(CLUSTER, moved, datetime(2020, 1, 1, tzinfo=UTC),
                                                 partition=other))
    for bundle in bundles.values():
        bundle.refresh()
    assert f"{CLUSTER}__{moved}" in dag_ids(bundles[other])
    assert f"{CLUSTER}__{moved}" not in dag_ids(bundles[home])


def test_a_bad_partitioning_fails_when_the_bundle_is_made(tmp_path) -> None:
    with pytest.raises(ValueError, match="partition 'c' is not one of the partitions"):
        TokenFetcherDagBundle(name="x", partition="c", partitions="a,b",
                              migrations_dir=str(tmp_path))


def test_a_partition_needs_a_store_dir(tmp_path) -> None:
    # Without one, each partition keeps its versions apart, and a run in flight when its
    # workflow moves could not finish from the other partition's bundle.
    with pytest.raises(ValueError, match="a partition needs store_dir, the same folder"):
        TokenFetcherDagBundle(name="x", partition="a", partitions="a,b",
                              migrations_dir=str(tmp_path))


def test_pruning_a_shared_store_keeps_the_version_another_partitions_dags_run_at(
    start_server, tmp_path, monkeypatch, tf_settings, airflow_home
) -> None:
    """Partition a's pruning must not delete partition b's current version, which no run
    uses yet and which is not among a's newest: b's next runs are created at it."""
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session

    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH", str(tmp_path / "b"))
    server = start_server()
    tf_settings(server)
    migrations = tmp_path / "migrations"
    store = tmp_path / "store"
    bundles = {
        name: TokenFetcherDagBundle(
            name=f"prune-{name}", migrations_dir=str(migrations), partition=name,
            partitions=["a", "b"], store_dir=str(store), keep_versions=1,
            target=f"127.0.0.1:{server.port}", refresh_interval=1,
        )
        for name in ("a", "b")
    }
    for workflow in WORKFLOWS:
        write_metadata(migrations, MigrationMetadata(CLUSTER, workflow,
                                                     datetime(2020, 1, 1, tzinfo=UTC)))
    b = bundles["b"]
    b.initialize()
    version_b = b.get_current_version().version
    # Partition b's DAG processor records its DAGs at that version, as Airflow does.
    with create_session() as session:
        session.merge(DagBundleModel(name=b.name))
    bag = DagBag(dag_folder=str(b.path), bundle_path=b.path, bundle_name=b.name)
    assert bag.dags and bag.import_errors == {}
    sync_bag_to_db(bag, b.name, version_b)

    bundles["a"].initialize()  # the newest version now; a keeps only 1
    assert bundles["a"].get_current_version().version != version_b
    assert (store / f"{version_b}.json").exists()
