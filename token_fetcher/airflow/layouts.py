"""Resolved workflows ("layouts"), the on-disk cache of last good layouts, and bundle
manifests.

Nothing here imports Airflow: the versioned bundle runs ``python -m
token_fetcher.airflow.layouts`` in a fresh process to talk to the token fetcher, so the
long-lived DAG processor (which forks its parse processes) never starts gRPC itself.

A *layout* is one migrated workflow as the DAG builder needs it: the metadata file,
the spec and its fingerprint, and the handover (computed from the spec's schedule and
the migration date), plus what the server said about it (the errors of a newer
definition that fails to parse, the dynamic flag). Layouts serialize to JSON with the
spec as base64 of its deterministic protobuf bytes, so a layout read back is
byte-for-byte the one the server sent.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from legacy_parser.model import ErrorKind, WorkflowError
from token_fetcher import migration
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client import (
    Broken,
    MigratedWorkflow,
    TokenFetcherClient,
    TokenFetcherError,
    Unavailable,
)
from token_fetcher.files import atomic_write_text
from token_fetcher.migration import MetadataError, MigrationMetadata, parse_metadata
from token_fetcher.partitions import Partitioning

__all__ = [
    "Layout",
    "LayoutCache",
    "MANIFEST_FILE_NAME",
    "Manifest",
    "Problem",
    "Resolution",
    "dag_id_for",
    "dag_id_problem",
    "parse_error_text",
    "prune_store",
    "task_ids_problem",
    "resolve_layouts",
]

_log = logging.getLogger(__name__)

MANIFEST_FILE_NAME = "token_fetcher_manifest.json"
_MANIFEST_FORMAT = 2
# Format 1 hashed everything, specs and problem texts included, into the version.
_MANIFEST_FORMAT_ALL_HASHED = 1
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

    ``definition_errors`` (non-empty: the latest definition fails to parse and this is
    the workflow's last good layout, the server's PARSE_STATUS_STALE) and ``dynamic``
    (the layout changes between parses while no file changed) are diagnostics: shown on
    the DAG, never part of a fingerprint or a bundle version.
    """

    metadata: MigrationMetadata
    fingerprint: str
    spec: pb.WorkflowSpec
    handover: migration.Handover
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
        handover = migration.schedule_handover(spec, metadata.migration_epoch)
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


