"""The reverse handover (Airflow -> Pinball) and the rollback date in metadata files:
exact examples, then properties checked against brute-force enumeration of the grid."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_fetcher.handovers import Rollback, handover, rollback_handover
from token_fetcher.migration import MetadataError, MigrationMetadata, parse_metadata

DAY = 86_400
WEEK = 7 * DAY
DAILY_REF = 1_420_070_401  # 2015-01-01 00:00:01 UTC
NEW_YEAR_2020 = 1_577_836_800


def doc(rollback: object, migration: str = "2020-01-01 00:00:00") -> str:
    return json.dumps(
        {"cluster_name": "c", "workflow_name": "w", "migration_date": migration,
         "rollback_date": rollback}
    )


# --- exact examples -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("migration", "rollback", "expected"),
    [
        # Migrated 2020-01-01 00:00 (Airflow from 01-01 00:00:01), rolled back 01-05 12:00:
        # Airflow's last run 01-05 00:00:01, Pinball resumes 01-06 00:00:01.
        (NEW_YEAR_2020, NEW_YEAR_2020 + 4 * DAY + DAY // 2,
         Rollback(NEW_YEAR_2020 + 4 * DAY + 1, NEW_YEAR_2020 + 5 * DAY + 1)),
        # Rolled back exactly on a run: that run is Airflow's.
        (NEW_YEAR_2020, NEW_YEAR_2020 + 2 * DAY + 1,
         Rollback(NEW_YEAR_2020 + 2 * DAY + 1, NEW_YEAR_2020 + 3 * DAY + 1)),
        # Rolled back one second before a run: that run is Pinball's again.
        (NEW_YEAR_2020, NEW_YEAR_2020 + 2 * DAY,
         Rollback(NEW_YEAR_2020 + DAY + 1, NEW_YEAR_2020 + 2 * DAY + 1)),
        # Rolled back before Airflow's first run: Airflow made none, Pinball loses none.
        (NEW_YEAR_2020, NEW_YEAR_2020, Rollback(None, NEW_YEAR_2020 + 1)),
        # Migrated and rolled back before the reference: nobody ran it yet.
        (DAILY_REF - 10 * DAY, DAILY_REF - 1, Rollback(None, DAILY_REF)),
    ],
)
def test_rollback_examples(migration: int, rollback: int, expected: Rollback) -> None:
    assert rollback_handover(DAILY_REF, DAY, migration, rollback) == expected


def test_a_rollback_before_the_migration_is_refused() -> None:
    with pytest.raises(ValueError, match="before the migration date"):
        rollback_handover(DAILY_REF, DAY, NEW_YEAR_2020, NEW_YEAR_2020 - 1)


# --- the rollback date in metadata files ----------------------------------------------


def test_rollback_date_round_trips_through_the_file_format() -> None:
    metadata = parse_metadata(doc("2020-01-05T17:30:00+05:30"))
    assert metadata.rollback_date == datetime(2020, 1, 5, 12, tzinfo=UTC)
    assert metadata.rollback_epoch == NEW_YEAR_2020 + 4 * DAY + DAY // 2
    assert '"rollback_date": "2020-01-05 12:00:00"' in metadata.to_json()
    assert parse_metadata(metadata.to_json()) == metadata


def test_without_a_rollback_the_file_is_unchanged() -> None:
    metadata = MigrationMetadata("c", "w", datetime(2020, 1, 1, tzinfo=UTC))
    assert metadata.rollback_epoch is None
    assert "rollback_date" not in metadata.to_json()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2019-12-31 23:59:59", "rollback_date 2019-12-31 23:59:59 is before migration_date "
                                "2020-01-01 00:00:00"),
        ("soon", "rollback_date 'soon' is not a date and time"),
        (5, "rollback_date must be a string, got a number (5)"),
        ("2020-02-30 00:00:00", "rollback_date '2020-02-30 00:00:00' is out of range"),
    ],
)
def test_bad_rollback_dates_are_named(value: object, problem: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(doc(value), "core/w.json")
    assert str(caught.value).startswith(f"core/w.json: {problem}")


def test_metadata_refuses_a_rollback_before_the_migration() -> None:
    with pytest.raises(ValueError, match="is before migration_date"):
        MigrationMetadata("c", "w", datetime(2020, 1, 2, tzinfo=UTC),
                          rollback_date=datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="rollback_date must be timezone-aware"):
        MigrationMetadata("c", "w", datetime(2020, 1, 2, tzinfo=UTC),
                          rollback_date=datetime(2020, 1, 3))


def test_a_fraction_of_a_second_never_puts_the_rollback_before_the_migration() -> None:
    # Both dates are floored to the second, so the same second is allowed.
    metadata = parse_metadata(doc("2020-01-01T00:00:00.9", migration="2020-01-01T00:00:00.1"))
    assert metadata.rollback_date == metadata.migration_date


# --- properties against brute-force enumeration ---------------------------------------


def enumerate_schedulers(
    reference: int, recurrence: int, migration: int, rollback: int, until: int
) -> dict[int, str]:
    """Step the grid k = 0, 1, 2, ... up to ``until`` and say who runs each point."""
    owners = {}
    k = 0
    while reference + k * recurrence <= until:
        point = reference + k * recurrence
        owners[point] = "airflow" if migration < point <= rollback else "pinball"
        k += 1
    return owners


recurrences = st.one_of(
    st.sampled_from([60, 300, 3_600, 25_200, 43_200, DAY, 3 * DAY, WEEK, 4 * WEEK]),
    st.integers(min_value=60, max_value=4 * WEEK),
)


@st.composite
def lifecycles(draw) -> tuple[int, int, int, int]:
    """(reference, recurrence, migration, rollback): dates before, at and between grid
    points, on and off the grid, rolled back at once or thousands of runs later."""
    reference = draw(st.integers(min_value=0, max_value=4_102_444_800))
    recurrence = draw(recurrences)

    def instant() -> int:
        kind = draw(st.sampled_from(["before", "on_grid", "between"]))
        if kind == "before":
            return reference - draw(st.integers(min_value=1, max_value=3 * recurrence))
        periods = draw(st.integers(min_value=0, max_value=3_000))
        offset = 0 if kind == "on_grid" else draw(st.integers(1, recurrence - 1))
        return reference + periods * recurrence + offset

    first, second = instant(), instant()
    if draw(st.booleans()):
        second = first  # rolled back at the migration date itself
    return reference, recurrence, min(first, second), max(first, second)


@settings(max_examples=400, deadline=None)
@given(lifecycles())
def test_rollback_matches_enumeration(case: tuple[int, int, int, int]) -> None:
    reference, recurrence, migration, rollback = case
    result = rollback_handover(reference, recurrence, migration, rollback)
    owners = enumerate_schedulers(reference, recurrence, migration, rollback,
                                  until=max(rollback, reference) + 2 * recurrence)
    airflow = [point for point, owner in owners.items() if owner == "airflow"]
    after = [point for point in owners if point > rollback]

    assert result.last_new_run == (airflow[-1] if airflow else None)
    assert result.first_legacy_run == after[0]
    # No gap and no overlap: Pinball's first run back is the grid point after Airflow's last.
    forward = handover(reference, recurrence, migration)
    if result.last_new_run is None:
        assert result.first_legacy_run == forward.first_new_run
    else:
        assert result.first_legacy_run - result.last_new_run == recurrence
        assert forward.first_new_run <= result.last_new_run <= rollback


@settings(max_examples=200, deadline=None)
@given(lifecycles(), st.integers(min_value=0, max_value=2_000))
def test_migrate_rollback_migrate_runs_every_grid_point_once(
    case: tuple[int, int, int, int], pause: int
) -> None:
    # The whole lifecycle through the two handovers: Pinball up to the migration, Airflow
    # up to the rollback, Pinball again up to a re-migration at or after the rollback,
    # Airflow from there. Every grid point in between runs exactly once.
    reference, recurrence, migration, rollback = case
    again = rollback + pause * recurrence // 7
    until = max(again, reference) + 3 * recurrence
    first = handover(reference, recurrence, migration)
    back = rollback_handover(reference, recurrence, migration, rollback)
    second = handover(reference, recurrence, again)

    runs: list[int] = []
    if first.last_legacy_run is not None:
        runs.extend(range(reference, first.last_legacy_run + 1, recurrence))  # Pinball
    if back.last_new_run is not None:
        runs.extend(range(first.first_new_run, back.last_new_run + 1, recurrence))  # Airflow
    last_pinball = second.last_legacy_run
    if last_pinball is not None and last_pinball >= back.first_legacy_run:
        runs.extend(range(back.first_legacy_run, last_pinball + 1, recurrence))  # Pinball
    runs.extend(range(second.first_new_run, until + 1, recurrence))  # Airflow again

    grid = list(range(reference, until + 1, recurrence))
    assert sorted(runs) == grid


def test_one_definition_of_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reverse handover is the forward one's grid function, not a copy of it.
    import token_fetcher.handovers as handovers

    calls = []
    real = handovers.handover

    def spy(*args: int):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(handovers, "handover", spy)
    handovers.rollback_handover(DAILY_REF, DAY, NEW_YEAR_2020, NEW_YEAR_2020 + DAY)
    assert calls == [(DAILY_REF, DAY, NEW_YEAR_2020), (DAILY_REF, DAY, NEW_YEAR_2020 + DAY)]


def test_rollback_dates_in_other_zones_match_datetime_enumeration() -> None:
    # A rollback date written with an offset is the same instant in UTC.
    metadata = parse_metadata(doc("2020-01-03T00:00:00-08:00"))
    assert metadata.rollback_date == datetime(2020, 1, 3, 8, tzinfo=UTC)
    result = rollback_handover(DAILY_REF, DAY, metadata.migration_epoch, metadata.rollback_epoch)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert result.last_new_run == (datetime(2020, 1, 3, 0, 0, 1, tzinfo=UTC) - epoch) // (
        timedelta(seconds=1))
