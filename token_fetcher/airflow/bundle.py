"""TokenFetcherDagBundle: a versioned DAG bundle whose version follows the layouts.

Airflow 3 records the bundle version on every DagRun when it is created, and runs the
run's tasks from that version (``dag_run.bundle_version`` / the task's DAG version) while
the DAG processor moves on. The default dags folder is unversioned, so there a run
silently switches to the newest layout. This bundle makes the layouts the version:

- ``refresh()`` (DAG processor) discovers the migration metadata files and resolves
  them with one BatchResolveMigrations round trip, in a short-lived subprocess (the DAG
  processor forks its parse processes; a process that started gRPC must not fork). The
  result is a *manifest*: every layout (spec bytes and fingerprint) and every problem.
  Its content hash is the bundle version. The manifest is kept in the *store*
  (``<store_dir>/<version>.json``) and copied, with the loader file, into the bundle's
  current folder, which the DAG processor parses.
- A worker asked to run a task of a run created at version V gets this bundle with
  ``version=V``; ``initialize()`` materializes ``versions/V`` (the loader file and
  manifest V from the store), and the loader builds the DAG from manifest V: the run's
  tasks run the layouts, commands included, that the run was created with, whatever the
  definitions say by now. The next run is created at the newer version.
- The current folder also holds the *problems file*: parsing it raises the manifest's
  problems (workflows that give no DAG), so they show as its import error in Airflow.
- After each refresh the store is pruned: the manifests of versions that unfinished
  runs use or that DAGs' next runs will be created at (read from Airflow's metadata
  database), the current one and the ``keep_versions`` newest stay; the rest are deleted.

Configure it in ``[dag_processor] dag_bundle_config_list``::

    [{"name": "pinball",
      "classpath": "token_fetcher.airflow.bundle.TokenFetcherDagBundle",
      "kwargs": {"migrations_dir": "/opt/airflow/migrations",
                 "store_dir": "/shared/token-fetcher/manifests"}}]

``store_dir`` must be readable by every worker (and writable by the DAG processor);
by default it is under the bundle's local storage folder, which suits a single host.
Other kwargs: ``target``, ``cache_dir``, ``timeout``, ``retries`` (default: the
``[token_fetcher]`` settings), ``refresh_timeout`` (seconds, 120), ``keep_versions``
(10), ``partition`` with ``partitions`` (every partition's name, the same in every
bundle) to serve one share of the workflows (token_fetcher.partitions; the partitions
share one ``store_dir``, required then: a run in flight when its workflow moves
finishes from the other partition's bundle, at the version it was created at), and
``dags_per_loader_file`` (5,000): a version with more layouts gets several loader files,
each building a stable share, so that no file's parse nears Airflow's
``dagbag_import_timeout``. Their number follows from the version's manifest, so a worker
materializes the same files the DAG processor parsed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from airflow.dag_processing.bundles.base import BaseDagBundle, BundleVersion

from token_fetcher.airflow import (
    DAGS_PER_LOADER_FILE,
    PROBLEMS_FILE_NAME,
    loader_file_count,
    loader_file_share,
    loader_files,
    problems_file_text,
)
from token_fetcher.airflow.manifest import MANIFEST_FILE_NAME, Manifest, prune_store
from token_fetcher.airflow.settings import Settings
from token_fetcher.files import atomic_write_text
from token_fetcher.partitions import Partitioning

__all__ = ["TokenFetcherDagBundle"]

_log = logging.getLogger(__name__)
_VERSION_FILE = "TOKEN_FETCHER_VERSION"


class TokenFetcherDagBundle(BaseDagBundle):
    """A DAG bundle of migrated Pinball workflows, versioned by their layouts."""

    supports_versioning = True

    def __init__(
        self,
        *,
        migrations_dir: str | None = None,
        store_dir: str | None = None,
        target: str | None = None,
        cache_dir: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        refresh_timeout: float = 120.0,
        keep_versions: int = 10,
        partition: str | None = None,
        partitions: str | list[str] | None = None,
        dags_per_loader_file: int = DAGS_PER_LOADER_FILE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if keep_versions < 1:
            raise ValueError(f"bundle {self.name}: keep_versions must be at least 1")
        if dags_per_loader_file < 1:
            raise ValueError(f"bundle {self.name}: dags_per_loader_file must be at least 1")
        self.dags_per_loader_file = dags_per_loader_file
        # Checked here, so a bad configuration fails when the bundle is made.
        self.partitioning = Partitioning.parse(partition, partitions or []) if partition else None
        if self.partitioning is not None and not store_dir:
            # Airflow runs a task from the bundle its DAG is in now, at the version its run
            # was created at: a run in flight when its workflow moves to another partition
            # finishes from that partition's bundle, which must find the version.
            raise ValueError(
                f"bundle {self.name}: a partition needs store_dir, the same folder for every "
                "partition (and every worker)"
            )
        self._overrides = {
            "migrations_dir": migrations_dir,
            "target": target,
            "cache_dir": cache_dir,
            "timeout": timeout,
            "retries": retries,
        }
        self.store_dir = Path(store_dir) if store_dir else self.base_dir / "manifests"
        self.current_dir = self.base_dir / "current"
        self.refresh_timeout = refresh_timeout
        self.keep_versions = keep_versions

    def settings(self) -> Settings:
        return Settings.from_airflow_conf().with_overrides(**self._overrides)

    # --- BaseDagBundle ---

    @property
    def path(self) -> Path:
        if self.version is None:
            return self.current_dir
        return self.versions_dir / self.version

    def initialize(self) -> None:
        with self.lock():
            if self.version is None:
                if not (self.current_dir / _VERSION_FILE).exists():
                    self._refresh_current()
            else:
                self._materialize(self.version)
        super().initialize()

    def refresh(self) -> None:
        if self.version is not None:
            raise ValueError("a bundle pinned to a version cannot be refreshed")
        with self.lock():
            self._refresh_current()

    def get_current_version(self) -> BundleVersion | None:
        if self.version is not None:
            return BundleVersion(version=self.version)
        try:
            version = (self.current_dir / _VERSION_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return BundleVersion(version=version) if version else None

    # --- internals ---

    def _refresh_current(self) -> None:
        settings = self.settings()
        self.current_dir.mkdir(parents=True, exist_ok=True)
        fd, output = tempfile.mkstemp(dir=self.base_dir, prefix=".manifest.", suffix=".json")
        os.close(fd)
        try:
            command = [
                sys.executable, "-m", "token_fetcher.airflow.manifest",
                "--migrations-dir", settings.migrations_dir,
                "--target", settings.target,
                "--output", output,
                "--cache-dir", settings.cache_dir,
                "--previous", str(self.current_dir / MANIFEST_FILE_NAME),
                "--timeout", str(settings.timeout),
                "--retries", str(settings.retries),
            ]  # fmt: skip
            if self.partitioning is not None:
                command += ["--partition", self.partitioning.name,
                            "--partitions", ",".join(self.partitioning.names)]
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.refresh_timeout,
                check=False,
            )
            for line in done.stderr.splitlines():
                _log.info("%s", line)
            if done.returncode != 0:
                raise RuntimeError(
                    f"token-fetcher bundle {self.name}: resolving the layouts failed "
                    f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}"
                )
            manifest = Manifest.read(output)
            version = manifest.version
            stored = self.store_dir / f"{version}.json"
            if stored.exists():
                os.utime(stored)  # current again: the newest for pruning
            else:
                manifest.write(stored)
            loaders = self._loader_files(manifest)
            for name, text in (*loaders.items(), (PROBLEMS_FILE_NAME, problems_file_text())):
                path = self.current_dir / name
                if not path.exists() or path.read_text(encoding="utf-8") != text:
                    atomic_write_text(path, text, durable=False)
            for path in self.current_dir.iterdir():  # another split's loader files
                if path.name not in loaders and loader_file_share(path.name) is not None:
                    path.unlink()
            os.replace(output, self.current_dir / MANIFEST_FILE_NAME)
            atomic_write_text(self.current_dir / _VERSION_FILE, version + "\n", durable=False)
            _log.info(
                "token-fetcher bundle %s: version %s, %d layout(s), %d problem(s)",
                self.name,
                version,
                len(manifest.layouts),
                len(manifest.problems),
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(output)
        self._prune(version)

    def _loader_files(self, manifest: Manifest) -> dict[str, str]:
        return loader_files(loader_file_count(len(manifest.layouts), self.dags_per_loader_file))

    def _prune(self, current: str) -> None:
        """Delete the stored manifests no unfinished run uses, but the newest ones."""
        try:
            in_use = versions_in_use()
        except Exception:  # never delete what might be in use
            _log.exception("token-fetcher bundle %s: not pruning the store", self.name)
            return
        deleted = prune_store(self.store_dir, self.keep_versions, in_use | {current})
        if deleted:
            _log.info(
                "token-fetcher bundle %s: pruned %d stored version(s): %s",
                self.name,
                len(deleted),
                ", ".join(deleted),
            )

    def _materialize(self, version: str) -> None:
        target = self.versions_dir / version
        if (target / MANIFEST_FILE_NAME).exists():
            return
        stored = self.store_dir / f"{version}.json"
        if not stored.exists():
            raise FileNotFoundError(
                f"token-fetcher bundle {self.name}: no manifest for version {version} in "
                f"{self.store_dir} (store_dir must be shared by the DAG processor and the workers)"
            )
        manifest = Manifest.read(stored)  # checks the content against the version
        if manifest.version != version:
            raise ValueError(f"{stored}: holds version {manifest.version}, not {version}")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=f".{version}."))
        try:
            shutil.copyfile(stored, temp / MANIFEST_FILE_NAME)
            for name, text in self._loader_files(manifest).items():
                (temp / name).write_text(text, encoding="utf-8")
            temp.chmod(0o755)
            try:
                os.rename(temp, target)
            except OSError:
                if not (target / MANIFEST_FILE_NAME).exists():
                    raise
        finally:
            shutil.rmtree(temp, ignore_errors=True)


def versions_in_use() -> set[str]:
    """The bundle versions that unfinished (queued or running) DagRuns use: the one each
    was created at and those of its task instances' DAG versions (Airflow moves a DAG
    version's bundle version forward when a new bundle version leaves its DAG as it was);
    and the one each DAG's next run will be created at, which in a store shared by
    partitions may be another partition's current version."""
    # The metadata database's models: imported here only, since workers load this module.
    from airflow.models.dag import DagModel
    from airflow.models.dag_version import DagVersion
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import and_, select

    unfinished = DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING])
    runs = select(DagRun.bundle_version).where(unfinished)
    tasks = (
        select(DagVersion.bundle_version)
        .join(TaskInstance, TaskInstance.dag_version_id == DagVersion.id)
        .join(
            DagRun,
            and_(DagRun.dag_id == TaskInstance.dag_id, DagRun.run_id == TaskInstance.run_id),
        )
        .where(unfinished)
    )
    with create_session() as session:
        found = set(session.scalars(runs)) | set(session.scalars(tasks))
        found |= set(session.scalars(select(DagModel.bundle_version).distinct()))
    return {version for version in found if version}
