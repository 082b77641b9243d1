"""Import shims that let unmodified Pinball definitions load under Python 3.

``install()`` puts a finder first on ``sys.meta_path`` that resolves the ``pinball``
and ``pinball_ext`` packages to the shim packages beside this file. A module the shims
do not provide (``pinball_ext.examples``, a team's own ``pinball_ext.*`` helpers) is
looked up in the same package of the cluster's repo, so each shim package's search path
is the shim folder, then the repo's. It is called only inside sandbox workers, so the
shims never appear in the server's ``sys.modules``.
"""

from __future__ import annotations

import array
import bisect
import functools
import importlib.abc
import importlib.machinery
import os
import sys
import types
import weakref
from pathlib import Path

SHIM_ROOT = str(Path(__file__).resolve().parent)
SHIMMED_PACKAGES = ("pinball", "pinball_ext")


class _ShimFinder(importlib.abc.MetaPathFinder):
    def __init__(self, repo_root: str) -> None:
        self.repo_root = repo_root

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in SHIMMED_PACKAGES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(
            fullname, [SHIM_ROOT] if fullname in SHIMMED_PACKAGES else path)
        if (spec is not None and spec.submodule_search_locations is not None
                and is_shim_file(spec.origin or "")):
            repo_package = os.path.join(self.repo_root, *fullname.split("."))
            if self.repo_root and os.path.isdir(repo_package):
                spec.submodule_search_locations.append(repo_package)
        return spec


def install(repo_root: str = "") -> None:
    """Resolve ``pinball`` and ``pinball_ext`` to the shims, then to ``repo_root``'s."""
    if not any(isinstance(finder, _ShimFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ShimFinder(repo_root))


def provides(module: str) -> bool:
    """Whether ``module`` (dotted) is one of the shims."""
    base = os.path.join(SHIM_ROOT, *module.split("."))
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


@functools.cache
def is_shim_file(filename: str) -> bool:
    # Cached: asked for every frame of every config object built; code file names are few.
    return os.path.abspath(filename).startswith(SHIM_ROOT + os.sep)


# The last site given out. A config and the template built inside it on one line
# (``JobConfig(JobTemplate(...))``) share its tuple: two objects fewer per job, kept for
# the whole parse.
_last_site: tuple[str, int] = ("", 0)


def definition_site() -> tuple[str, int]:
    """The file and line of the nearest caller outside the shims (where a user wrote it)."""
    global _last_site
    frame = sys._getframe(1)
    while frame is not None and is_shim_file(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return "", 0
    site = frame.f_code.co_filename, _line_of(frame)
    last = _last_site
    if site == last:
        return last
    _last_site = site
    return site


# id(code) -> (instruction offsets where a line range starts, their lines; -1 for none).
# Keyed by id because hashing a code object hashes its constants, and a team module's code
# is one huge literal. An entry lives as long as its code (a finalizer drops it): a
# module's top-level code dies once the module has run, and with it the table, which for
# a 10,000-workflow repo would otherwise hold millions of offsets (and every module's
# code) for the rest of the parse. Arrays, not lists: no object per offset.
_LINE_TABLES: dict[int, tuple[array.array, array.array]] = {}


def _line_of(frame: types.FrameType) -> int:
    """``frame.f_lineno``, without its cost: Python 3.11 scans the whole line table on each
    access, and a team's module is often one huge literal building thousands of configs."""
    code = frame.f_code
    table = _LINE_TABLES.get(id(code))
    if table is None:
        starts, lines = array.array("i"), array.array("i")
        for start, _end, line in code.co_lines():
            starts.append(start)
            lines.append(-1 if line is None else line)
        table = _LINE_TABLES[id(code)] = (starts, lines)
        weakref.finalize(code, _LINE_TABLES.pop, id(code), None)
    starts, lines = table
    index = bisect.bisect_right(starts, frame.f_lasti) - 1
    line = lines[index] if index >= 0 else -1
    return line if line >= 0 else frame.f_lineno
