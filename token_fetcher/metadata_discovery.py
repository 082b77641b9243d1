"""Every migration metadata file below a folder, read, with the broken files and the
workflows named twice."""

from __future__ import annotations

import os
from dataclasses import dataclass

from token_fetcher.migration import MetadataError, MigrationMetadata, read_metadata

__all__ = ["Discovery", "discover_metadata"]


@dataclass(frozen=True)
class Discovery:
    """What discover_metadata() found.

    ``entries`` is sorted by (cluster, workflow), one per workflow; ``errors`` holds
    one MetadataError per unusable file or unreadable folder; ``duplicates`` lists
    each (cluster, workflow) named by several files with all of their paths.
    """

    entries: tuple[MigrationMetadata, ...] = ()
    errors: tuple[MetadataError, ...] = ()
    duplicates: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


def _metadata_files(folder: str, errors: list[MetadataError]) -> list[str]:
    def on_error(exc: OSError) -> None:
        errors.append(
            MetadataError(f"cannot list folder: {exc.strerror or exc}", exc.filename or folder)
        )

    found: list[str] = []
    for root, dirs, files in os.walk(folder, onerror=on_error):
        # Pruning in place stops os.walk() descending into hidden folders.
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found.extend(
            os.path.join(root, name)
            for name in files
            if name.endswith(".json") and not name.startswith(".")
        )
    return sorted(found)


def discover_metadata(folder: str | os.PathLike[str]) -> Discovery:
    """Find and read every metadata file under ``folder``.

    A metadata file is any file whose name ends in ``.json`` (case-sensitive) in the
    folder or any sub-folder, at any depth. Names starting with ``.`` are skipped,
    files and folders alike (editor swap files, ``.git``, write_metadata()'s temp
    files). Symlinked files are read; symlinked folders are not followed. When
    several files name the same (cluster, workflow), the first path in sorted order
    wins and all paths are reported in ``duplicates``.
    """
    errors: list[MetadataError] = []
    by_key: dict[tuple[str, str], list[MigrationMetadata]] = {}
    for path in _metadata_files(os.fspath(folder), errors):
        try:
            metadata = read_metadata(path)
        except MetadataError as exc:
            errors.append(exc)
            continue
        by_key.setdefault((metadata.cluster_name, metadata.workflow_name), []).append(metadata)

    keys = sorted(by_key)
    duplicates = tuple(
        (cluster, workflow, tuple(m.path for m in by_key[cluster, workflow]))
        for cluster, workflow in keys
        if len(by_key[cluster, workflow]) > 1
    )
    return Discovery(
        entries=tuple(by_key[key][0] for key in keys),
        errors=tuple(sorted(errors, key=lambda exc: exc.path)),
        duplicates=duplicates,
    )
