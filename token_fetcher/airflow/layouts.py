"""Resolved workflows ("layouts"), the on-disk cache of last good layouts, and bundle
manifests.

Nothing here imports Airflow: the versioned bundle runs ``python -m
token_fetcher.airflow.layouts`` in a fresh process to talk to the token fetcher, so the
long-lived DAG processor (which forks its parse processes) never starts gRPC itself.

A *layout* is one migrated workflow as the DAG builder needs it: the metadata file,
the spec and its fingerprint, and the handover (computed from the spec's schedule and
the migration date). Layouts serialize to JSON with the spec as base64 of its
deterministic protobuf bytes, so a layout read back is byte-for-byte the one the
server sent.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from token_fetcher import migration
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client import (
    Broken,
    MigratedWorkflow,
    TokenFetcherClient,
    TokenFetcherError,
    Unavailable,
)
from token_fetcher.migration import MetadataError, MigrationMetadata, parse_metadata

__all__ = [
    "Layout",
    "LayoutCache",
    "MANIFEST_FILE_NAME",
    "Manifest",
    "Problem",
    "Resolution",
    "dag_id_for",
    "dag_id_problem",
    "resolve_layouts",
]

_log = logging.getLogger(__name__)

MANIFEST_FILE_NAME = "token_fetcher_manifest.json"
_MANIFEST_FORMAT = 1
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


@dataclass(frozen=True)
class Problem:
    """A metadata file or workflow that gives no DAG, with why."""

    message: str
    path: str = ""
    cluster: str = ""
    workflow: str = ""

    def __str__(self) -> str:
        where = f"{self.cluster}/{self.workflow}" if self.cluster else ""
        label = " ".join(part for part in (self.path, f"({where})" if where else "") if part)
        return f"{label}: {self.message}" if label else self.message

    def to_dict(self) -> dict[str, str]:
        return {
            "message": self.message,
            "path": self.path,
            "cluster": self.cluster,
            "workflow": self.workflow,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        return cls(
            message=str(data["message"]),
            path=str(data.get("path", "")),
            cluster=str(data.get("cluster", "")),
            workflow=str(data.get("workflow", "")),
        )


@dataclass(frozen=True)
class Layout:
    """One migrated workflow, ready to become a DAG.

    ``stale`` says the layout was not confirmed by the server just now (served from the
    client's cache, the on-disk cache or a previous manifest); ``source`` says which.
    """

    metadata: MigrationMetadata
    fingerprint: str
    spec: pb.WorkflowSpec
    handover: migration.Handover
    stale: bool = False
    source: str = "server"

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
        return cls(
            metadata=migrated.metadata,
            fingerprint=migrated.fingerprint,
            spec=migrated.spec,
            handover=migrated.handover,
            stale=migrated.stale,
            source="client-cache" if migrated.stale else "server",
        )

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
        schedule = spec.schedule
        if not spec.HasField("schedule") or schedule.recurrence_seconds <= 0:
            raise ValueError(
                f"{metadata.cluster_name}/{metadata.workflow_name}: no usable schedule"
            )
        handover = migration.handover(
            schedule.reference_time.seconds, schedule.recurrence_seconds, metadata.migration_epoch
        )
        return cls(metadata, fingerprint, spec, handover, stale=stale, source=source)

    def to_dict(self) -> dict[str, Any]:
        data = self.spec.SerializeToString(deterministic=True)
        return {
            "format": _LAYOUT_FORMAT,
            "metadata": json.loads(self.metadata.to_json()),
            "metadata_path": self.metadata.path,
            "fingerprint": self.fingerprint,
            "spec": base64.b64encode(data).decode("ascii"),
            "spec_sha256": hashlib.sha256(data).hexdigest(),
        }

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
        return cls.from_spec(metadata, fingerprint, spec, stale=stale, source=source)


class LayoutCache:
    """Last good layouts on disk, one file per workflow: ``<dir>/<cluster>/<workflow>.json``.

    A fresh parse process has an empty client cache; this lets it build the DAGs it
    built before while the token fetcher is unreachable. Writes are atomic and only
    happen when the fingerprint changed; a file that cannot be read is ignored.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, cluster: str, workflow: str) -> Path:
        return self.directory / cluster / f"{workflow}.json"

    def _read(self, cluster: str, workflow: str) -> dict[str, Any] | None:
        path = self._path(cluster, workflow)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            _log.warning("token-fetcher: ignoring unreadable cached layout %s: %s", path, exc)
            return None

    def store(self, layout: Layout) -> None:
        current = self._read(layout.cluster, layout.workflow)
        if current is not None and current.get("fingerprint") == layout.fingerprint:
            return
        try:
            migration.atomic_write_text(
                self._path(layout.cluster, layout.workflow),
                json.dumps(layout.to_dict(), sort_keys=True) + "\n",
            )
        except OSError as exc:  # a cache: never fail a parse because of it
            _log.warning("token-fetcher: cannot write the layout cache %s: %s", self.directory, exc)

    def load(self, metadata: MigrationMetadata) -> Layout | None:
        data = self._read(metadata.cluster_name, metadata.workflow_name)
        if data is None:
            return None
        try:
            return Layout.from_dict(data, stale=True, source="disk-cache", metadata=metadata)
        except (KeyError, TypeError, ValueError) as exc:
            _log.warning(
                "token-fetcher: ignoring bad cached layout of %s/%s: %s",
                metadata.cluster_name,
                metadata.workflow_name,
                exc,
            )
            return None


