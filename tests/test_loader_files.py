"""The Airflow loader split across files, without Airflow: every DAG (and every problem)
falls to exactly one loader file, in the dags folder and from a bundle manifest, and
``write-loader`` writes one split and removes another."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime

import pytest

from tests.helpers import example_clusters
from token_fetcher.airflow import (
    LOADER_FILE_NAME,
    loader_file_count,
    loader_file_names,
    loader_file_share,
    loader_file_text,
    loader_files,
)
from token_fetcher.airflow.loader import load_layouts
from token_fetcher.airflow.manifest import build_manifest
from token_fetcher.airflow.settings import Settings
from token_fetcher.cli import airflow_commands
from token_fetcher.client import TokenFetcherClient
from token_fetcher.config import parse_config
from token_fetcher.migration import MigrationMetadata, write_metadata
from token_fetcher.server import TokenFetcherServer

DATE = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """A server over the examples; a metadata file for each of their workflows, one for a
    workflow it does not know and one that cannot be read (problems)."""
    folder = tmp_path_factory.mktemp("loader-files")
    config = parse_config({"listen": "127.0.0.1:0", "metrics": "127.0.0.1:0",
                           "state_dir": str(folder / "state"),
                           "clusters": example_clusters()}, folder)
    server = TokenFetcherServer(config, shutdown_notice_seconds=0)
    server.start()
    try:
        assert server.catalog.wait_ready(60), "first load did not finish"
        target = f"127.0.0.1:{server.port}"
        migrations = folder / "migrations"
        with TokenFetcherClient(target, timeout=5, retries=0) as client:
            for cluster in ("example_python", "example_json"):
                for workflow in client.list_workflows(cluster).workflows:
                    write_metadata(migrations, MigrationMetadata(cluster, workflow.name, DATE))
        write_metadata(migrations, MigrationMetadata("example_python", "no_such_workflow", DATE))
        (migrations / "broken.json").write_text("{not json")
        yield Settings(target=target, migrations_dir=str(migrations), cache_dir="")
    finally:
        server.stop(grace=1)


def every_share(shares: int, **where) -> tuple[Counter, Counter]:
    """How often each DAG id and each problem comes out of the ``shares`` loader files."""
    dags, problems = Counter(), Counter()
    for share in range(shares):
        result = load_layouts(share=share, shares=shares, **where)
        dags.update(layout.dag_id for layout in result.layouts)
        problems.update(str(problem) for problem in result.problems)
    return dags, problems


@pytest.mark.parametrize("shares", [2, 3, 7])
def test_each_dag_and_problem_comes_from_exactly_one_loader_file(migrated, shares):
    whole = load_layouts(migrated)
    assert len(whole.layouts) == 11 and len(whole.problems) == 2
    dags, problems = every_share(shares, settings=migrated)
    assert dags == Counter(layout.dag_id for layout in whole.layouts)
    assert problems == Counter(str(problem) for problem in whole.problems)
    per_file = [len(load_layouts(migrated, share=s, shares=shares).layouts)
                for s in range(shares)]
    assert max(per_file) < len(whole.layouts)  # the work is split, not copied


def test_a_bundle_manifest_splits_the_same_way(migrated, tmp_path):
    with TokenFetcherClient(migrated.target, timeout=5, retries=0) as client:
        manifest = build_manifest(client, migrated.migrations_dir)
    path = tmp_path / "manifest.json"
    manifest.write(path)
    from_folder, _ = every_share(3, settings=migrated)
    dags, problems = every_share(3, settings=migrated, manifest_path=path)
    assert dags == from_folder == Counter(layout.dag_id for layout in manifest.layouts)
    assert problems == Counter(str(problem) for problem in manifest.problems)


def test_a_worker_parse_builds_its_dag_only_in_the_file_that_owns_it(migrated):
    """A task's worker parses the file its DAG came from, for that dag_id alone."""
    dag_id = "example_python__daily_reporting"
    found = [len(load_layouts(migrated, dag_id=dag_id, share=s, shares=3).layouts)
             for s in range(3)]
    assert sorted(found) == [0, 0, 1]


def test_a_share_out_of_range_is_refused(migrated):
    with pytest.raises(ValueError, match="share 3 of 3"):
        load_layouts(migrated, share=3, shares=3)


def test_loader_files_name_and_build_their_share():
    assert loader_files(1) == {LOADER_FILE_NAME: loader_file_text()}
    files = loader_files(12)
    assert list(files) == loader_file_names(12)
    for share, (name, text) in enumerate(files.items()):
        assert loader_file_share(name) == (share, 12)
        assert f"load_dags(globals(), share={share}, shares=12)" in text
    assert loader_file_share("token_fetcher_dags_3_of_2.py") is None
    assert loader_file_share("other.py") is None
    assert [loader_file_count(n) for n in (0, 5000, 5001, 30000)] == [1, 1, 2, 6]


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="token-fetcher")
    airflow_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["airflow", *argv])
    return args.func(args)


def loaders_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if loader_file_share(p.name))


def test_write_loader_writes_one_split_and_removes_another(tmp_path, capsys):
    (tmp_path / "notes.py").write_text("# someone else's DAG file\n")
    assert run("write-loader", "--files", "3", str(tmp_path)) == 0
    assert loaders_in(tmp_path) == loader_file_names(3)
    for name, text in loader_files(3).items():
        assert (tmp_path / name).read_text() == text

    assert run("write-loader", "--files", "2", str(tmp_path)) == 0
    assert loaders_in(tmp_path) == loader_file_names(2)

    # Sized from the metadata folder by default: a handful of workflows, one file.
    (tmp_path / "migrations").mkdir()
    write_metadata(tmp_path / "migrations", MigrationMetadata("c", "w", DATE))
    assert run("write-loader", str(tmp_path)) == 0
    assert loaders_in(tmp_path) == [LOADER_FILE_NAME]
    assert (tmp_path / "notes.py").exists()
    assert "removed" in capsys.readouterr().out


def test_write_loader_keeps_an_edited_file_of_another_split_unless_forced(tmp_path):
    assert run("write-loader", "--files", "2", str(tmp_path)) == 0
    edited = tmp_path / loader_file_names(2)[1]
    edited.write_text(edited.read_text() + "# edited\n")
    assert run("write-loader", "--files", "1", str(tmp_path)) == 1
    assert loaders_in(tmp_path) == loader_file_names(2)  # nothing changed
    assert run("write-loader", "--files", "1", "--force", str(tmp_path)) == 0
    assert loaders_in(tmp_path) == [LOADER_FILE_NAME]
    assert run("write-loader", "--files", "0", str(tmp_path)) == 2