class LayoutCache:
    """Last good layouts on disk, a few files per cluster.

    A fresh parse process has an empty client cache; this lets it build the DAGs it
    built before while the token fetcher is unreachable.

    The layouts of a cluster are spread over ``SHARDS`` files by a stable hash of the
    workflow name: ``<dir>/<cluster>/shards-<SHARDS>/<NN>.json``. One file per workflow
    would mean thousands of file creations on a cold parse (0.3 to 2 s for 3,000 on the
    benchmark VM), and one file per cluster a rewrite of the whole cluster (tens of MB)
    whenever one workflow changes; a shard of a 3,000-workflow cluster holds about 50.

    Stores are batched: ``store()`` notes what the server confirmed and ``flush()``
    rewrites only the shards in which a fingerprint changed. To know that without
    reading every shard back, ``shards-<SHARDS>/fingerprints.json`` records each shard's
    fingerprints and its size, mtime and inode when written: a parse that changes
    nothing reads that one file and stats the shards. The index is only a hint: a shard
    that no longer matches it (another process rewrote it, or the index is lost) is read
    back and compared, and ``load()`` never reads it. Files are replaced atomically (a
    temporary file, then a rename) but not fsynced: a cache needs no durability, and a
    file torn by a crash does not parse or fails its checksum, and is ignored, like any
    unreadable file. ``load()`` still reads the per-workflow files of earlier versions
    (``<dir>/<cluster>/<workflow>.json``) for a workflow no shard has.
    """

    SHARDS = 64
    INDEX_NAME = "fingerprints.json"
    _FORMAT = 1

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._indexes: dict[str, dict[str, Any]] = {}  # cluster -> shard -> entry
        self._stats: dict[tuple[str, str], list[int] | None] = {}
        self._contents: dict[tuple[str, str], dict[str, Any]] = {}  # parsed shards
        self._pending: dict[tuple[str, str], dict[str, Layout]] = {}

    @classmethod
    def shard_of(cls, workflow: str) -> str:
        return f"{zlib.crc32(workflow.encode('utf-8')) % cls.SHARDS:02d}"

    def _folder(self, cluster: str) -> Path:
        return self.directory / cluster / f"shards-{self.SHARDS}"

    def _index(self, cluster: str) -> dict[str, Any]:
        """The cluster's index, read once: {shard: {"stat": [size, mtime_ns, inode],
        "fingerprints": {workflow: fingerprint}}}."""
        index = self._indexes.get(cluster)
        if index is None:
            path = self._folder(cluster) / self.INDEX_NAME
            index = self._read_json(path, "shards", "layout cache index") or {}
            self._indexes[cluster] = index
        return index

    def _stat(self, cluster: str, shard: str) -> list[int] | None:
        key = (cluster, shard)
        if key not in self._stats:
            try:
                self._stats[key] = _stat_key(os.stat(self._folder(cluster) / f"{shard}.json"))
            except OSError:
                self._stats[key] = None
        return self._stats[key]

    def _shard(self, cluster: str, shard: str) -> dict[str, Any]:
        """A shard's layouts as stored, {workflow: Layout.to_dict()}; read once."""
        key = (cluster, shard)
        if key not in self._contents:
            path = self._folder(cluster) / f"{shard}.json"
            self._contents[key] = self._read_json(path, "layouts", "cached layouts") or {}
        return self._contents[key]

    def _read_json(self, path: Path, key: str, what: str) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != self._FORMAT or not isinstance(data[key], dict):
                raise ValueError(f"not a format {self._FORMAT} file")
            return data[key]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            _log.warning("token-fetcher: ignoring unreadable %s %s: %s", what, path, exc)
            return None

    def store(self, layout: Layout) -> None:
        """Keep ``layout`` as its workflow's last good one (written by flush(), unless
        its shard holds that fingerprint already)."""
        cluster, workflow = layout.cluster, layout.workflow
        shard = self.shard_of(workflow)
        entry = self._index(cluster).get(shard)
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("fingerprints"), dict)
            and entry["fingerprints"].get(workflow) == layout.fingerprint
            and entry.get("stat") == self._stat(cluster, shard)
        ):
            return
        self._pending.setdefault((cluster, shard), {})[workflow] = layout

    def flush(self) -> None:
        """Rewrite the shards whose layouts changed, then the indexes."""
        pending, self._pending = self._pending, {}
        clusters: set[str] = set()
        for (cluster, shard), layouts in sorted(pending.items()):
            content = self._shard(cluster, shard)
            changed = False
            for workflow, layout in layouts.items():
                current = content.get(workflow)
                if (
                    not isinstance(current, dict)
                    or current.get("fingerprint") != layout.fingerprint
                ):
                    content[workflow] = layout.to_dict()
                    changed = True
            path = self._folder(cluster) / f"{shard}.json"
            index = self._index(cluster)
            clusters.add(cluster)
            try:
                if changed:
                    text = json.dumps({"format": self._FORMAT, "layouts": content}, sort_keys=True)
                    atomic_write_text(path, text + "\n", durable=False)
                stat = self._stats[(cluster, shard)] = _stat_key(os.stat(path))
            except OSError as exc:  # a cache: never fail a parse because of it
                _log.warning("token-fetcher: cannot write the layout cache %s: %s", path, exc)
                index.pop(shard, None)
                continue
            index[shard] = {
                "stat": stat,
                "fingerprints": {
                    workflow: data.get("fingerprint")
                    for workflow, data in content.items()
                    if isinstance(data, dict)
                },
            }
        for cluster in sorted(clusters):
            path = self._folder(cluster) / self.INDEX_NAME
            text = json.dumps(
                {"format": self._FORMAT, "shards": self._index(cluster)},
                sort_keys=True,
                separators=(",", ":"),
            )
            try:
                atomic_write_text(path, text + "\n", durable=False)
            except OSError as exc:
                _log.warning("token-fetcher: cannot write the layout cache index %s: %s", path, exc)

    def load(self, metadata: MigrationMetadata) -> Layout | None:
        cluster, workflow = metadata.cluster_name, metadata.workflow_name
        data = self._shard(cluster, self.shard_of(workflow)).get(workflow)
        if data is None:  # written by an earlier version: one file per workflow
            legacy = self.directory / cluster / f"{workflow}.json"
            try:
                data = json.loads(legacy.read_text(encoding="utf-8"))
            except FileNotFoundError:
                return None
            except (OSError, ValueError) as exc:
                _log.warning("token-fetcher: ignoring unreadable cached layout %s: %s", legacy, exc)
                return None
        try:
            if not isinstance(data, dict):
                raise TypeError(f"expected an object, got {type(data).__name__}")
            return Layout.from_dict(data, stale=True, source="disk-cache", metadata=metadata)
        except (KeyError, TypeError, ValueError) as exc:
            _log.warning(
                "token-fetcher: ignoring bad cached layout of %s/%s: %s", cluster, workflow, exc
            )
            return None


def _stat_key(stat: os.stat_result) -> list[int]:
    # A rewrite replaces the file (a new inode) and almost always changes its mtime.
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


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
            problem = task_ids_problem(result.spec)
            if problem:  # Airflow cannot take it: a problem, not a DAG that fails to build
                problems.append(Problem(problem, *where))
                continue
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
    if cache is not None:
        cache.flush()
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
            ).diagnosed_as(previous)
        except ValueError:
            return None
    return cache.load(entry) if cache is not None else None