@dataclass(frozen=True)
class Resolution:
    """What resolve_layouts() found: layouts sorted by dag_id, and problems."""

    layouts: tuple[Layout, ...] = ()
    problems: tuple[Problem, ...] = ()


# Errors after which the last good layout is still served: the server is unreachable,
# or it has no good version (it lost its history while the definition is broken).
_FALL_BACK_ON = (Unavailable, Broken)


def resolve_layouts(
    client: TokenFetcherClient,
    entries: Sequence[MigrationMetadata],
    *,
    cache: LayoutCache | None = None,
    fallback: dict[str, Layout] | None = None,
) -> Resolution:
    """Resolve metadata entries with ONE BatchResolveMigrations round trip (entries the
    client has fresh in its cache stay out of it).

    A workflow the server cannot answer for (unreachable, or broken with no good
    version) falls back to ``fallback`` (by dag_id, e.g. the previous manifest), then to
    the on-disk ``cache``; otherwise it becomes a Problem. Layouts the server confirmed
    are written to the cache.
    """
    layouts: list[Layout] = []
    problems: list[Problem] = []
    valid: list[MigrationMetadata] = []
    for entry in entries:
        problem = dag_id_problem(dag_id_for(entry.cluster_name, entry.workflow_name))
        if problem:
            problems.append(Problem(problem, entry.path, entry.cluster_name, entry.workflow_name))
        else:
            valid.append(entry)
    results = client.migrated_workflows(valid) if valid else []
    for entry, result in zip(valid, results, strict=True):
        where = (entry.path, entry.cluster_name, entry.workflow_name)
        if isinstance(result, MigratedWorkflow):
            layout = Layout.from_migrated(result)
            if cache is not None and not layout.stale:
                cache.store(layout)
            layouts.append(layout)
            continue
        if isinstance(result, _FALL_BACK_ON):
            previous = _fallback_layout(entry, fallback, cache)
            if previous is not None:
                _log.warning(
                    "token-fetcher: %s/%s: %s; serving the last good layout %s (%s)",
                    entry.cluster_name,
                    entry.workflow_name,
                    result,
                    previous.fingerprint[:12],
                    previous.source,
                )
                layouts.append(previous)
                continue
        problems.append(Problem(str(result), *where))
    layouts.sort(key=lambda layout: layout.dag_id)
    return Resolution(tuple(layouts), tuple(problems))


def _fallback_layout(
    entry: MigrationMetadata,
    fallback: dict[str, Layout] | None,
    cache: LayoutCache | None,
) -> Layout | None:
    dag_id = dag_id_for(entry.cluster_name, entry.workflow_name)
    if fallback and dag_id in fallback:
        previous = fallback[dag_id]
        try:
            return Layout.from_spec(
                entry, previous.fingerprint, previous.spec, stale=True, source=previous.source
            )
        except ValueError:
            return None
    return cache.load(entry) if cache is not None else None


