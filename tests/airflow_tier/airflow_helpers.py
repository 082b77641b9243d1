"""Helpers of the Airflow tier, shared by its conftest and test modules."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for

BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")


def airflow_env(home: Path) -> dict[str, str]:
    """The environment of an Airflow installation living in ``home`` (SQLite)."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__API_AUTH__JWT_SECRET": "token-fetcher-tests-only",
        "AIRFLOW__TOKEN_FETCHER__CACHE_DIR": str(home / "token_fetcher_cache"),
    }


def prepare_home(home: Path) -> None:
    """Folders, and the plugin when the package's entry point is not installed (the
    package installed before setup.cfg declared it)."""
    for name in ("dags", "plugins", "logs"):
        (home / name).mkdir(parents=True, exist_ok=True)
    if not plugin_entry_point_installed():
        (home / "plugins" / "token_fetcher_plugin.py").write_text(
            "from token_fetcher.airflow.plugin import TokenFetcherPlugin  # noqa: F401\n"
        )


def plugin_entry_point_installed() -> bool:
    return any(
        ep.value.startswith("token_fetcher.airflow.plugin")
        for ep in entry_points(group="airflow.plugins")
    )


def migrate_db(env: dict[str, str], timeout: float = 120) -> None:
    done = subprocess.run(
        [AIRFLOW, "db", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


def write_migration(
    folder: Path, cluster: str, workflow: str, date: str = "2020-01-01 00:00:00"
) -> Path:
    path = folder / cluster / f"{workflow}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"cluster_name": cluster, "workflow_name": workflow, "migration_date": date})
    )
    return path


def write_loader(folder: Path) -> Path:
    from token_fetcher.airflow import LOADER_FILE_NAME, loader_file_text

    path = folder / LOADER_FILE_NAME
    path.write_text(loader_file_text())
    return path


class BundleMaker:
    """Makes TokenFetcherDagBundles named "pinball" over one metadata folder and one
    store, refreshed every second, against ``server``."""

    def __init__(self, server, migrations: Path, store: Path) -> None:
        self.server = server
        self.migrations = migrations
        self.store = store

    def __call__(self, version: str | None = None, **options: Any):
        # Imported here: this module is imported before Airflow's home is set.
        from token_fetcher.airflow.bundle import TokenFetcherDagBundle

        return TokenFetcherDagBundle(
            name="pinball",
            version=version,
            migrations_dir=str(self.migrations),
            store_dir=str(self.store),
            target=f"127.0.0.1:{self.server.port}",
            refresh_interval=1,
            **options,
        )


def killed_while_running(operator, context: dict, pid_file: Path,
                         timeout: float = 60) -> list[Exception]:
    """Execute ``operator`` on a thread and, once its command has written ``pid_file``,
    call ``on_kill()`` as Airflow's SIGTERM handler does; the AirflowExceptions
    ``execute`` raised."""
    from airflow.sdk.exceptions import AirflowException

    errors: list[Exception] = []

    def run() -> None:
        try:
            operator.execute(context)
        except AirflowException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout,
             message="the command to start")
    operator.on_kill()  # execute goes on
    thread.join(timeout=timeout)
    assert not thread.is_alive()
    return errors


