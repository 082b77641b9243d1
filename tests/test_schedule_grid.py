"""Pinball's schedule grid: exact examples and properties checked by enumerating it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from legacy_parser.schedule import (
    is_on_grid,
    last_run_at_or_before,
    next_run_after,
    parse_recurrence,
    run_end_date,
)

DAY = 86_400
HOUR = 3_600
WEEK = 7 * DAY

# 2015-01-01 00:00:01 UTC: Pinball's usual "one second past midnight" reference.
DAILY_REF = 1_420_070_401
# 2015-01-01 00:00:00 UTC
MIDNIGHT_REF = 1_420_070_400


# --- exact examples -------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "expected_next", "expected_last"),
    [
        # 2015-02-01 00:00:00, one second before a run
        (1_422_748_800, 1_422_748_801, 1_422_662_401),
        # exactly on the 2015-02-01 00:00:01 run: next is the following day's
        (1_422_748_801, 1_422_835_201, 1_422_748_801),
        # 2015-02-01 12:34:56
        (1_422_794_096, 1_422_835_201, 1_422_748_801),
        # the reference itself
        (DAILY_REF, 1_420_156_801, DAILY_REF),
        # one second before the reference: the next run is the reference
        (1_420_070_400, DAILY_REF, None),
        # long before the reference (the epoch, and before it)
        (0, DAILY_REF, None),
        (-1, DAILY_REF, None),
    ],
)
def test_daily_grid(t: int, expected_next: int, expected_last: int | None) -> None:
    assert next_run_after(DAILY_REF, DAY, t) == expected_next
    assert last_run_at_or_before(DAILY_REF, DAY, t) == expected_last


@pytest.mark.parametrize(
    ("t", "expected_next", "expected_last"),
    [
        (1_420_451_999, 1_420_452_000, 1_420_448_400),  # 2015-01-05 09:59:59
        (1_420_452_000, 1_420_455_600, 1_420_452_000),  # 2015-01-05 10:00:00 exactly
        (1_420_452_001, 1_420_455_600, 1_420_452_000),
    ],
)
def test_hourly_grid(t: int, expected_next: int, expected_last: int) -> None:
    assert next_run_after(MIDNIGHT_REF, HOUR, t) == expected_next
    assert last_run_at_or_before(MIDNIGHT_REF, HOUR, t) == expected_last


def test_seven_hour_grid_does_not_align_with_days() -> None:
    # From 2015-01-01 00:00 every 7 h: ..., 01-05 02:00, 01-05 09:00, 01-05 16:00, ...
    seven_hours = 25_200
    t = 1_420_452_000  # 2015-01-05 10:00
    assert last_run_at_or_before(MIDNIGHT_REF, seven_hours, t) == 1_420_448_400
    assert next_run_after(MIDNIGHT_REF, seven_hours, t) == 1_420_473_600
    assert next_run_after(MIDNIGHT_REF, seven_hours, 1_420_448_400) == 1_420_473_600
    assert is_on_grid(MIDNIGHT_REF, seven_hours, 1_420_448_400)
    assert not is_on_grid(MIDNIGHT_REF, seven_hours, t)


def test_weekly_grid() -> None:
    sunday = 1_420_329_600  # 2015-01-04 00:00, a Sunday
    thursday = 1_420_675_200  # 2015-01-08 00:00
    assert next_run_after(sunday, WEEK, thursday) == 1_420_934_400  # 2015-01-11
    assert last_run_at_or_before(sunday, WEEK, thursday) == sunday
    assert next_run_after(sunday, WEEK, 1_420_934_400) == 1_421_539_200  # 2015-01-18
    assert is_on_grid(sunday, WEEK, 1_421_539_200)


def test_reference_before_the_epoch() -> None:
    # -10, -3, 4, 11, ...: epochs before 1970 are ordinary integers.
    assert next_run_after(-10, 7, -4) == -3
    assert next_run_after(-10, 7, -3) == 4
    assert next_run_after(-10, 7, -11) == -10
    assert last_run_at_or_before(-10, 7, -4) == -10
    assert last_run_at_or_before(-10, 7, -3) == -3


def test_huge_values_are_exact() -> None:
    # Any float on the way would lose the last digits.
    reference = 10**30
    t = 10**30 + 10**20 + 3
    assert next_run_after(reference, 7, t) == 1_000_000_000_100_000_000_000_000_000_005
    assert last_run_at_or_before(reference, 7, t) == 1_000_000_000_099_999_999_999_999_999_998
    assert is_on_grid(reference, 7, 1_000_000_000_100_000_000_000_000_000_005)
    assert not is_on_grid(reference, 7, 1_000_000_000_100_000_000_000_000_000_004)


def test_is_on_grid_examples() -> None:
    assert is_on_grid(DAILY_REF, DAY, DAILY_REF)
    assert is_on_grid(DAILY_REF, DAY, 1_422_835_201)
    assert not is_on_grid(DAILY_REF, DAY, 1_422_835_200)
    # k >= 0 only: the point one period before the reference is not a run.
    assert not is_on_grid(DAILY_REF, DAY, DAILY_REF - DAY)


@pytest.mark.parametrize("recurrence", [0, -1, -DAY])
@pytest.mark.parametrize("function", [next_run_after, last_run_at_or_before, is_on_grid])
def test_recurrence_must_be_positive(function, recurrence: int) -> None:
    with pytest.raises(ValueError, match=f"recurrence must be a positive .* got {recurrence}"):
        function(DAILY_REF, recurrence, DAILY_REF)


@pytest.mark.parametrize(
    "args", [(1.0, DAY, 5), (0, 86400.0, 5), (0, DAY, 5.5), (0, True, 5), ("0", DAY, 5)]
)
def test_non_integers_are_refused(args) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        next_run_after(*args)


# --- end_date ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_epoch", "expected"),
    [
        (1_422_835_201, "2015-02-01"),  # 2015-02-02 00:00:01
        (1_422_835_200, "2015-02-01"),  # 2015-02-02 00:00:00, midnight exactly
        (1_422_835_199, "2015-01-31"),  # 2015-02-01 23:59:59
        (1_422_794_096, "2015-01-31"),  # 2015-02-01 12:34:56
        (1_583_020_800, "2020-02-29"),  # 2020-03-01 00:00, leap year
        (86_400, "1970-01-01"),
        (0, "1969-12-31"),
        (-1, "1969-12-30"),  # 1969-12-31 23:59:59
        (-30_610_224_000, "0999-12-31"),  # 1000-01-01: the year is zero-padded
        (-62_135_510_400, "0001-01-01"),  # 0001-01-02, the earliest possible
        (253_402_300_800, "9999-12-31"),  # 10000-01-01 00:00, the latest possible
    ],
)
def test_run_end_date(run_epoch: int, expected: str) -> None:
    assert run_end_date(run_epoch) == expected


@pytest.mark.parametrize("run_epoch", [-62_135_510_401, 253_402_387_200, 10**30, -(10**30)])
def test_run_end_date_out_of_range(run_epoch: int) -> None:
    with pytest.raises(ValueError, match=f"run time {run_epoch} .* outside the years 1..9999"):
        run_end_date(run_epoch)


# --- parse_recurrence -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1w", 604_800),
        ("4w", 2_419_200),
        ("1d", 86_400),
        ("2d", 172_800),
        ("12H", 43_200),
        ("7H", 25_200),
        ("1H", 3_600),
        ("30M", 1_800),
        ("1M", 60),
        ("90M", 5_400),
        ("007d", 604_800),
        ("100000000000000000000d", 8_640_000_000_000_000_000_000_000),
    ],
)
def test_parse_recurrence(text: str, seconds: int) -> None:
    assert parse_recurrence(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "d",
        "w",
        "1",
        "12",
        "1D",  # units are case-sensitive
        "1h",
        "1m",  # not months, not minutes
        "1s",
        "1y",
        " 1d",
        "1d ",
        "1 d",
        "\t1d",
        "1d\n",
        "+1d",
        "1.5d",
        "1e3M",
        "1_000M",
        "1dd",
        "1d1H",
        "\u0661d",  # ARABIC-INDIC DIGIT ONE
        "--1d",
    ],
)
def test_parse_recurrence_rejects(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_recurrence(text)
    message = str(caught.value)
    assert f"invalid recurrence {text!r}" in message
    assert "followed by one of w, d, H, M (weeks, days, hours, minutes)" in message


@pytest.mark.parametrize("text", ["0d", "0M", "000w", "-1d", "-12H", "-0d"])
def test_parse_recurrence_rejects_zero_and_negative(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_recurrence(text)
    message = str(caught.value)
    assert f"invalid recurrence {text!r}: must be greater than zero" in message
    assert "w, d, H, M" in message


@pytest.mark.parametrize("value", [None, 86400, 1.0, b"1d", ["1d"]])
def test_parse_recurrence_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="not a string"):
        parse_recurrence(value)  # type: ignore[arg-type]


# --- properties against brute-force enumeration of the grid ----------------------


def enumerate_grid(reference: int, recurrence: int, t: int) -> tuple[int | None, int]:
    """Step k = 0, 1, 2, ...: (last point <= t or None, first point > t)."""
    last = None
    k = 0
    while True:
        point = reference + k * recurrence
        if point > t:
            return last, point
        last = point
        k += 1


references = st.integers(min_value=-(10**10), max_value=10**10)
recurrences = st.one_of(
    st.sampled_from([1, 60, 3_600, 25_200, DAY, WEEK, 4 * WEEK]),
    st.integers(min_value=1, max_value=4 * WEEK),
)


@st.composite
def grid_and_time(draw) -> tuple[int, int, int]:
    reference = draw(references)
    recurrence = draw(recurrences)
    kind = draw(st.sampled_from(["before", "on", "between"]))
    if kind == "before":
        t = reference - draw(st.integers(min_value=1, max_value=10**12))
    else:
        periods = draw(st.integers(min_value=0, max_value=4_999))
        offset = 0 if kind == "on" else draw(st.integers(min_value=0, max_value=recurrence - 1))
        t = reference + periods * recurrence + offset
    return reference, recurrence, t


@settings(max_examples=300, deadline=None)
@given(grid_and_time())
def test_grid_matches_enumeration(case: tuple[int, int, int]) -> None:
    reference, recurrence, t = case
    expected_last, expected_next = enumerate_grid(reference, recurrence, t)
    assert next_run_after(reference, recurrence, t) == expected_next
    assert last_run_at_or_before(reference, recurrence, t) == expected_last
    assert is_on_grid(reference, recurrence, t) == (expected_last == t)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=-2_000, max_value=2_000),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=-2_100, max_value=2_100),
)
def test_is_on_grid_matches_enumeration_near_the_grid(
    reference: int, recurrence: int, t: int
) -> None:
    # Small values, so that every t around the grid is tried, off-grid ones included.
    points = []
    k = 0
    while reference + k * recurrence <= t:
        points.append(reference + k * recurrence)
        k += 1
    assert is_on_grid(reference, recurrence, t) == (t in points)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-62_135_510_400, max_value=253_402_300_799))
def test_run_end_date_matches_datetime(run_epoch: int) -> None:
    run_time = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=run_epoch)
    assert run_end_date(run_epoch) == (run_time - timedelta(days=1)).date().isoformat()


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["w", "d", "H", "M"]))
def test_parse_recurrence_matches_timedelta(count: int, unit: str) -> None:
    unit_delta = {
        "w": timedelta(weeks=1),
        "d": timedelta(days=1),
        "H": timedelta(hours=1),
        "M": timedelta(minutes=1),
    }[unit]
    assert parse_recurrence(f"{count}{unit}") == count * unit_delta // timedelta(seconds=1)
