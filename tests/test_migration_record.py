"""The migration record: append-only lines, read back with every bad line named."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from token_fetcher.metadata_discovery import discover_metadata
from token_fetcher.migration_record import (
    RECORD_FILE,
    Record,
    append_record,
    read_records,
    record_path,
)


def record(workflow: str = "w", action: str = "migrate", **fields: object) -> Record:
    values: dict = {
        "action": action, "cluster": "c", "workflow": workflow, "time": 1_700_000_000,
        "user": "ana@host", "fingerprint": "f" * 64, "migration_date": 1_577_836_800,
        "reference": 1_420_070_400, "recurrence_seconds": 86_400,
    }
    if action == "migrate":
        values.update(last_legacy_run=None, first_new_run=1_577_836_800 + 86_400)
    else:
        values.update(rollback_date=1_578_000_000, last_new_run=1_577_923_200,
                      first_legacy_run=1_578_009_600)
    values.update(fields)
    return Record(**values)


def test_records_round_trip_in_order(tmp_path: Path) -> None:
    written = [record("a"), record("b", "rollback"), record("a", fingerprint="g" * 64)]
    for item in written:
        append_record(tmp_path, item)
    assert read_records(tmp_path) == (written, [])
    first = json.loads((tmp_path / RECORD_FILE).read_text().splitlines()[0])
    # Dates are ISO 8601 UTC; a migrate says Pinball never ran it with an explicit null.
    assert first["time"] == "2023-11-14T22:13:20Z"
    assert first["last_legacy_run"] is None
    assert "last_new_run" not in first and "rollback_date" not in first


def test_appending_never_rewrites(tmp_path: Path) -> None:
    append_record(tmp_path, record("a"))
    before = (tmp_path / RECORD_FILE).read_bytes()
    append_record(tmp_path, record("b"))
    assert (tmp_path / RECORD_FILE).read_bytes().startswith(before)


def test_the_record_is_not_a_metadata_file(tmp_path: Path) -> None:
    append_record(tmp_path, record())
    assert discover_metadata(tmp_path).errors == ()


def test_a_missing_record_is_empty(tmp_path: Path) -> None:
    assert read_records(tmp_path / "nothing") == ([], [])


def test_bad_lines_are_named_and_the_rest_read(tmp_path: Path) -> None:
    append_record(tmp_path, record("a"))
    good = record("b").to_json()
    lines = [
        "not json",
        '["a list"]',
        '{"action": "migrate"}',
        good.replace('"cluster": "c"', '"cluster": 5'),
        good.replace('"2023-11-14T22:13:20Z"', '"yesterday"'),
        good.replace('"migrate"', '"delete"'),
        good.replace("{", '{"from_a_newer_version": 1, ', 1),
    ]
    with open(record_path(tmp_path), "a") as handle:
        handle.write("\n".join(lines) + "\n" + good[:20])  # and a torn last line
    records, errors = read_records(tmp_path)
    assert [item.workflow for item in records] == ["a", "b"]
    path = record_path(tmp_path)
    messages = [str(error) for error in errors]
    assert messages[0].startswith(f"{path}:2: Expecting value")
    assert messages[1] == f"{path}:3: not a JSON object"
    assert messages[2].startswith(f"{path}:4: missing cluster, workflow, time, user")
    assert messages[3] == f"{path}:5: cluster must be a string, got 5"
    assert messages[4] == f"{path}:6: time 'yesterday' is not YYYY-MM-DDTHH:MM:SSZ"
    assert messages[5] == f"{path}:7: action must be one of migrate, rollback, got 'delete'"
    assert messages[6] == f"{path}:9: the last line is incomplete"
    assert len(messages) == 7


def _append_many(folder: str, worker: int, count: int) -> None:
    for number in range(count):
        append_record(folder, record(f"w{worker}-{number}", fingerprint="x" * 3000))


def test_concurrent_appends_leave_whole_lines(tmp_path: Path) -> None:
    workers, each = 4, 40
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_many, args=(str(tmp_path), worker, each))
                 for worker in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    records, errors = read_records(tmp_path)
    assert errors == []
    assert sorted(item.workflow for item in records) == sorted(
        f"w{worker}-{number}" for worker in range(workers) for number in range(each))


def test_a_record_refuses_an_unknown_action() -> None:
    with pytest.raises(ValueError, match="action must be one of migrate, rollback"):
        record(action="undo")
