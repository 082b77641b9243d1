"""DAG processor partitions: which share of the migrated workflows a bundle serves.

Airflow 3 runs one DAG processor per bundle (``airflow dag-processor --bundle-name``), so
several ``TokenFetcherDagBundle`` instances over the same metadata folder split the
workflows between them. Every bundle is configured with the same list of partition
names and its own name in it. A workflow belongs to

- the partition its metadata file names (``"partition"``, written by
  ``token-fetcher migrate --partition``) when that is one of the names, else
- the partition a stable hash of ``cluster/workflow`` picks among the names.

Every bundle computes the same owner for every file, so a workflow is in exactly one
partition at any time. Moving one is rewriting its file's partition: the DAG (same
dag_id, same run history) leaves one bundle and appears in the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from token_fetcher.migration import MigrationMetadata

__all__ = ["Misplaced", "Partitioning", "hash_partition"]


def hash_partition(cluster: str, workflow: str, count: int) -> int:
    """A stable index in ``range(count)`` for a workflow: the same in every process and
    Python version (unlike hash(), which is salted per process)."""
    if count <= 0:
        raise ValueError(f"the number of partitions must be positive, got {count}")
    digest = hashlib.sha256(f"{cluster}/{workflow}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Misplaced:
    """A metadata file naming a partition that is not configured; it is served where the
    hash puts it (``owner``) rather than by nobody."""

    metadata: MigrationMetadata
    owner: str

    def __str__(self) -> str:
        return (f"partition {self.metadata.partition!r} is not configured; served by "
                f"partition {self.owner!r} (by hash) instead")


@dataclass(frozen=True)
class Partitioning:
    """This bundle's share: partition ``name`` of ``names`` (the same list everywhere)."""

    name: str
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        if not names:
            raise ValueError("partitions: give at least one partition name")
        if any(not isinstance(item, str) or not item.strip() or "," in item for item in names):
            raise ValueError(f"partitions: names must be non-empty and without commas, got "
                             f"{list(names)!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"partitions: names must be unique, got {list(names)!r}")
        if self.name not in names:
            raise ValueError(f"partition {self.name!r} is not one of the partitions "
                             f"{list(names)!r}")

    @classmethod
    def parse(cls, name: str, names: str | Sequence[str]) -> Partitioning:
        """From a bundle's kwargs or a command line: ``names`` as a list or "a,b,c"."""
        if isinstance(names, str):
            names = [item.strip() for item in names.split(",")]
        return cls(name, tuple(names))

    def owner(self, metadata: MigrationMetadata) -> str:
        """The partition that serves ``metadata``'s workflow."""
        if metadata.partition in self.names:
            return metadata.partition
        index = hash_partition(metadata.cluster_name, metadata.workflow_name, len(self.names))
        return self.names[index]

    def select(
        self, entries: Iterable[MigrationMetadata]
    ) -> tuple[list[MigrationMetadata], list[Misplaced]]:
        """This partition's entries, and those of them that name an unknown partition."""
        mine: list[MigrationMetadata] = []
        misplaced: list[Misplaced] = []
        for entry in entries:
            if self.owner(entry) != self.name:
                continue
            mine.append(entry)
            if entry.partition and entry.partition not in self.names:
                misplaced.append(Misplaced(entry, self.name))
        return mine, misplaced
