"""The loader split across files under Airflow: a bundle version with more layouts than
``dags_per_loader_file`` gets several loader files, Airflow's DagBag builds every DAG
exactly once from them, and a pinned version materializes the same files."""

from __future__ import annotations

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow_helpers import write_migration

from token_fetcher.airflow import loader_file_names, loader_file_share

CLUSTER = "example_python"
WORKFLOWS = ("daily_reporting", "hourly_metrics", "weekly_cleanup")


@pytest.fixture
def bundle(make_bundle):
    for workflow in WORKFLOWS:
        write_migration(make_bundle.migrations, CLUSTER, workflow)
    return make_bundle


def loaders(path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if loader_file_share(p.name) is not None)


def test_every_dag_comes_from_exactly_one_loader_file(bundle):
    current = bundle(dags_per_loader_file=1)
    current.initialize()
    assert loaders(current.path) == loader_file_names(3)
    built: dict[str, str] = {}
    for name in loaders(current.path):
        bag = DagBag(dag_folder=str(current.path / name), safe_mode=True)
        assert bag.import_errors == {}
        for dag_id in bag.dags:
            assert dag_id not in built, f"{dag_id} built by {built.get(dag_id)} and {name}"
            built[dag_id] = name
    assert sorted(built) == [f"{CLUSTER}__{workflow}" for workflow in WORKFLOWS]

    version = current.get_current_version().version
    pinned = bundle(version=version, dags_per_loader_file=1)
    pinned.initialize()
    assert loaders(pinned.path) == loaders(current.path)

    fewer = bundle(dags_per_loader_file=2)  # another split: the old loader files go
    fewer.refresh()
    assert loaders(fewer.path) == loader_file_names(2)
    bag = DagBag(dag_folder=str(fewer.path), safe_mode=True)
    assert sorted(bag.dags) == sorted(built)
