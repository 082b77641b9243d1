"""PinballTimetable: the first runs after a migration date, exactly on the grid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.timetables.base import DataInterval, TimeRestriction

from token_fetcher.airflow.timetable import PinballTimetable
from token_fetcher.handovers import handover


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def epoch(value: datetime) -> int:
    return int(value.timestamp())


def timetable(reference: datetime, recurrence: timedelta, migration: datetime) -> PinballTimetable:
    first = handover(epoch(reference), int(recurrence.total_seconds()), epoch(migration))
    return PinballTimetable(reference, recurrence, first.first_new_run)


def first_runs(
    table: PinballTimetable, count: int, *, catchup: bool = True, earliest: datetime | None = None
) -> list[datetime]:
    """Ask the timetable the way the scheduler does, feeding back each run's interval."""
    runs = []
    last: DataInterval | None = None
    restriction = TimeRestriction(earliest=earliest, latest=None, catchup=catchup)
    for _ in range(count):
        info = table.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        assert info is not None
        assert info.run_after == info.data_interval.end
        assert info.data_interval.end - info.data_interval.start == timedelta(
            seconds=table.recurrence
        )
        runs.append(info.run_after)
        last = info.data_interval
    return runs


MIGRATION = utc(2020, 1, 1)


@pytest.mark.parametrize(
    ("reference", "recurrence", "expected"),
    [
        # daily_reporting: every day at 06:00
        (
            utc(2015, 1, 1, 6),
            timedelta(days=1),
            [utc(2020, 1, 1, 6), utc(2020, 1, 2, 6), utc(2020, 1, 3, 6)],
        ),
        # hourly_metrics: every hour at :05
        (
            utc(2015, 1, 1, 0, 5),
            timedelta(hours=1),
            [utc(2020, 1, 1, 0, 5), utc(2020, 1, 1, 1, 5), utc(2020, 1, 1, 2, 5)],
        ),
        # event_ingest: every 7 hours from 2015-01-01 00:00 (43,824 h to the migration,
        # 43,820 = 6,260 x 7 was Pinball's last run at 2019-12-31 20:00)
        (
            utc(2015, 1, 1),
            timedelta(hours=7),
            [utc(2020, 1, 1, 3), utc(2020, 1, 1, 10), utc(2020, 1, 1, 17), utc(2020, 1, 2, 0)],
        ),
        # to the second: every 7 h 0 min 1 s
        (
            utc(2019, 12, 31, 23, 0, 0),
            timedelta(hours=7, seconds=1),
            [utc(2020, 1, 1, 6, 0, 1), utc(2020, 1, 1, 13, 0, 2)],
        ),
    ],
    ids=["daily", "hourly", "7-hourly", "7h1s"],
)
def test_first_runs_after_the_migration_date(reference, recurrence, expected):
    table = timetable(reference, recurrence, MIGRATION)
    runs = first_runs(table, len(expected))
    assert runs == expected
    assert all(run > MIGRATION for run in runs)
    # Every run is a grid point.
    assert all(
        (epoch(run) - epoch(reference)) % int(recurrence.total_seconds()) == 0 for run in runs
    )


def test_a_migration_date_on_a_grid_point_belongs_to_pinball():
    table = timetable(utc(2015, 1, 1, 6), timedelta(days=1), utc(2020, 1, 1, 6))
    assert first_runs(table, 1) == [utc(2020, 1, 2, 6)]


def test_a_dag_that_appears_late_still_runs_every_grid_point():
    table = timetable(utc(2015, 1, 1), timedelta(hours=7), MIGRATION)
    # catchup=False in the restriction and a DAG start_date one interval before the
    # first run (what build_dag sets): no grid point is skipped.
    earliest = utc(2020, 1, 1, 3) - timedelta(hours=7)
    assert first_runs(table, 2, catchup=False, earliest=earliest) == [
        utc(2020, 1, 1, 3),
        utc(2020, 1, 1, 10),
    ]


def test_no_run_before_the_first_even_from_an_older_run():
    table = timetable(utc(2015, 1, 1, 6), timedelta(days=1), MIGRATION)
    old = DataInterval(utc(2019, 6, 1, 6), utc(2019, 6, 2, 6))
    info = table.next_dagrun_info(
        last_automated_data_interval=old,
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert info.run_after == utc(2020, 1, 1, 6)


def test_the_next_run_follows_the_grid_after_a_changed_reference():
    # The last run came from an older grid (a reference at 05:00); the next run is the
    # next point of the current grid, not last + recurrence.
    table = PinballTimetable(utc(2015, 1, 1, 6), timedelta(days=1), utc(2020, 1, 1, 6))
    info = table.next_dagrun_info(
        last_automated_data_interval=DataInterval(utc(2020, 1, 2, 5), utc(2020, 1, 3, 5)),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert info.run_after == utc(2020, 1, 3, 6)


def test_latest_ends_the_schedule():
    table = timetable(utc(2015, 1, 1, 6), timedelta(days=1), MIGRATION)
    info = table.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=None, latest=utc(2020, 1, 1, 5), catchup=True),
    )
    assert info is None


def test_manual_runs_run_at_their_own_time():
    table = timetable(utc(2015, 1, 1, 6), timedelta(days=1), MIGRATION)
    interval = table.infer_manual_data_interval(run_after=utc(2020, 3, 4, 5, 6, 7))
    assert interval.start == interval.end == utc(2020, 3, 4, 5, 6, 7)


def test_serializes_through_airflow_with_the_plugin_registered(airflow_home):
    table = timetable(utc(2015, 1, 1), timedelta(hours=7), MIGRATION)
    encoded = encode_timetable(table)
    assert encoded["__type"] == "token_fetcher.airflow.timetable.PinballTimetable"
    decoded = decode_timetable(encoded)
    assert decoded == table
    assert decoded.serialize() == {
        "reference": epoch(utc(2015, 1, 1)),
        "recurrence": 7 * 3600,
        "first_run": epoch(utc(2020, 1, 1, 3)),
    }
    assert first_runs(decoded, 2) == [utc(2020, 1, 1, 3), utc(2020, 1, 1, 10)]


def test_rejects_a_non_positive_recurrence():
    with pytest.raises(ValueError):
        PinballTimetable(0, 0)
