"""Which files a cluster watches after a parse: the ones the parse read, and others.

A parse that fails may have read too little to notice its fix: the files of the last
good parse, the folders it read from and the repo root are watched too, and after a
parse that read nothing the whole repo.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence

from legacy_parser.model import SourceFile

__all__ = ["ParsedPaths", "also_watched"]

# The catalog's logger: docs/operations.md tells operators to follow it.
log = logging.getLogger("token_fetcher.catalog")


class ParsedPaths:
    """Path -> sha256 of each file a parse of the repo at ``root`` read, the path joined
    to ``root`` as ``os.path.join`` would.

    Built after every parse, under the cluster's lock, which an edit made meanwhile waits
    for: over the 180,000 files of a JSON tree of 10,000 workflows, ``os.path.join`` took
    0.3 s and even a bare concatenation 0.14 s. A re-parse that read the same paths gives
    back the last parse's file objects for unchanged files (``legacy_parser.result_wire``),
    so the last mapping is copied and only the files that are new objects are joined.
    """

    def __init__(self, root: str) -> None:
        self._prefix = os.path.join(root, "")
        self._files: Sequence[SourceFile] = ()
        self._paths: dict[str, str] = {}

    def of(self, files: Sequence[SourceFile]) -> dict[str, str]:
        """The mapping for ``files``; never changed afterwards, so it may be kept."""
        renewed = [(file, last) for file, last in zip(files, self._files, strict=True)
                   if file is not last] if len(files) == len(self._files) else None
        if renewed is not None and all(file.path == last.path for file, last in renewed):
            paths = dict(self._paths)  # the same paths, in the same order
            paths.update((self._joined(file.path), file.sha256) for file, _ in renewed)
        else:
            paths = {self._joined(file.path): file.sha256 for file in files}
        self._files, self._paths = files, paths
        return paths

    def _joined(self, path: str) -> str:
        return path if path.startswith(os.sep) else self._prefix + path


def also_watched(root: str, cluster: str, parsed: Mapping[str, str],
                 last_good: Iterable[str], extra: Iterable[str], failed: bool) -> list[str]:
    """What to watch besides ``parsed`` (the files a parse of the repo at ``root`` read,
    with their hashes): ``last_good`` (the files of the last good parse), ``extra`` (the
    Pinball YAML, say), and when the parse ``failed``, what its fix may change."""
    # Files of the last good parse are watched too: a broken parse may have read
    # none (say, the repo folder vanished), yet their return must trigger a retry.
    # (After a good parse they are the parsed files: 180,000 paths not to go over again.)
    also = [*extra] if last_good is parsed else [*last_good, *extra]
    if failed:
        # A broken parse may wait for a file it could not find (a module imported
        # before it is written, say): watch the listings of the folders it read from
        # and of the repo root, so that the file's arrival triggers a retry.
        folders = {os.path.dirname(path.rstrip(os.sep)) for path in parsed}
        folders.add(root.rstrip(os.sep))
        also.extend(folder + os.sep for folder in sorted(folders))
    if failed and not parsed:
        # The parse reports nothing it read (the worker crashed or timed out): the fix
        # may land in any file, so watch the whole repo until a parse reads something.
        also.extend(_repo_tree(root, cluster))
    return also


# Watching a whole repo is the fallback after a parse that read nothing: bounded, since
# every watched path is hashed once, and stat'ed at each poll where it is polled.
_MAX_TREE_WATCH = 20_000


def _repo_tree(root: str, cluster: str) -> list[str]:
    """The repo's visible folders (as listings, ending in a separator) and regular files,
    at most _MAX_TREE_WATCH of them."""
    found: list[str] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders
                               if not name.startswith(".") and name != "__pycache__")
        found.append(folder.rstrip(os.sep) + os.sep)
        found.extend(path for path in (os.path.join(folder, name) for name in sorted(files)
                                       if not name.startswith("."))
                     if os.path.isfile(path))
        if len(found) >= _MAX_TREE_WATCH:
            log.warning("cluster %s: the repo %s has more than %d files and folders; after "
                        "this failed parse only the first %d are watched (a fix elsewhere "
                        "needs a Reload)", cluster, root, _MAX_TREE_WATCH, _MAX_TREE_WATCH)
            return found[:_MAX_TREE_WATCH]
    return found
