"""Content digests of the files and folder listings a parse read.

The parse records them and the catalog's file watch recomputes them: both must use these
functions, or an unchanged file would look changed forever.
"""

from __future__ import annotations

import hashlib
import os


def file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def folder_listing(folder: str) -> tuple[list[str], str]:
    """The folder's visible entries, sorted, and their digest."""
    names = sorted(name for name in os.listdir(folder) if not name.startswith("."))
    # surrogateescape: a name that is not UTF-8 comes back from listdir with lone
    # surrogates; it must be reported (as that workflow's error), not crash a parse or watch.
    digest = hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()
    return names, digest
