"""Bundle manifests: every layout of one bundle version, and the problems found with it.

``python -m token_fetcher.airflow.manifest`` builds one in a fresh process (see
TokenFetcherDagBundle); nothing here imports Airflow.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from token_fetcher import metadata_discovery
from token_fetcher.airflow.layout_cache import LayoutCache
from token_fetcher.airflow.layouts import Layout
from token_fetcher.airflow.problems import Problem, problems_from_discovery, warn_duplicates
from token_fetcher.airflow.resolution import resolve_layouts
from token_fetcher.client import TokenFetcherClient, TokenFetcherError
from token_fetcher.files import atomic_write_text
from token_fetcher.partitions import Partitioning

__all__ = ["MANIFEST_FILE_NAME", "Manifest", "build_manifest", "prune_store"]

_log = logging.getLogger(__name__)

MANIFEST_FILE_NAME = "token_fetcher_manifest.json"
_MANIFEST_FORMAT = 2
# Format 1 hashed everything, specs and problem texts included, into the version.
_MANIFEST_FORMAT_ALL_HASHED = 1


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
    discovery = metadata_discovery.discover_metadata(migrations_dir)
    problems = problems_from_discovery(discovery)
    entries = discovery.entries
    if partitioning is not None:
        entries, misplaced = partitioning.select(entries)
        problems += [Problem(str(item), item.metadata.path, item.metadata.cluster_name,
                             item.metadata.workflow_name) for item in misplaced]
    warn_duplicates(discovery.duplicates)
    fallback = {layout.dag_id: layout for layout in previous.layouts} if previous else None
    resolution = resolve_layouts(client, entries, cache=cache, fallback=fallback)
    return Manifest(resolution.layouts, tuple(problems) + resolution.problems)


def _main(argv: Iterable[str] | None = None) -> int:
    """``python -m token_fetcher.airflow.manifest``: build a manifest into --output."""
    parser = argparse.ArgumentParser(prog="python -m token_fetcher.airflow.manifest")
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