# --- manifests (the versioned bundle) ------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """Every layout of one bundle version, and the problems found with it.

    ``version`` is a hash of the content that decides the DAGs (metadata, fingerprints,
    specs, problems), not of whether a layout was stale: an outage that serves the same
    layouts keeps the version.
    """

    layouts: tuple[Layout, ...] = ()
    problems: tuple[Problem, ...] = ()
    created_from: str = field(default="", compare=False)

    def _content(self) -> dict[str, Any]:
        return {
            "format": _MANIFEST_FORMAT,
            "layouts": [layout.to_dict() for layout in sorted(self.layouts, key=_by_dag_id)],
            "problems": [problem.to_dict() for problem in self.problems],
        }

    @property
    def version(self) -> str:
        text = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return "tf-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def fingerprints(self) -> dict[str, str]:
        return {layout.dag_id: layout.fingerprint for layout in self.layouts}

    def to_json(self) -> str:
        content = self._content()
        content["version"] = self.version
        return json.dumps(content, sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> Manifest:
        data = json.loads(text)
        if data.get("format") != _MANIFEST_FORMAT:
            raise ValueError(f"unsupported manifest format {data.get('format')!r}")
        # Not stale: a manifest is the pinned layout set of one bundle version.
        layouts = tuple(
            Layout.from_dict(item, stale=False, source=source) for item in data["layouts"]
        )
        problems = tuple(Problem.from_dict(item) for item in data["problems"])
        manifest = cls(layouts, problems)
        if data.get("version") not in (None, manifest.version):
            raise ValueError(f"manifest content does not match its version {data.get('version')!r}")
        return manifest

    def write(self, path: str | os.PathLike[str]) -> None:
        migration.atomic_write_text(Path(path), self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _by_dag_id(layout: Layout) -> str:
    return layout.dag_id


def build_manifest(
    client: TokenFetcherClient,
    migrations_dir: str | os.PathLike[str],
    *,
    cache: LayoutCache | None = None,
    previous: Manifest | None = None,
) -> Manifest:
    """Discover the metadata files and resolve them (one round trip) into a manifest;
    a workflow the server cannot answer for keeps its layout from ``previous``."""
    discovery = migration.discover_metadata(migrations_dir)
    problems = [_metadata_problem(error) for error in discovery.errors]
    for cluster, workflow, paths in discovery.duplicates:
        _log.warning(
            "token-fetcher: %s/%s is named by several metadata files (%s); using %s",
            cluster,
            workflow,
            ", ".join(paths),
            paths[0],
        )
    fallback = {layout.dag_id: layout for layout in previous.layouts} if previous else None
    resolution = resolve_layouts(client, discovery.entries, cache=cache, fallback=fallback)
    return Manifest(resolution.layouts, tuple(problems) + resolution.problems)


def _metadata_problem(error: MetadataError) -> Problem:
    return Problem(error.problem, error.path)


def problems_from_discovery(discovery: migration.Discovery) -> list[Problem]:
    """Unusable metadata files, as Problems (duplicates are warnings, not problems)."""
    return [_metadata_problem(error) for error in discovery.errors]


def _main(argv: Iterable[str] | None = None) -> int:
    """``python -m token_fetcher.airflow.layouts``: build a manifest into --output."""
    parser = argparse.ArgumentParser(prog="python -m token_fetcher.airflow.layouts")
    parser.add_argument("--migrations-dir", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--previous", default="", help="the manifest to fall back on")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--retries", type=int, default=2)
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    previous = None
    if args.previous and os.path.exists(args.previous):
        try:
            previous = Manifest.read(args.previous)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            _log.warning("token-fetcher: ignoring the previous manifest: %s", exc)
    cache = LayoutCache(args.cache_dir) if args.cache_dir else None
    with TokenFetcherClient(args.target, timeout=args.timeout, retries=args.retries) as client:
        try:
            manifest = build_manifest(client, args.migrations_dir, cache=cache, previous=previous)
        except TokenFetcherError as exc:
            print(f"token-fetcher: {exc}", file=sys.stderr)
            return 1
    manifest.write(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
