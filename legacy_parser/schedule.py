"""Pinball's schedule grid in exact integer arithmetic.

A schedule runs at ``reference + k * recurrence`` for k >= 0, all in UTC epoch
seconds. Pinball never runs before its reference time. Everything here is integer
floor division, so results stay exact for arbitrarily large values.
"""

from __future__ import annotations

import re
from datetime import date

__all__ = [
    "SECONDS_PER_UNIT",
    "is_on_grid",
    "last_run_at_or_before",
    "next_run_after",
    "parse_recurrence",
    "run_end_date",
]

SECONDS_PER_DAY = 86_400

# The units Pinball's JSON format allows: weeks, days, hours, minutes. The unit is
# case-sensitive ("M" is minutes; there is no month unit).
SECONDS_PER_UNIT: dict[str, int] = {
    "w": 7 * SECONDS_PER_DAY,
    "d": SECONDS_PER_DAY,
    "H": 3_600,
    "M": 60,
}

# [0-9] rather than \d: \d also matches non-ASCII digits such as "٣", which int()
# would happily convert. fullmatch() so that a trailing newline is not accepted.
_RECURRENCE_RE = re.compile(r"([0-9]+)([wdHM])")

_ACCEPTED = (
    "expected a positive integer followed by one of w, d, H, M "
    "(weeks, days, hours, minutes), e.g. '1d', '12H', '30M'"
)

# date.toordinal() of 1970-01-01, so a day count since the epoch maps to a date
# without going through floats or time.gmtime().
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _check_int(name: str, value: object) -> None:
    # bool is an int subclass; True as a recurrence is a bug, not "1 second".
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (epoch seconds), got {type(value).__name__}")


def _check_grid(reference: int, recurrence: int) -> None:
    _check_int("reference", reference)
    _check_int("recurrence", recurrence)
    if recurrence <= 0:
        raise ValueError(f"recurrence must be a positive number of seconds, got {recurrence}")


def next_run_after(reference: int, recurrence: int, t: int) -> int:
    """Return the smallest grid point strictly greater than ``t``.

    Before the reference time the next run is the reference itself (k >= 0).
    """
    _check_grid(reference, recurrence)
    _check_int("t", t)
    if t < reference:
        return reference
    # Floor division gives the index of the last point at or before t; the next
    # one is strictly after t even when t sits exactly on the grid.
    return reference + ((t - reference) // recurrence + 1) * recurrence


def last_run_at_or_before(reference: int, recurrence: int, t: int) -> int | None:
    """Return the greatest grid point <= ``t``, or None when ``t`` < reference."""
    _check_grid(reference, recurrence)
    _check_int("t", t)
    if t < reference:
        return None
    return reference + ((t - reference) // recurrence) * recurrence


def is_on_grid(reference: int, recurrence: int, t: int) -> bool:
    """Return True when ``t`` is ``reference + k * recurrence`` for some k >= 0."""
    _check_grid(reference, recurrence)
    _check_int("t", t)
    return t >= reference and (t - reference) % recurrence == 0


def run_end_date(run_epoch: int) -> str:
    """Return the job runner's ``end_date`` for a run at ``run_epoch``: ``YYYY-MM-DD``.

    It is the UTC date of the run time minus one day, so a run at 2015-02-02 00:00:01
    (or at 00:00:00 exactly) gives ``2015-02-01``. It depends on the run time only,
    never on the wall clock. Raises ValueError outside the years 1..9999.
    """
    _check_int("run_epoch", run_epoch)
    # Floor division rounds towards minus infinity, which is what makes runs before
    # 1970 land on the right day too.
    days = (run_epoch - SECONDS_PER_DAY) // SECONDS_PER_DAY
    try:
        day = date.fromordinal(_EPOCH_ORDINAL + days)
    except (ValueError, OverflowError):
        raise ValueError(
            f"run time {run_epoch} gives an end_date outside the years 1..9999"
        ) from None
    # isoformat() pads the year to four digits, unlike strftime("%Y") on glibc.
    return day.isoformat()


def parse_recurrence(text: str) -> int:
    """Convert a JSON-format recurrence (``1w``, ``1d``, ``12H``, ``30M``) to seconds.

    Stricter than Pinball: no signs, spaces, zero or non-ASCII digits. Raises
    ValueError naming the bad text and what is accepted, for non-strings too (the
    value usually comes straight from a JSON file).
    """
    if not isinstance(text, str):
        raise ValueError(
            f"invalid recurrence {text!r} (a {type(text).__name__}, not a string): {_ACCEPTED}"
        )
    match = _RECURRENCE_RE.fullmatch(text.removeprefix("-"))
    if match is None:
        raise ValueError(f"invalid recurrence {text!r}: {_ACCEPTED}")
    count = int(match.group(1))
    if count == 0 or text.startswith("-"):
        raise ValueError(f"invalid recurrence {text!r}: must be greater than zero; {_ACCEPTED}")
    return count * SECONDS_PER_UNIT[match.group(2)]
