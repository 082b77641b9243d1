"""Airflow integration (the optional extra ``token-fetcher[airflow]``): migrated Pinball
workflows as DAGs on stock Airflow 3.

- ``dags_file.py``: the loader file to drop into the dags folder
  (``token-fetcher airflow write-loader DIR`` writes it; for a large corpus, several,
  each building one share of the DAGs);
- ``problems_file.py``: the bundle's problems file, whose import error lists the
  migrated workflows that give no DAG;
- ``loader``: builds one DAG per migration metadata file through the client;
- ``layouts``, ``layout_cache``, ``resolution``, ``manifest``, ``problems``: resolved
  workflows, the on-disk cache of last good layouts, resolving metadata files, bundle
  manifests, what gives no DAG (no Airflow import: the manifest is built in a plain
  subprocess);
- ``dags``: a layout -> a DAG (tasks, dependencies, overrun policy);
- ``operators``: ``MigratedJobOperator`` and ``MigratedConditionSensor``
  (``fast_setattr``: the faster attribute hook they build tasks with);
- ``kubernetes``: the pod spec builder for the Kubernetes mode;
- ``timetable``: ``PinballTimetable`` (registered by ``plugin.TokenFetcherPlugin``);
- ``bundle``: ``TokenFetcherDagBundle``, a versioned DAG bundle that binds each DagRun
  to the layouts it was created with.

This package's ``__init__`` imports nothing from Airflow, so the command line can read
the loader file without Airflow installed. See docs/airflow.md.
"""

from __future__ import annotations

import math
import re

LOADER_FILE_NAME = "token_fetcher_dags.py"
"""The name the loader file gets in a dags folder or a bundle version."""
PROBLEMS_FILE_NAME = "token_fetcher_problems.py"
"""The name of the problems file in the bundle's current folder."""
DAGS_PER_LOADER_FILE = 5000
"""How many DAGs one loader file builds at most by default: about 10 s of parse on a
2-core machine, a third of Airflow's default ``dagbag_import_timeout`` (30 s)."""

__all__ = [
    "DAGS_PER_LOADER_FILE",
    "LOADER_FILE_NAME",
    "PROBLEMS_FILE_NAME",
    "loader_file_count",
    "loader_file_names",
    "loader_file_share",
    "loader_file_text",
    "loader_files",
    "problems_file_text",
]


def _shipped_text(name: str) -> str:
    from importlib import resources

    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def loader_file_text(share: int = 0, shares: int = 1) -> str:
    """The text of the loader file that builds share ``share`` (from 0) of ``shares``:
    the file shipped with the package when there is one share."""
    text = _shipped_text("dags_file.py")
    if shares == 1 and share == 0:
        return text
    if not 0 <= share < shares:
        raise ValueError(f"a loader file share must be in 0..{shares - 1}, got {share}")
    return text.replace("load_dags(globals())",
                        f"load_dags(globals(), share={share}, shares={shares})")


def loader_file_count(workflows: int, per_file: int = DAGS_PER_LOADER_FILE) -> int:
    """How many loader files split ``workflows`` DAGs so that none builds more than
    ``per_file``."""
    if per_file < 1:
        raise ValueError(f"DAGs per loader file must be at least 1, got {per_file}")
    return max(1, math.ceil(workflows / per_file))


def loader_file_names(shares: int, name: str = LOADER_FILE_NAME) -> list[str]:
    """The loader files' names: ``name`` alone, or one per share (``<stem>_02_of_04.py``)."""
    if shares < 1:
        raise ValueError(f"the number of loader files must be at least 1, got {shares}")
    if shares == 1:
        return [name]
    stem = name.removesuffix(".py")
    width = len(str(shares))
    return [f"{stem}_{share + 1:0{width}d}_of_{shares}.py" for share in range(shares)]


def loader_file_share(file_name: str, name: str = LOADER_FILE_NAME) -> tuple[int, int] | None:
    """(share, shares) of a loader file named by ``loader_file_names``, else None."""
    if file_name == name:
        return 0, 1
    stem = re.escape(name.removesuffix(".py"))
    found = re.fullmatch(rf"{stem}_(\d+)_of_(\d+)\.py", file_name)
    if found is None:
        return None
    share, shares = int(found[1]) - 1, int(found[2])
    return (share, shares) if 0 <= share < shares else None


def loader_files(shares: int, name: str = LOADER_FILE_NAME) -> dict[str, str]:
    """Every loader file of a split into ``shares``: file name -> text."""
    return {file_name: loader_file_text(share, shares)
            for share, file_name in enumerate(loader_file_names(shares, name))}


def problems_file_text() -> str:
    """The text of the problems file shipped with the package."""
    return _shipped_text("problems_file.py")
