"""Past workflow versions in an embedded SQLite database, so pinned fingerprints survive
restarts.

The state directory may be read-only or full: then the service keeps serving from
memory, and ``error`` says why versions are not being kept.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

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

    def save(self, cluster: str, versions: list[tuple[str, Workflow]]) -> None:
        """Record new versions and trim each workflow's history to the newest ones."""
        if self._db is None or not versions:
            return
        now = time.time()
        rows = [(fingerprint, cluster, workflow.name, now, json.dumps(to_plain(workflow)))
                for fingerprint, workflow in versions]
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?)", rows)
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
        if self._db is None:
            return None
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT definition FROM versions WHERE fingerprint = ? AND cluster = ?",
                    (fingerprint, cluster)).fetchone()
            except sqlite3.Error as error:
                self._fail(f"cannot read versions from {self.path}: {error}")
                return None
        if row is None:
            return None
        try:
            return from_plain(Workflow, json.loads(row[0]))
        except (TypeError, ValueError):
            return None  # written by an incompatible version of this service

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
