"""Migration metadata files: their format, reading and writing one.

A metadata file names one migrated workflow::

    {"cluster_name": "core001", "workflow_name": "test_workflow",
     "migration_date": "2020-01-01 00:00:00"}

Airflow runs the workflow's grid points after the migration date, Pinball those at or
before it (token_fetcher.handovers). A rolled-back workflow's file also has a
``"rollback_date"``, after which Pinball runs it again. An optional ``"partition"``
names the DAG processor partition that serves the workflow (token_fetcher.partitions).
token_fetcher.metadata_discovery reads every file below a folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from token_fetcher.files import atomic_write_text, fsync_directory

__all__ = [
    "MetadataError",
    "MigrationMetadata",
    "metadata_path",
    "parse_date",
    "parse_metadata",
    "read_metadata",
    "write_metadata",
]

_FIELDS = ("cluster_name", "workflow_name", "migration_date")
_NAME_FIELDS = ("cluster_name", "workflow_name")
_ROLLBACK_FIELD = "rollback_date"
_PARTITION_FIELD = "partition"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)

# "2020-01-01 00:00:00" or ISO 8601 with "T", optional fraction, optional "Z" or
# offset. Written out rather than datetime.fromisoformat(), which in 3.11 also takes
# date-only, hour-only, week dates and the basic format: all of them too ambiguous
# for the date that decides which scheduler owns a run. [0-9], not \d, which also
# matches non-ASCII digits.
_DATE_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[ Tt]"
    r"(?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?P<zone>[Zz]|[+-][0-9]{2}:?[0-9]{2})?"
)
_DATE_FORMS = (
    "expected 'YYYY-MM-DD HH:MM:SS' (UTC) or ISO 8601 such as "
    "'2020-01-01T00:00:00Z', '2020-01-01T05:30:00+05:30' or '2020-01-01T00:00:00.5'"
)


class MetadataError(ValueError):
    """A metadata file that cannot be used; the message names the file and the problem."""

    def __init__(self, problem: str, path: str | os.PathLike[str] = "") -> None:
        self.problem = problem
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call MetadataError(message) and lose the path.
        return (type(self), (self.problem, self.path))


def _name_problem(key: str, value: str) -> str | None:
    if value == "":
        return f"{key} is empty"
    if not value.strip():
        return f"{key} {value!r} is only whitespace"
    if "/" in value:
        return f"{key} {value!r} contains '/'"
    if "\0" in value:
        return f"{key} {value!r} contains a NUL character"
    # The names become a folder and a file name in write_metadata().
    if value in (".", ".."):
        return f"{key} {value!r} is not a usable name"
    return None


def _floor_to_utc_second(value: datetime) -> datetime:
    # The grid is whole seconds, and for an integer grid point g and any instant M,
    # g <= M exactly when g <= floor(M): dropping the fraction never moves a run to
    # the other scheduler, and keeps to_json() a lossless round trip.
    return value.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class MigrationMetadata:
    """One migrated workflow.

    ``migration_date`` must be timezone-aware; it is stored in UTC, truncated to the
    second. ``rollback_date``, when set, is normalised the same way and is never before
    the migration date. ``partition`` is "" unless ``migrate --partition`` recorded one.
    ``path`` records where the metadata came from and takes no part in equality or
    hashing.
    """

    cluster_name: str
    workflow_name: str
    migration_date: datetime
    path: str = field(default="", compare=False)
    rollback_date: datetime | None = None
    partition: str = ""

    def __post_init__(self) -> None:
        for key in _NAME_FIELDS:
            value = getattr(self, key)
            if not isinstance(value, str):
                raise TypeError(f"{key} must be a str, got {type(value).__name__}")
            problem = _name_problem(key, value)
            if problem:
                raise ValueError(problem)
        if not isinstance(self.partition, str):
            raise TypeError(f"partition must be a str, got {type(self.partition).__name__}")
        problem = self.partition and _name_problem(_PARTITION_FIELD, self.partition)
        if problem:
            raise ValueError(problem)
        for key in ("migration_date", _ROLLBACK_FIELD):
            date = getattr(self, key)
            if date is None and key == _ROLLBACK_FIELD:
                continue
            if not isinstance(date, datetime):
                raise TypeError(f"{key} must be a datetime, got {type(date).__name__}")
            if date.utcoffset() is None:
                raise ValueError(f"{key} must be timezone-aware (use timezone.utc)")
            # Frozen: normalising has to bypass the dataclass's __setattr__.
            object.__setattr__(self, key, _floor_to_utc_second(date))
        if self.rollback_date is not None and self.rollback_date < self.migration_date:
            raise ValueError(_rollback_before_migration(self.rollback_date, self.migration_date))
        object.__setattr__(self, "path", os.fspath(self.path))

    @property
    def migration_epoch(self) -> int:
        """The migration date in UTC epoch seconds."""
        return _epoch(self.migration_date)

    @property
    def rollback_epoch(self) -> int | None:
        """The rollback date in UTC epoch seconds; None when not rolled back."""
        return None if self.rollback_date is None else _epoch(self.rollback_date)

    def to_json(self) -> str:
        """Return the canonical one-line file format (without a trailing newline)."""
        document = {
            "cluster_name": self.cluster_name,
            "workflow_name": self.workflow_name,
            "migration_date": _stamp(self.migration_date),
        }
        if self.rollback_date is not None:
            document[_ROLLBACK_FIELD] = _stamp(self.rollback_date)
        if self.partition:
            document[_PARTITION_FIELD] = self.partition
        return json.dumps(document)


def _epoch(value: datetime) -> int:
    # timedelta // timedelta is exact integer arithmetic, unlike timestamp().
    return (value - _EPOCH) // _ONE_SECOND


def _stamp(d: datetime) -> str:
    # Formatted by hand: strftime("%Y") does not pad years before 1000 on glibc.
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"


def _rollback_before_migration(rollback: datetime, migration: datetime) -> str:
    return (
        f"rollback_date {_stamp(rollback)} is before migration_date {_stamp(migration)}: "
        "Airflow would give back runs it never made"
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _describe(value: object) -> str:
    if value is None:
        return "null"
    shown = json.dumps(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{_json_type(value)} ({shown})"


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads() would silently keep the last of two "migration_date" keys.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_date(value: str, key: str = "migration_date") -> datetime:
    """A date as metadata files write it, in UTC (the fraction dropped); ``key`` names it
    in the ValueError."""
    match = _DATE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"{key} {value!r} is not a date and time: {_DATE_FORMS}")
    zone = match["zone"]
    try:
        if zone is None or zone in ("Z", "z"):
            tz = UTC
        else:
            digits = zone[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:])
            if hours > 23 or minutes > 59:
                raise ValueError("bad offset")
            sign = -1 if zone[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        year, month, day = (int(part) for part in match["date"].split("-"))
        hour, minute, second = (int(part) for part in match["time"].split(":"))
        # The fraction is dropped: see _floor_to_utc_second(). Offsets are whole
        # minutes, so dropping it before converting to UTC gives the same second.
        local = datetime(year, month, day, hour, minute, second, tzinfo=tz)
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            f"{key} {value!r} is out of range (no such date, time or UTC offset)"
        ) from None


def parse_metadata(text: str, path: str | os.PathLike[str] = "") -> MigrationMetadata:
    """Parse the text of a metadata file; ``path`` only labels errors and the result.

    ``migration_date`` may be ``YYYY-MM-DD HH:MM:SS`` or ISO 8601 with ``T``, a
    fraction of a second, and ``Z`` or an offset such as ``+05:30``; without a zone it
    is UTC. Offsets are converted to UTC and the fraction is dropped. An optional
    ``rollback_date`` takes the same forms and is not before ``migration_date``; an
    optional ``partition`` is a name like the others. Unknown
    keys are
    accepted and ignored, so newer files still load in older clients; duplicate keys
    are an error. Every problem found is reported in one MetadataError.
    """
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise MetadataError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path
        ) from None
    except ValueError as exc:  # from _reject_duplicate_keys
        raise MetadataError(f"invalid metadata: {exc}", path) from None
    if not isinstance(data, dict):
        raise MetadataError(
            f"expected a JSON object with {', '.join(_FIELDS)}, got {_json_type(data)}", path
        )

    problems: list[str] = []
    missing = [key for key in _FIELDS if key not in data]
    if missing:
        problems.append(f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    for key in _FIELDS:
        if key in data and not isinstance(data[key], str):
            problems.append(f"{key} must be a string, got {_describe(data[key])}")
    for key in _NAME_FIELDS:
        if isinstance(data.get(key), str):
            problem = _name_problem(key, data[key])
            if problem:
                problems.append(problem)
    dates: dict[str, datetime] = {}
    for key in ("migration_date", _ROLLBACK_FIELD):
        if key == _ROLLBACK_FIELD and key in data and not isinstance(data[key], str):
            problems.append(f"{key} must be a string, got {_describe(data[key])}")
        elif isinstance(data.get(key), str):
            try:
                dates[key] = parse_date(data[key], key)
            except ValueError as exc:
                problems.append(str(exc))
    partition = data.get(_PARTITION_FIELD, "")
    if not isinstance(partition, str):
        problems.append(f"partition must be a string, got {_describe(partition)}")
    elif partition and _name_problem(_PARTITION_FIELD, partition):
        problems.append(str(_name_problem(_PARTITION_FIELD, partition)))
    rollback_date = dates.get(_ROLLBACK_FIELD)
    if "migration_date" in dates and rollback_date is not None:
        migration_date = _floor_to_utc_second(dates["migration_date"])
        if _floor_to_utc_second(rollback_date) < migration_date:
            problems.append(_rollback_before_migration(rollback_date, migration_date))
    if problems:
        raise MetadataError("; ".join(problems), path)
    return MigrationMetadata(
        cluster_name=data["cluster_name"],
        workflow_name=data["workflow_name"],
        migration_date=dates["migration_date"],
        path=os.fspath(path),
        rollback_date=rollback_date,
        partition=partition,
    )


def read_metadata(path: str | os.PathLike[str]) -> MigrationMetadata:
    """Read and parse one metadata file; every failure is a MetadataError naming it."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise MetadataError(f"cannot read file: {exc.strerror or exc}", path) from None
    try:
        # utf-8-sig: editors on Windows like to start JSON files with a BOM.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"not UTF-8 text (byte {exc.start}): {exc.reason}", path) from None
    return parse_metadata(text, path)


def metadata_path(folder: str | os.PathLike[str], cluster: str, workflow: str) -> str:
    """Where write_metadata() puts a workflow's file: ``<folder>/<cluster>/<workflow>.json``."""
    return os.path.join(os.fspath(folder), cluster, workflow + ".json")


def write_metadata(folder: str | os.PathLike[str], metadata: MigrationMetadata) -> str:
    """Write ``<folder>/<cluster>/<workflow>.json`` atomically and return its path.

    Readers see the old file or the new one, never a partial one: the text goes to a
    hidden temp file in the same folder, is flushed to disk, then renamed over the
    target. Raises ValueError for names discover_metadata() would skip (leading
    ``.``), OSError when the file system refuses.
    """
    for key in _NAME_FIELDS:
        name = getattr(metadata, key)
        if name.startswith("."):
            raise ValueError(
                f"{key} {name!r} starts with '.': discover_metadata() would skip the file"
            )
    target = metadata_path(folder, metadata.cluster_name, metadata.workflow_name)
    atomic_write_text(target, metadata.to_json() + "\n")
    fsync_directory(os.path.dirname(target))
    return target
