"""Past workflow versions in an embedded SQLite database, so pinned fingerprints survive
restarts, and which version of each workflow was served last, so a server restarted while a
definition fails serves its last good version.

The state directory may be read-only or full: then the service keeps serving from
memory, and ``error`` says why versions are not being kept.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping

from legacy_parser.model import Workflow, from_plain, to_plain

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    fingerprint TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    workflow TEXT NOT NULL,
    saved_at REAL NOT NULL,
    definition TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_workflow ON versions (cluster, workflow, saved_at);
CREATE TABLE IF NOT EXISTS served (
    cluster TEXT NOT NULL,
    workflow TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (cluster, workflow)
);
"""


class VersionHistory:
    def __init__(self, state_dir: str, keep_per_workflow: int) -> None:
        self.keep_per_workflow = keep_per_workflow
        self.error = ""
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.path = os.path.join(state_dir, "versions.sqlite3")
        try:
            os.makedirs(state_dir, exist_ok=True)
            self._db = sqlite3.connect(self.path,
                                       check_same_thread=False, isolation_level=None)
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            self._fail(f"cannot open the version history in {state_dir}: {error}")

    def _fail(self, message: str) -> None:
        self.error = message + "; versions are kept in memory only"

    def save(self, cluster: str, versions: list[tuple[str, Workflow]],
             served: Mapping[str, str] | None = None) -> None:
        """Record new versions and trim each workflow's history to the newest ones; with
        ``served`` (workflow -> fingerprint), also replace the cluster's served versions.
        A served version is always its workflow's newest, so trimming keeps it."""
        if self._db is None or (not versions and served is None):
            return
        now = time.time()
        rows = [(fingerprint, cluster, workflow.name, now, json.dumps(to_plain(workflow)))
                for fingerprint, workflow in versions]
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?)", rows)
                if served is not None:
                    self._db.execute("DELETE FROM served WHERE cluster = ?", (cluster,))
                    self._db.executemany("INSERT INTO served VALUES (?, ?, ?)", [
                        (cluster, workflow, fingerprint)
                        for workflow, fingerprint in served.items()])
                for _, _, workflow, _, _ in rows:
                    self._db.execute(
                        "DELETE FROM versions WHERE cluster = ? AND workflow = ? AND "
                        "fingerprint NOT IN (SELECT fingerprint FROM versions WHERE cluster = ? "
                        "AND workflow = ? ORDER BY saved_at DESC LIMIT ?)",
                        (cluster, workflow, cluster, workflow, self.keep_per_workflow))
                self._db.execute("COMMIT")
                self.error = ""
            except sqlite3.Error as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._fail(f"cannot save versions to {self.path}: {error}")

    def load(self, cluster: str, fingerprint: str) -> Workflow | None:
        rows = self._query("SELECT definition FROM versions WHERE fingerprint = ? AND "
                           "cluster = ?", (fingerprint, cluster))
        return _workflow(rows[0][0]) if rows else None

    def served(self, cluster: str) -> dict[str, Workflow]:
        """The versions the cluster served when it was last loaded, by fingerprint."""
        rows = self._query("SELECT fingerprint, versions.definition FROM served JOIN versions "
                           "USING (fingerprint) WHERE served.cluster = ?", (cluster,))
        found = {fingerprint: _workflow(definition) for fingerprint, definition in rows}
        return {fingerprint: workflow for fingerprint, workflow in found.items()
                if workflow is not None}

    def _query(self, sql: str, parameters: tuple) -> list[tuple]:
        if self._db is None:
            return []
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as error:
                self._fail(f"cannot read versions from {self.path}: {error}")
                return []

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _workflow(definition: str) -> Workflow | None:
    try:
        return from_plain(Workflow, json.loads(definition))
    except (TypeError, ValueError):
        return None  # written by an incompatible version of this service
