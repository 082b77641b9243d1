"""The preflight of a migration wave: which workflows of a cluster can be migrated.

preflight() classifies each selected workflow from the cluster's ListWorkflows answer and
the metadata files already written: migratable, migratable with caveats, blocked (with
why), or already migrated. It writes nothing; the migrate command does.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.handovers import Handover, schedule_handover
from token_fetcher.migration import MetadataError, MigrationMetadata, metadata_path, read_metadata
from token_fetcher.migration_record import format_time

__all__ = ["Candidate", "existing_problem", "is_glob", "preflight"]

# How Pinball's overrun policies map to Airflow where the mapping is not exact
# (docs/airflow.md, "Overrun policies").
_OVERRUN_CAVEATS = {
    pb.OVERRUN_POLICY_UNSPECIFIED: "overrun SKIP: a run that comes while one is active waits "
    "and runs late instead of being dropped",
    pb.OVERRUN_POLICY_SKIP: "overrun SKIP: a run that comes while one is active waits and runs "
    "late instead of being dropped",
    pb.OVERRUN_POLICY_DELAY_UNTIL_SUCCESS: "overrun DELAY_UNTIL_SUCCESS: each task waits for "
    "its own previous instance, not the whole previous run",
    pb.OVERRUN_POLICY_ABORT_RUNNING: "overrun ABORT_RUNNING: an active run is failed when it "
    "is one recurrence old, not when the next run time comes",
}


@dataclass
class Candidate:
    """One workflow of a wave: ``status`` is migratable, caveats, blocked or migrated
    (already, with the same date); ``notes`` say why (the caveats or what blocks it)."""

    workflow: str
    status: str
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""
    handover: Handover | None = None
    path: str = ""
    written: bool = False


def is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def preflight(cluster: str, answer: pb.ListWorkflowsResponse, patterns: Sequence[str],
              folder: str, migration_date: datetime, force: bool,
              partition: str = "") -> list[Candidate]:
    """Classify the workflows of ``answer`` (the cluster's ListWorkflows) whose names match
    ``patterns``; a plain name that matches nothing is blocked as unknown."""
    summaries = {summary.name: summary for summary in answer.workflows}
    names = sorted(name for name in summaries
                   if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns))
    candidates = [
        Candidate(pattern, "blocked", ["no such workflow in the cluster"])
        for pattern in patterns if not is_glob(pattern) and pattern not in summaries
    ]
    for name in names:
        metadata = MigrationMetadata(cluster, name, migration_date, partition=partition)
        candidates.append(_classify(summaries[name], metadata, folder, force))
    return sorted(candidates, key=lambda candidate: candidate.workflow)


def _classify(summary: pb.WorkflowSummary, metadata: MigrationMetadata, folder: str,
              force: bool) -> Candidate:
    candidate = Candidate(summary.name, "migratable", fingerprint=summary.fingerprint)
    if summary.status == pb.PARSE_STATUS_BROKEN:
        candidate.status = "blocked"
        messages = (" ".join(error.message.split()) for error in summary.errors)
        candidate.notes = [f"broken: {message}" for message in messages] or ["broken"]
        return candidate
    candidate.handover = schedule_handover(summary, metadata.migration_epoch)
    if candidate.handover is None:
        candidate.status, candidate.notes = "blocked", ["no usable schedule"]
        return candidate
    existing = metadata_path(folder, metadata.cluster_name, metadata.workflow_name)
    problem = existing_problem(folder, metadata, force)
    if problem:
        candidate.status, candidate.notes = "blocked", [problem]
        return candidate
    if os.path.exists(existing) and not force and read_metadata(existing) == metadata:
        candidate.status, candidate.path = "migrated", existing
        return candidate
    if summary.status == pb.PARSE_STATUS_STALE:
        candidate.notes.append("stale: the latest definition fails to parse; the last good "
                               "version is migrated")
    if summary.dynamic:
        candidate.notes.append("dynamic: its layout changes between parses of the same files")
    if summary.schedule.overrun_policy in _OVERRUN_CAVEATS:
        candidate.notes.append(_OVERRUN_CAVEATS[summary.schedule.overrun_policy])
    if candidate.notes:
        candidate.status = "caveats"
    return candidate


def existing_problem(folder: str, metadata: MigrationMetadata, force: bool) -> str:
    """Why a metadata file already there stops this migration ("" when nothing does).

    Moving the migration date of a workflow already handed over would make Airflow skip
    or repeat runs; that takes --force. A rolled-back workflow migrates again from any
    date at or after its rollback date: Pinball ran the grid points up to then. Another
    partition is fine: the DAG keeps its id and its runs.
    """
    path = metadata_path(folder, metadata.cluster_name, metadata.workflow_name)
    if force or not os.path.exists(path):
        return ""
    try:
        existing = read_metadata(path)
    except MetadataError as exc:
        return f"{exc}; use --force to replace it"
    if existing.rollback_date is not None:
        if metadata.migration_date < existing.rollback_date:
            return (f"{path} was rolled back on {format_time(existing.rollback_epoch)}; migrate it "
                    "again with a migration date at or after that")
        return ""
    if dataclasses.replace(existing, partition=metadata.partition) != metadata:
        return (f"{path} already migrates on {format_time(existing.migration_epoch)}; "
                "use --force to change the migration date")
    return ""
