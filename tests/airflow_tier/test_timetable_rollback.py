"""PinballTimetable after a rollback: no run after the rollback date, then again after a
re-migration, and the stop survives DAG serialization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.timetables.base import DataInterval, TimeRestriction

from token_fetcher.airflow.timetable import PinballTimetable
from token_fetcher.handovers import handover, rollback_handover

DAY = 86_400
REFERENCE = int(datetime(2015, 1, 1, 6, tzinfo=UTC).timestamp())
MIGRATION = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
ROLLBACK = int(datetime(2020, 1, 4, 12, tzinfo=UTC).timestamp())
UNRESTRICTED = TimeRestriction(earliest=None, latest=None, catchup=True)


def scheduled(table: PinballTimetable, last: DataInterval | None = None,
              limit: int = 100) -> list[int]:
    """Every run the scheduler would create, feeding back each run's interval."""
    runs = []
    for _ in range(limit):
        info = table.next_dagrun_info(last_automated_data_interval=last, restriction=UNRESTRICTED)
        if info is None:
            return runs
        runs.append(int(info.run_after.timestamp()))
        last = info.data_interval
    return runs


def test_runs_stop_at_the_last_grid_point_at_or_before_the_rollback() -> None:
    first = handover(REFERENCE, DAY, MIGRATION).first_new_run
    table = PinballTimetable(REFERENCE, DAY, first, stop_after=ROLLBACK)
    back = rollback_handover(REFERENCE, DAY, MIGRATION, ROLLBACK)
    runs = scheduled(table)
    assert runs == list(range(first, back.last_new_run + 1, DAY))
    assert runs[-1] + DAY == back.first_legacy_run
    assert [int(t.timestamp()) for t in table.runs_between(
        datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 2, 1, tzinfo=UTC))] == runs


def test_rolled_back_before_the_first_run_schedules_nothing() -> None:
    first = handover(REFERENCE, DAY, MIGRATION).first_new_run
    assert scheduled(PinballTimetable(REFERENCE, DAY, first, stop_after=MIGRATION)) == []


def test_a_re_migration_continues_after_pinballs_share() -> None:
    # Airflow ran up to the rollback; the DAG is re-migrated later and its next run is
    # the first grid point after the new migration date, not one Pinball ran meanwhile.
    first = handover(REFERENCE, DAY, MIGRATION).first_new_run
    stopped = PinballTimetable(REFERENCE, DAY, first, stop_after=ROLLBACK)
    runs = scheduled(stopped)
    last = DataInterval.exact(datetime.fromtimestamp(runs[-1], UTC))
    again = MIGRATION + 10 * DAY
    resumed = PinballTimetable(REFERENCE, DAY, handover(REFERENCE, DAY, again).first_new_run)
    assert scheduled(resumed, last, limit=2) == [
        handover(REFERENCE, DAY, again).first_new_run,
        handover(REFERENCE, DAY, again).first_new_run + DAY,
    ]


def test_the_stop_survives_serialization() -> None:
    table = PinballTimetable(REFERENCE, timedelta(days=1), MIGRATION, stop_after=ROLLBACK)
    again = decode_timetable(encode_timetable(table))
    assert again == table
    assert again.stop_after == ROLLBACK
    assert "rolled back at 2020-01-04T12:00:00" in table.description
    # A timetable without a stop serializes as before rollbacks existed.
    plain = PinballTimetable(REFERENCE, DAY, MIGRATION)
    assert "stop_after" not in plain.serialize()
    assert decode_timetable(encode_timetable(plain)) == plain
    assert plain != table