class Processes:
    """Long-running Airflow components started by a test; all stopped at the end."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.home / f"{name}.out"
        handle = open(log, "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [AIRFLOW, *args],
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        handle.close()
        self.started.append((name, process, log))
        return process

    def check_alive(self) -> None:
        for name, process, log in self.started:
            if process.poll() is not None:
                raise AssertionError(
                    f"airflow {name} exited {process.returncode}:\n{self.tail(log)}"
                )

    @staticmethod
    def tail(log: Path, size: int = 4000) -> str:
        try:
            return log.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self) -> None:
        for _, process, _ in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, process, _ in self.started:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# --- a whole Airflow (api-server, dag-processor, scheduler) with the versioned bundle ---


def bundle_deployment_env(
    home: Path,
    *,
    api_port: int,
    target: str,
    migrations: Path,
    job_cwd: Path,
    partitions: Mapping[str, str] | None = None,
    **bundle_kwargs,
) -> dict[str, str]:
    """The environment of an Airflow in ``home`` whose bundles are TokenFetcherDagBundles
    over ``migrations`` with their store in ``home/store``, refreshed every second, with
    the LocalExecutor and an api-server open to all (tests only).

    One bundle, ``pinball``, or with ``partitions`` (a partition's name -> its token
    fetcher's target) one bundle per partition, ``pinball-<name>``, each serving its share."""
    common = {
        "migrations_dir": str(migrations),
        "store_dir": str(home / "store"),
        "refresh_interval": 1,
        **bundle_kwargs,
    }
    classpath = "token_fetcher.airflow.bundle.TokenFetcherDagBundle"
    if partitions:
        bundles = [
            {
                "name": f"pinball-{name}",
                "classpath": classpath,
                "kwargs": {**common, "target": partition_target, "partition": name,
                           "partitions": list(partitions)},
            }
            for name, partition_target in partitions.items()
        ]
    else:
        bundles = [{"name": "pinball", "classpath": classpath, "kwargs": common}]
    return {
        **airflow_env(home),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "2",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # A task's calls to the api-server (5 s by default): on a busy test machine, with
        # several processes writing one SQLite database, an answer can take longer.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        # How long the api-server serves a DAG's cached docs, among others.
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "2",
        "AIRFLOW__TOKEN_FETCHER__TARGET": target,
        "AIRFLOW__TOKEN_FETCHER__JOB_CWD": str(job_cwd),
    }


def start_deployment(
    processes: Processes, env: dict[str, str], bundle_names: Sequence[str] = ()
) -> None:
    """Migrate the database, then start the api-server, the scheduler and a dag-processor:
    one for every bundle, or with ``bundle_names`` one per bundle named
    (``dag-processor --bundle-name``), as partitions are deployed."""
    migrate_db(env)
    # Each of these processes writes the configured bundles to the database as it starts;
    # started together on a fresh database, two may insert the same row and one exits
    # (UNIQUE constraint failed: dag_bundle.name). Written once here, they only update it.
    register = "from airflow.dag_processing.bundles.manager import DagBundlesManager as M; " \
        "M().sync_bundles_to_db()"
    subprocess.run([sys.executable, "-c", register], env={**os.environ, **env}, check=True,
                   capture_output=True, timeout=120)
    port = env["AIRFLOW__API__PORT"]
    processes.start(
        "api-server", ["api-server", "--port", port, "--host", "127.0.0.1", "--workers", "1"], env
    )
    for name in bundle_names:
        processes.start(f"dag-processor-{name}", ["dag-processor", "--bundle-name", name], env)
    if not bundle_names:
        processes.start("dag-processor", ["dag-processor"], env)
    processes.start("scheduler", ["scheduler"], env)


def query(db: Path, sql: str, *args: object) -> list[tuple]:
    """Rows from Airflow's SQLite database, read-only; none while it is not there yet or
    locked for a moment."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as connection:
            return connection.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []


def wait_alive(processes: Processes, condition, message: str, deadline: float):
    """wait_for() for a scenario with Airflow processes: fails at once when one of them
    exits, and shows their logs when the deadline (time.monotonic()) passes."""
    while True:
        processes.check_alive()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {name}\n{processes.tail(log, 3000)}" for name, _, log in processes.started
            )
            raise AssertionError(f"timed out waiting for {message}\n{logs}")
        time.sleep(0.5)


def utc_datetime(value: str) -> datetime:
    """A timestamp from Airflow's SQLite database (naive means UTC) as an aware datetime."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def runs_by_grid_point(db: Path, dag_id: str) -> dict[datetime, str]:
    """The state of the DAG's runs by their grid point (the data interval's end)."""
    rows = query(db, "select data_interval_end, state from dag_run where dag_id = ?", dag_id)
    return {utc_datetime(end): state for end, state in rows}


def midnight_or_skip() -> datetime:
    """Today's midnight UTC, the last grid point of a daily schedule in a scenario whose
    dates are in the past; skips the test too close to the next midnight, when a new
    grid point would come mid-test."""
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if now - today > timedelta(hours=23, minutes=50):
        pytest.skip("too close to midnight UTC: a new grid point would come mid-test")
    return today


def dag_runs(db: Path, dag_id: str) -> list[tuple]:
    """(run_id, state, bundle_version) of the DAG's runs, in run time order."""
    return query(
        db,
        "select run_id, state, bundle_version from dag_run where dag_id = ? "
        "order by data_interval_end",
        dag_id,
    )


def first_run_at_its_gate(db: Path, dag_id: str) -> list[tuple] | None:
    """The DAG's runs once run 1 has its bundle version and its ``gate`` condition is
    polling; else None. Fails at once when run 1 finished before its gate was opened
    (on an overloaded machine Airflow may fail a task whose heartbeats stop)."""
    runs = dag_runs(db, dag_id)
    if runs and runs[0][1] in ("success", "failed"):
        tasks = query(
            db,
            "select task_id, state from task_instance where dag_id = ? and run_id = ?",
            dag_id,
            runs[0][0],
        )
        raise AssertionError(f"{dag_id}: run 1 ended {runs[0][1]} before its gate opened: {tasks}")
    gate = query(
        db, "select state from task_instance where dag_id = ? and task_id = 'gate'", dag_id
    )
    if runs and runs[0][2] and gate and gate[0][0] in ("running", "up_for_reschedule"):
        return runs
    return None


def finished_runs(db: Path, dag_id: str, count: int) -> list[tuple] | None:
    """The DAG's first ``count`` runs once all of them have finished; else None. (A later
    run appears only if a test crosses midnight UTC; it is ignored.)"""
    runs = dag_runs(db, dag_id)[:count]
    if len(runs) == count and all(run[1] in ("success", "failed") for run in runs):
        return runs
    return None
