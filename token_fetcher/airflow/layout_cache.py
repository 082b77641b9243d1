"""The on-disk cache of last good layouts, a few shard files per cluster."""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

from token_fetcher.airflow.layouts import Layout
from token_fetcher.files import atomic_write_text
from token_fetcher.migration import MigrationMetadata

__all__ = ["LayoutCache"]

_log = logging.getLogger(__name__)


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
