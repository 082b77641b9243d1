"""Airflow integration (the optional extra ``token-fetcher[airflow]``): migrated Pinball
workflows as DAGs on stock Airflow 3.

- ``dags_file.py``: the loader file to drop into the dags folder
  (``token-fetcher airflow write-loader DIR`` writes it);
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

LOADER_FILE_NAME = "token_fetcher_dags.py"
"""The name the loader file gets in a dags folder or a bundle version."""
PROBLEMS_FILE_NAME = "token_fetcher_problems.py"
"""The name of the problems file in the bundle's current folder."""

__all__ = ["LOADER_FILE_NAME", "PROBLEMS_FILE_NAME", "loader_file_text", "problems_file_text"]


def _shipped_text(name: str) -> str:
    from importlib import resources

    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def loader_file_text() -> str:
    """The text of the loader file shipped with the package."""
    return _shipped_text("dags_file.py")


def problems_file_text() -> str:
    """The text of the problems file shipped with the package."""
    return _shipped_text("problems_file.py")
