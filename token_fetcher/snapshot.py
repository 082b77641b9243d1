"""What a cluster serves at one moment, as values: its snapshot, each workflow's entry and
version, and the changes between two snapshots that watchers hear of.

A snapshot is immutable and swapped in whole (token_fetcher.catalog), so requests read a
consistent view without locks; token_fetcher.snapshot_merge makes the next one from a
parse.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from legacy_parser import model
from token_fetcher._proto import token_fetcher_pb2 as pb

__all__ = ["Change", "ClusterSnapshot", "Entry", "LoadState", "ReloadOutcome", "Status", "Version"]


class Status(enum.Enum):
    OK = pb.PARSE_STATUS_OK
    STALE = pb.PARSE_STATUS_STALE
    BROKEN = pb.PARSE_STATUS_BROKEN


class LoadState(enum.Enum):
    LOADING = pb.LOAD_STATE_LOADING
    READY = pb.LOAD_STATE_READY
    FAILED = pb.LOAD_STATE_FAILED


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a workflow: the parsed model and its spec, kept serialized (a third
    of the memory of the message; a served answer is cached by the service)."""

    workflow: model.Workflow
    fingerprint: str
    spec_bytes: bytes  # a WorkflowSpec without next_run_time

    def spec(self) -> pb.WorkflowSpec:
        return pb.WorkflowSpec.FromString(self.spec_bytes)


# Compared and hashed by identity: an unchanged workflow keeps its Entry across parses
# (see snapshot_merge), so the service can key the answers it builds from one on it.
@dataclass(frozen=True, eq=False, slots=True, weakref_slot=True)
class Entry:
    name: str
    status: Status
    version: Version | None
    errors: tuple[model.WorkflowError, ...]
    # The layout changed between two parses that read the same files (see snapshot_merge).
    dynamic: bool = False


@dataclass(frozen=True)
class ClusterSnapshot:
    name: str
    state: LoadState
    format: int
    entries: Mapping[str, Entry]
    names: tuple[str, ...]
    cluster_errors: tuple[model.WorkflowError, ...]
    errors: tuple[model.WorkflowError, ...]
    loaded_at: float | None = None
    load_duration: float = 0.0
    last_success: float | None = None
    files_watched: int = 0
    job_count: int = 0

    def count(self, status: Status) -> int:
        return sum(1 for entry in self.entries.values() if entry.status is status)

    @property
    def dynamic_count(self) -> int:
        return sum(1 for entry in self.entries.values() if entry.dynamic)


@dataclass(frozen=True)
class Change:
    type: int  # pb.WorkflowEvent.Type
    cluster: str
    workflow: str
    old_fingerprint: str
    new_fingerprint: str
    errors: tuple[model.WorkflowError, ...]
    time: float


@dataclass(frozen=True)
class ReloadOutcome:
    snapshot: ClusterSnapshot
    changes: tuple[Change, ...]
