"""Whole-file writes that readers see complete or not at all: the one atomic writer."""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_write_text", "fsync_directory"]


def atomic_write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a part.

    The text goes to a hidden temporary file in the same folder (not ``*.json``, so a
    concurrent discover_metadata() never reads it), then is renamed over ``path``.
    ``durable`` flushes it to disk first; a cache, which a crash may lose, skips that.
    """
    directory, name = os.path.split(os.fspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        # mkstemp() makes the file 0600; the scheduler may run as another user.
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable; best effort, not every platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
