"""Import shims that let unmodified Pinball definitions load under Python 3.

``install()`` puts a finder first on ``sys.meta_path`` that resolves the top-level
``pinball`` and ``pinball_ext`` packages to the shim packages beside this file
(their submodules then resolve through the packages' ``__path__``). It is called
only inside sandbox workers, so the shims never appear in the server's
``sys.modules``.
"""

from __future__ import annotations

import bisect
import functools
import importlib.abc
import importlib.machinery
import os
import sys
import types
from pathlib import Path

SHIM_ROOT = str(Path(__file__).resolve().parent)
SHIMMED_PACKAGES = ("pinball", "pinball_ext")


class _ShimFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in SHIMMED_PACKAGES:
            return importlib.machinery.PathFinder.find_spec(fullname, [SHIM_ROOT])
        return None


def install() -> None:
    if not any(isinstance(finder, _ShimFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ShimFinder())


@functools.cache
def is_shim_file(filename: str) -> bool:
    # Cached: asked for every frame of every config object built; code file names are few.
    return os.path.abspath(filename).startswith(SHIM_ROOT + os.sep)


def definition_site() -> tuple[str, int]:
    """The file and line of the nearest caller outside the shims (where a user wrote it)."""
    frame = sys._getframe(1)
    while frame is not None and is_shim_file(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return "", 0
    return frame.f_code.co_filename, _line_of(frame)


# code object -> (instruction offsets where a line range starts, the lines)
_LINE_TABLES: dict[types.CodeType, tuple[list[int], list[int | None]]] = {}


def _line_of(frame: types.FrameType) -> int:
    """``frame.f_lineno``, without its cost: Python 3.11 scans the whole line table on each
    access, and a team's module is often one huge literal building thousands of configs."""
    code = frame.f_code
    table = _LINE_TABLES.get(code)
    if table is None:
        starts, lines = [], []
        for start, _end, line in code.co_lines():
            starts.append(start)
            lines.append(line)
        table = _LINE_TABLES[code] = (starts, lines)
    index = bisect.bisect_right(table[0], frame.f_lasti) - 1
    line = table[1][index] if index >= 0 else None
    return line if line is not None else frame.f_lineno
