"""The migration record: every migrate and rollback, appended beside the metadata files.

``<metadata dir>/migration-record.jsonl`` holds one JSON object per line, oldest first,
and is only ever appended to: who did what, when, to which version (fingerprint) of the
workflow, with which dates and which handover. It is not a ``*.json`` file, so
discover_metadata() never takes it for a metadata file.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ACTIONS",
    "RECORD_FILE",
    "Record",
    "RecordError",
    "append_record",
    "current_user",
    "format_time",
    "read_records",
    "record_path",
]

RECORD_FILE = "migration-record.jsonl"
ACTIONS = ("migrate", "rollback")
# The epoch-second fields, written as ISO 8601 UTC.
_DATE_FIELDS = ("time", "migration_date", "reference", "rollback_date", "last_legacy_run",
                "first_new_run", "last_new_run", "first_legacy_run")
# Written even when None ("last_legacy_run": null says Pinball never ran the workflow).
_ACTION_FIELDS = {
    "migrate": ("last_legacy_run", "first_new_run"),
    "rollback": ("rollback_date", "last_new_run", "first_legacy_run"),
}


class RecordError(ValueError):
    """A line of the record that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Record:
    """One migrate or rollback.

    A migrate fills ``last_legacy_run`` (None when Pinball never ran it) and
    ``first_new_run``; a rollback fills ``last_new_run`` (None when Airflow made no run)
    and ``first_legacy_run``. Times are UTC epoch seconds; ``reference`` and
    ``recurrence_seconds`` are the schedule the handover was computed on; ``partition``
    the DAG processor partition the metadata file names ("" for the hash's choice).
    """

    action: str
    cluster: str
    workflow: str
    time: int
    user: str
    fingerprint: str
    migration_date: int
    reference: int
    recurrence_seconds: int
    partition: str = ""
    rollback_date: int | None = None
    last_legacy_run: int | None = None
    first_new_run: int | None = None
    last_new_run: int | None = None
    first_legacy_run: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")

    def to_json(self) -> str:
        document: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value in (None, "") and item.name not in _ACTION_FIELDS[self.action]:
                continue
            if item.name in _DATE_FIELDS and value is not None:
                value = format_time(value)
            document[item.name] = value
        return json.dumps(document, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Record:
        document = json.loads(text)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        known = {item.name for item in fields(cls)}
        values = {}
        # Unknown keys are skipped, so a newer record stays readable by older commands.
        for key, value in document.items():
            if key not in known:
                continue
            if key in _DATE_FIELDS and value is not None:
                value = _epoch(key, value)
            values[key] = value
        missing = [item.name for item in fields(cls)
                   if item.default is MISSING and item.name not in values]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        for key in ("cluster", "workflow", "user", "fingerprint", "partition"):
            if key in values and not isinstance(values[key], str):
                raise ValueError(f"{key} must be a string, got {values[key]!r}")
        if type(values["recurrence_seconds"]) is not int:
            raise ValueError(f"recurrence_seconds must be an integer, got "
                             f"{values['recurrence_seconds']!r}")
        return cls(**values)


def format_time(epoch: int) -> str:
    """Epoch seconds as the record writes them: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(key: str, value: object) -> int:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a date string, got {value!r}")
    try:
        parsed = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{key} {value!r} is not YYYY-MM-DDTHH:MM:SSZ") from None
    return int(parsed.timestamp())


def record_path(folder: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(folder), RECORD_FILE)


def current_user() -> str:
    """``user@host`` of whoever runs the command (the uid when it has no name)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def append_record(folder: str | os.PathLike[str], record: Record) -> None:
    """Append one line to the folder's record, durably; never rewrites what is there.

    The line goes out in one write() under an exclusive lock, so two commands recording
    at once leave two whole lines in some order, never an interleaving.
    """
    os.makedirs(folder, exist_ok=True)
    line = (record.to_json() + "\n").encode("utf-8")
    fd = os.open(record_path(folder), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = os.write(fd, line)
        if written != len(line):  # a full disk; the reader reports the torn line
            raise OSError(f"wrote {written} of {len(line)} bytes to {record_path(folder)}")
        os.fsync(fd)
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_records(folder: str | os.PathLike[str]) -> tuple[list[Record], list[RecordError]]:
    """Every readable record line in order, and one RecordError per line that is not.

    A folder without a record has an empty one. An unreadable file raises OSError.
    """
    path = record_path(folder)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return [], []
    records: list[Record] = []
    errors: list[RecordError] = []
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if number == len(lines):
            errors.append(RecordError(f"{path}:{number}: the last line is incomplete"))
            continue
        try:
            records.append(Record.from_json(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            errors.append(RecordError(f"{path}:{number}: {exc}"))
    return records, errors