# --- manifests (the versioned bundle) ------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """Every layout of one bundle version, and the problems found with it.

    ``version`` hashes what decides the DAGs: each layout's identity (metadata file,
    fingerprint, definition file). Not the specs' source lines, not the diagnostics, not
    the problems, and not whether a layout was stale: a line shift, a workflow that
    breaks (it keeps its last good layout, or gives no DAG at all) and an outage that
    serves the same layouts all keep the version. Problems reach Airflow through the
    problems file, which the DAG processor parses again on every pass.
    """

    layouts: tuple[Layout, ...] = ()
    problems: tuple[Problem, ...] = ()
    # The version a format 1 manifest was stored under (its hash covered everything).
    stored_version: str = field(default="", compare=False)

    def _computed_version(self) -> str:
        layouts = sorted(self.layouts, key=_by_dag_id)
        return _digest({"format": _MANIFEST_FORMAT, "layouts": [x.identity() for x in layouts]})

    @property
    def version(self) -> str:
        return self.stored_version or self._computed_version()

    def fingerprints(self) -> dict[str, str]:
        return {layout.dag_id: layout.fingerprint for layout in self.layouts}

    def to_json(self) -> str:
        content = {
            "format": _MANIFEST_FORMAT,
            "version": self._computed_version(),
            "layouts": [
                layout.to_dict(diagnostics=True) for layout in sorted(self.layouts, key=_by_dag_id)
            ],
            "problems": [problem.to_dict() for problem in self.problems],
        }
        return json.dumps(content, sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> Manifest:
        data = json.loads(text)
        form = data.get("format")
        if form not in (_MANIFEST_FORMAT, _MANIFEST_FORMAT_ALL_HASHED):
            raise ValueError(f"unsupported manifest format {form!r}")
        # Not stale: a manifest is the pinned layout set of one bundle version.
        layouts = tuple(
            Layout.from_dict(item, stale=False, source=source) for item in data["layouts"]
        )
        problems = tuple(Problem.from_dict(item) for item in data["problems"])
        manifest = cls(layouts, problems)
        if form == _MANIFEST_FORMAT_ALL_HASHED:
            # Written before this release; runs created then still need it.
            hashed = _digest({key: value for key, value in data.items() if key != "version"})
            manifest = cls(layouts, problems, stored_version=hashed)
        if data.get("version") not in (None, manifest.version):
            raise ValueError(f"manifest content does not match its version {data.get('version')!r}")
        return manifest

    def write(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    @staticmethod
    def read_problems(path: str | os.PathLike[str]) -> tuple[Problem, ...]:
        """Only the problems of the manifest at ``path`` (no layout is decoded); none when
        there is no manifest."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return ()
        return tuple(Problem.from_dict(item) for item in data["problems"])


def _digest(content: dict[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "tf-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _by_dag_id(layout: Layout) -> str:
    return layout.dag_id


def prune_store(store: str | os.PathLike[str], keep: int, protected: Iterable[str]) -> list[str]:
    """Delete the stored manifests (``<store>/<version>.json``) but the ``keep`` newest
    (by modification time) and the ``protected`` versions (those of unfinished runs, and
    the current one). Returns the versions deleted, oldest first."""
    folder = Path(store)
    stored = []
    for path in folder.glob("tf-*.json"):
        try:
            stored.append((path.stat().st_mtime_ns, path.stem, path))
        except FileNotFoundError:  # pruned by another DAG processor meanwhile
            continue
    stored.sort(reverse=True)
    kept = set(protected) | {version for _, version, _ in stored[: max(0, keep)]}
    deleted = []
    for _, version, path in reversed(stored):
        if version in kept:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        deleted.append(version)
    return deleted


def build_manifest(
    client: TokenFetcherClient,
    migrations_dir: str | os.PathLike[str],
    *,
    cache: LayoutCache | None = None,
    previous: Manifest | None = None,
    partitioning: Partitioning | None = None,
) -> Manifest:
    """Discover the metadata files and resolve them (one round trip) into a manifest;
    a workflow the server cannot answer for keeps its layout from ``previous``. With
    ``partitioning``, only that partition's workflows."""
    discovery = migration.discover_metadata(migrations_dir)
    problems = [_metadata_problem(error) for error in discovery.errors]
    entries = discovery.entries
    if partitioning is not None:
        entries, misplaced = partitioning.select(entries)
        problems += [Problem(str(item), item.metadata.path, item.metadata.cluster_name,
                             item.metadata.workflow_name) for item in misplaced]
    for cluster, workflow, paths in discovery.duplicates:
        _log.warning(
            "token-fetcher: %s/%s is named by several metadata files (%s); using %s",
            cluster,
            workflow,
            ", ".join(paths),
            paths[0],
        )
    fallback = {layout.dag_id: layout for layout in previous.layouts} if previous else None
    resolution = resolve_layouts(client, entries, cache=cache, fallback=fallback)
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
    parser.add_argument("--partition", default="", help="only this partition's workflows")
    parser.add_argument("--partitions", default="", help="every partition's name, a,b,c")
    args = parser.parse_args(list(argv) if argv is not None else None)
    partitioning = Partitioning.parse(args.partition, args.partitions) if args.partition else None
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
            manifest = build_manifest(client, args.migrations_dir, cache=cache, previous=previous,
                                      partitioning=partitioning)
        except TokenFetcherError as exc:
            print(f"token-fetcher: {exc}", file=sys.stderr)
            return 1
    manifest.write(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
