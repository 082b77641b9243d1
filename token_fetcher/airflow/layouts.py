"""Resolved workflows ("layouts") and the ids Airflow gives them.

Nothing here imports Airflow (nor does the rest of the manifest side: layout_cache,
resolution, manifest, problems): the versioned bundle runs ``python -m
token_fetcher.airflow.manifest`` in a fresh process to talk to the token fetcher, so the
long-lived DAG processor (which forks its parse processes) never starts gRPC itself.

A *layout* is one migrated workflow as the DAG builder needs it: the metadata file,
the spec and its fingerprint, and the handover (computed from the spec's schedule and
the migration date), plus what the server said about it (the errors of a newer
definition that fails to parse, the dynamic flag). Layouts serialize to JSON with the
spec as base64 of its deterministic protobuf bytes, so a layout read back is
byte-for-byte the one the server sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from legacy_parser.model import ErrorKind, WorkflowError
from token_fetcher import handovers
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client import MigratedWorkflow
from token_fetcher.migration import MigrationMetadata, parse_metadata

__all__ = [
    "Layout",
    "dag_id_for",
    "dag_id_problem",
    "parse_error_text",
    "task_ids_problem",
]

_LAYOUT_FORMAT = 1
# Airflow's rule for dag and task ids (KEY_REGEX), and its length limit.
_KEY_RE = re.compile(r"^[\w.-]+$", re.ASCII)
_KEY_MAX = 250


def dag_id_for(cluster: str, workflow: str) -> str:
    """The DAG id of a migrated workflow: ``<cluster>__<workflow>``."""
    return f"{cluster}__{workflow}"


def dag_id_problem(key: str, what: str = "dag_id") -> str | None:
    """Why ``key`` is not a valid Airflow dag or task id, or None."""
    if not _KEY_RE.match(key):
        return f"{what} {key!r} has characters Airflow does not allow (letters, digits, _ . -)"
    if len(key) > _KEY_MAX:
        return f"{what} {key!r} is longer than {_KEY_MAX} characters"
    return None


def task_ids_problem(spec: pb.WorkflowSpec) -> str | None:
    """Why a job name of ``spec`` is not a valid Airflow task id, or None."""
    for job in spec.jobs:
        problem = dag_id_problem(job.name, "task id (job name)")
        if problem:
            return problem
    return None


def parse_error_text(error: pb.ParseError) -> str:
    """A ParseError from the server, worded as the server words its own errors:
    ``kind: message (cluster c, workflow w, job j, file:line)``."""
    found = WorkflowError(
        ErrorKind.INVALID_DEFINITION,
        error.message,
        error.cluster,
        error.workflow,
        error.job,
        error.file,
        error.line,
    )
    try:
        kind = ErrorKind(pb.ErrorKind.Name(error.kind).removeprefix("ERROR_KIND_").lower())
    except ValueError:  # a kind this client does not know yet
        where = found.location()
        return f"error kind {error.kind}: {error.message}" + (f" ({where})" if where else "")
    return str(replace(found, kind=kind))


@dataclass(frozen=True)
class Layout:
    """One migrated workflow, ready to become a DAG.

    ``stale`` says the layout was not confirmed by the server just now (served from the
    client's cache, the on-disk cache or a previous manifest); ``source`` says which.

    ``definition_errors`` (non-empty: the latest definition fails to parse and this is
    the workflow's last good layout, the server's PARSE_STATUS_STALE) and ``dynamic``
    (the layout changes between parses while no file changed) are diagnostics: shown on
    the DAG, never part of a fingerprint or a bundle version.
    """

    metadata: MigrationMetadata
    fingerprint: str
    spec: pb.WorkflowSpec
    handover: handovers.Handover
    stale: bool = False
    source: str = "server"
    definition_errors: tuple[str, ...] = ()
    dynamic: bool = False

    @property
    def cluster(self) -> str:
        return self.metadata.cluster_name

    @property
    def workflow(self) -> str:
        return self.metadata.workflow_name

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.cluster, self.workflow)

    @classmethod
    def from_migrated(cls, migrated: MigratedWorkflow) -> Layout:
        errors: tuple[str, ...] = ()
        if migrated.status == pb.PARSE_STATUS_STALE:
            errors = tuple(parse_error_text(error) for error in migrated.errors) or (
                "the latest definition fails to parse",
            )
        layout = cls.from_spec(
            migrated.metadata,
            migrated.fingerprint,
            migrated.spec,
            stale=migrated.stale,
            source="client-cache" if migrated.stale else "server",
        )
        return replace(layout, definition_errors=errors, dynamic=migrated.dynamic)

    def diagnosed_as(self, other: Layout) -> Layout:
        """This layout with ``other``'s diagnostics (a fallback keeps what was last known)."""
        return replace(self, definition_errors=other.definition_errors, dynamic=other.dynamic)

    def identity(self) -> dict[str, Any]:
        """What decides the layout's DAG, and so goes into a bundle version: the metadata
        file, the fingerprint (the layout itself) and the definition file. Not the spec's
        source lines, not the diagnostics."""
        return {
            "dag_id": self.dag_id,
            "metadata": json.loads(self.metadata.to_json()),
            "metadata_path": self.metadata.path,
            "fingerprint": self.fingerprint,
            "definition_file": self.spec.source.file,
        }

    @classmethod
    def from_spec(
        cls,
        metadata: MigrationMetadata,
        fingerprint: str,
        spec: pb.WorkflowSpec,
        *,
        stale: bool,
        source: str,
    ) -> Layout:
        """A layout whose handover is computed from ``spec``'s schedule and the
        metadata's migration date (so a cached spec follows a changed metadata file)."""
        handover = handovers.schedule_handover(spec, metadata.migration_epoch)
        if handover is None:
            raise ValueError(
                f"{metadata.cluster_name}/{metadata.workflow_name}: no usable schedule"
            )
        return cls(metadata, fingerprint, spec, handover, stale=stale, source=source)

    def to_dict(self, *, diagnostics: bool = False) -> dict[str, Any]:
        """The layout as JSON; with ``diagnostics``, also what the server said about it
        (a manifest keeps them; the on-disk cache, which is rewritten only when a
        fingerprint changes, does not)."""
        data = self.spec.SerializeToString(deterministic=True)
        result = {
            "format": _LAYOUT_FORMAT,
            "metadata": json.loads(self.metadata.to_json()),
            "metadata_path": self.metadata.path,
            "fingerprint": self.fingerprint,
            "spec": base64.b64encode(data).decode("ascii"),
            "spec_sha256": hashlib.sha256(data).hexdigest(),
        }
        if diagnostics:
            result["definition_errors"] = list(self.definition_errors)
            result["dynamic"] = self.dynamic
        return result

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        stale: bool,
        source: str,
        metadata: MigrationMetadata | None = None,
    ) -> Layout:
        """Read to_dict() output; anything else raises ValueError. ``metadata`` (the
        current metadata file) replaces the stored one when given."""
        if data.get("format") != _LAYOUT_FORMAT:
            raise ValueError(f"unsupported layout format {data.get('format')!r}")
        raw = base64.b64decode(data["spec"], validate=True)
        if hashlib.sha256(raw).hexdigest() != data["spec_sha256"]:
            raise ValueError("the spec does not match its checksum")
        spec = pb.WorkflowSpec()
        spec.ParseFromString(raw)
        if metadata is None:
            metadata = parse_metadata(json.dumps(data["metadata"]), data.get("metadata_path", ""))
        fingerprint = data["fingerprint"]
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError("the layout has no fingerprint")
        layout = cls.from_spec(metadata, fingerprint, spec, stale=stale, source=source)
        errors = data.get("definition_errors", [])
        if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
            raise ValueError("definition_errors is not a list of strings")
        return replace(layout, definition_errors=tuple(errors), dynamic=data.get("dynamic") is True)
