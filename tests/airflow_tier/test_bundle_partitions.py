"""Two TokenFetcherDagBundle partitions over one metadata folder, without a scheduler:
disjoint DAGs whose union is every migrated workflow, and a move between them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from airflow.dag_processing.dagbag import DagBag

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
