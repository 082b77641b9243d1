"""The Airflow tier (``make test-airflow``): real Airflow 3 on SQLite.

Airflow reads its configuration when it is first imported, so this module points it at
a scratch AIRFLOW_HOME before any test module imports it. The metadata database is
migrated once per session with ``airflow db migrate``. Servers come from the
``start_server`` fixture of tests/conftest.py (real token-fetcher servers on loopback).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from airflow_helpers import BundleMaker, Processes, airflow_env, migrate_db, prepare_home

from tests.helpers import cluster_config

# Without Airflow (the main venv's `make test`) this tier is not collected at all.
# Asked of the installed distributions: importing Airflow here would read its
# configuration before AIRFLOW_HOME is set below.
try:
    importlib.metadata.distribution("apache-airflow-core")
    AIRFLOW_INSTALLED = True
except importlib.metadata.PackageNotFoundError:
    AIRFLOW_INSTALLED = False
collect_ignore_glob = [] if AIRFLOW_INSTALLED else ["test_*.py"]

_SESSION_HOME = Path(tempfile.gettempdir()) / f"tf-airflow-{os.getpid()}"


# The in-process Airflow of this session.
if AIRFLOW_INSTALLED:
    os.environ.update(airflow_env(_SESSION_HOME))
    prepare_home(_SESSION_HOME)


@pytest.fixture(scope="session")
def airflow_home() -> Iterator[Path]:
    """The session's AIRFLOW_HOME, its database migrated."""
    migrate_db(airflow_env(_SESSION_HOME))
    yield _SESSION_HOME
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture
def dags_folder(tmp_path: Path) -> Path:
    """An empty dags folder for one test (with migrations/ inside)."""
    folder = tmp_path / "dags"
    (folder / "migrations").mkdir(parents=True)
    return folder


@pytest.fixture
def tf_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., None]:
    """Point the [token_fetcher] settings (env vars) at a server and folders."""

    def apply(server=None, **values: str) -> None:
        if server is not None:
            values.setdefault("target", f"127.0.0.1:{server.port}")
        values.setdefault("cache_dir", str(tmp_path / "layout_cache"))
        for key, value in values.items():
            monkeypatch.setenv(f"AIRFLOW__TOKEN_FETCHER__{key.upper()}", str(value))

    return apply


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    """Each test gets fresh token-fetcher clients (their caches would leak between
    tests that use different servers on reused ports)."""
    yield
    from token_fetcher.airflow import loader

    loader._close_clients()


@pytest.fixture
def python_server(start_server, example_copy):
    """A server of cluster example_python, a fresh copy of the example Python repo (its
    folder: ``server.repo``)."""
    repo = example_copy("python_repo")
    server = start_server(cluster_config("example_python", repo))
    server.repo = repo
    return server


@pytest.fixture
def make_bundle(python_server, tmp_path, monkeypatch, tf_settings, airflow_home) -> BundleMaker:
    """Makes versioned bundles against ``python_server`` over ``make_bundle.migrations``,
    where a test writes the metadata files it needs."""
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH", str(tmp_path / "bundles"))
    tf_settings(python_server, job_cwd=str(python_server.repo))
    return BundleMaker(python_server, tmp_path / "migrations", tmp_path / "store")


@pytest.fixture
def airflow_processes(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path)
    yield processes
    processes.stop()
