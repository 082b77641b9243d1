"""Partitions: every workflow is in exactly one partition, an explicit partition wins, a
move leaves one partition for the other; the manifest a partitioned bundle builds, against
a real server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_fetcher.airflow import manifest as manifests
from token_fetcher.migration import MetadataError, MigrationMetadata, parse_metadata, write_metadata
from token_fetcher.partitions import Partitioning, hash_partition

JAN_1 = datetime(2020, 1, 1, tzinfo=UTC)


def entry(workflow: str, partition: str = "", cluster: str = "core") -> MigrationMetadata:
    return MigrationMetadata(cluster, workflow, JAN_1, partition=partition)


def test_the_hash_is_stable_and_in_range() -> None:
    # Pinned values: a change of the hash would move workflows between partitions.
    assert [hash_partition("core", f"w{i}", 4) for i in range(8)] == [3, 3, 0, 2, 3, 1, 1, 1]
    assert all(0 <= hash_partition("c", f"w{i}", 3) < 3 for i in range(300))
    with pytest.raises(ValueError, match="must be positive"):
        hash_partition("c", "w", 0)


def test_the_hash_spreads_workflows() -> None:
    counts = [0, 0, 0]
    for number in range(3000):
        counts[hash_partition("core", f"workflow_{number}", 3)] += 1
    assert min(counts) > 800, counts


names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    workflows=st.lists(st.tuples(names, st.sampled_from(["", "a", "b", "c", "zzz"])),
                       min_size=1, max_size=40, unique_by=lambda item: item[0]),
    partitions=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4,
                        unique=True),
)
def test_every_workflow_is_in_exactly_one_partition(
    workflows: list[tuple[str, str]], partitions: list[str]
) -> None:
    entries = [entry(workflow, partition) for workflow, partition in workflows]
    shares = {name: Partitioning(name, tuple(partitions)).select(entries) for name in partitions}
    seen = [item.workflow_name for mine, _ in shares.values() for item in mine]
    assert sorted(seen) == sorted(workflow for workflow, _ in workflows)
    for name, (mine, misplaced) in shares.items():
        for item in mine:
            if item.partition in partitions:
                assert item.partition == name  # an explicit partition wins
        # A partition that is not configured is reported once, by the partition serving it.
        assert [m.metadata for m in misplaced] == [
            item for item in mine if item.partition and item.partition not in partitions]


def test_a_move_leaves_one_partition_for_the_other() -> None:
    partitions = ("a", "b")
    before = entry("w", "a")
    after = entry("w", "b")
    share = {name: Partitioning(name, partitions) for name in partitions}
    assert [share[n].select([before])[0] for n in partitions] == [[before], []]
    assert [share[n].select([after])[0] for n in partitions] == [[], [after]]


def test_an_unknown_partition_is_served_by_the_hash_and_reported() -> None:
    partitions = ("a", "b")
    stray = entry("w", "retired")
    owner = partitions[hash_partition("core", "w", 2)]
    mine, misplaced = Partitioning(owner, partitions).select([stray])
    assert mine == [stray]
    assert str(misplaced[0]) == (f"partition 'retired' is not configured; served by partition "
                                 f"{owner!r} (by hash) instead")


@pytest.mark.parametrize(
    ("name", "names", "message"),
    [
        ("c", "a,b", "partition 'c' is not one of the partitions ['a', 'b']"),
        ("a", "a,a", "names must be unique"),
        ("a", "a,", "names must be non-empty"),
        ("a", [], "give at least one partition name"),
    ],
)
def test_bad_partitionings_are_named(name: str, names: str | list[str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Partitioning.parse(name, names)
    assert message in str(caught.value)


def test_the_partition_in_metadata_files() -> None:
    text = json.dumps({"cluster_name": "c", "workflow_name": "w",
                       "migration_date": "2020-01-01 00:00:00", "partition": "east"})
    metadata = parse_metadata(text)
    assert metadata.partition == "east"
    assert parse_metadata(metadata.to_json()) == metadata
    assert "partition" not in entry("w").to_json()
    for bad, problem in ((5, "partition must be a string, got a number (5)"),
                         ("a/b", "partition 'a/b' contains '/'")):
        document = json.loads(text)
        document["partition"] = bad
        with pytest.raises(MetadataError) as caught:
            parse_metadata(json.dumps(document))
        assert str(caught.value) == problem


# --- the manifest a partitioned bundle builds (its subprocess entry point) ------------


def test_two_partitions_build_disjoint_manifests(start_server, tmp_path: Path) -> None:
    server = start_server()
    folder = tmp_path / "migrations"
    workflows = ["json_daily_rollup", "json_heartbeat", "json_table_sync",
                 "json_weekly_compaction"]
    for workflow in workflows:
        write_metadata(folder, MigrationMetadata("example_json", workflow, JAN_1))
    write_metadata(folder, MigrationMetadata("example_python", "daily_reporting", JAN_1,
                                             partition="b"))
    dag_ids = {}
    for name in ("a", "b"):
        output = tmp_path / f"{name}.json"
        assert manifests._main(["--migrations-dir", str(folder), "--target",
                                f"127.0.0.1:{server.port}", "--output", str(output),
                                "--partition", name, "--partitions", "a,b"]) == 0
        manifest = manifests.Manifest.read(output)
        assert manifest.problems == ()
        dag_ids[name] = {layout.dag_id for layout in manifest.layouts}
    assert dag_ids["a"].isdisjoint(dag_ids["b"])
    assert dag_ids["a"] | dag_ids["b"] == {
        *(f"example_json__{workflow}" for workflow in workflows),
        "example_python__daily_reporting"}
    assert "example_python__daily_reporting" in dag_ids["b"]
    for workflow in workflows:
        owner = "ab"[hash_partition("example_json", workflow, 2)]
        assert f"example_json__{workflow}" in dag_ids[owner]
