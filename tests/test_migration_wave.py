"""The wave preflight on hand-made ListWorkflows answers: every status and caveat."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.migration import MigrationMetadata, write_metadata
from token_fetcher.migration_wave import preflight

DATE = datetime(2020, 1, 1, tzinfo=UTC)


def summary(name: str, *, status: int = pb.PARSE_STATUS_OK, dynamic: bool = False,
            policy: int = pb.OVERRUN_POLICY_DELAY, schedule: bool = True) -> pb.WorkflowSummary:
    result = pb.WorkflowSummary(name=name, status=status, dynamic=dynamic, fingerprint="f" + name)
    if schedule:
        result.schedule.CopyFrom(pb.Schedule(reference_time=Timestamp(seconds=1_420_070_400),
                                             recurrence_seconds=86_400, overrun_policy=policy))
    if status != pb.PARSE_STATUS_OK:
        result.errors.append(pb.ParseError(message="SyntaxError:\n  line 3"))
    return result


def test_every_status_and_caveat(tmp_path: Path) -> None:
    answer = pb.ListWorkflowsResponse(workflows=[
        summary("plain"),
        summary("stale", status=pb.PARSE_STATUS_STALE),
        summary("dynamic", dynamic=True),
        summary("skips", policy=pb.OVERRUN_POLICY_SKIP),
        summary("broken", status=pb.PARSE_STATUS_BROKEN, schedule=False),
        summary("unscheduled", schedule=False),
        summary("done"),
        summary("moved"),
    ])
    write_metadata(tmp_path, MigrationMetadata("core", "done", DATE))
    write_metadata(tmp_path, MigrationMetadata("core", "moved", datetime(2021, 1, 1, tzinfo=UTC)))
    found = {c.workflow: c for c in preflight("core", answer, ["*", "ghost"], str(tmp_path),
                                              DATE, force=False)}
    assert {name: c.status for name, c in found.items()} == {
        "plain": "migratable", "stale": "caveats", "dynamic": "caveats", "skips": "caveats",
        "broken": "blocked", "unscheduled": "blocked", "done": "migrated", "moved": "blocked",
        "ghost": "blocked",
    }
    assert found["stale"].notes[0].startswith("stale: ")
    assert found["dynamic"].notes == ["dynamic: its layout changes between parses of the same "
                                      "files"]
    assert found["skips"].notes[0].startswith("overrun SKIP: ")
    assert found["broken"].notes == ["broken: SyntaxError: line 3"]
    assert found["unscheduled"].notes == ["no usable schedule"]
    assert "already migrates on 2021-01-01T00:00:00Z; use --force" in found["moved"].notes[0]
    assert found["ghost"].notes == ["no such workflow in the cluster"]
    assert found["plain"].handover.first_new_run == 1_577_923_200  # 2020-01-02 00:00
    assert found["plain"].fingerprint == "fplain"


def test_force_and_a_glob_that_matches_nothing(tmp_path: Path) -> None:
    answer = pb.ListWorkflowsResponse(workflows=[summary("moved")])
    write_metadata(tmp_path, MigrationMetadata("core", "moved", datetime(2021, 1, 1, tzinfo=UTC)))
    [moved] = preflight("core", answer, ["mo*"], str(tmp_path), DATE, force=True)
    assert moved.status == "migratable"
    assert preflight("core", answer, ["x*"], str(tmp_path), DATE, force=False) == []
