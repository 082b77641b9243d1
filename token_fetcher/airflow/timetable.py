"""PinballTimetable: runs exactly on Pinball's grid, from the handover on.

Pinball runs a workflow at ``reference + k * recurrence`` (UTC seconds, any recurrence:
7 hours is as good as a day). After a migration the first Airflow run is the first grid
point strictly after the migration date (``first_run``, the handover's first_new_run);
every grid point from there on gets a run, whenever the DAG first appears (catch-up is
part of the contract: a DAG parsed late still runs every grid point since first_run).
After a rollback (``stop_after``, the rollback date) there is no run after it: Pinball
runs the grid from there.

A run for grid point ``T`` has the data interval ``[T - recurrence, T)`` and is created
at ``run_after = T``: the run's scheduled time, the one Pinball would have run at, is the
data interval's *end* (``data_interval_end`` in the task context). For a daily grid its
logical date (the interval's start) is the day before, so ``ds`` equals Pinball's
``end_date``; for other grids it does not, which is why the operators compute end_date
from data_interval_end.

Registered through ``token_fetcher.airflow.plugin.TokenFetcherPlugin`` so the scheduler
can deserialize it.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from typing import Any

from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable
from pendulum import DateTime, from_timestamp

from legacy_parser.schedule import next_run_after

__all__ = ["PinballTimetable"]


def _epoch(value: datetime) -> int:
    """Whole UTC epoch seconds, rounded down (a fraction never reaches the next point);
    naive datetimes are UTC. Works for pendulum DateTimes too (whose differences are
    pendulum Intervals, which do not divide by a timedelta)."""
    return calendar.timegm(value.utctimetuple())


def _datetime(seconds: int) -> DateTime:
    return from_timestamp(seconds, tz="UTC")


def _every(seconds: int) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class PinballTimetable(Timetable):
    """``reference + k * recurrence`` for every grid point at or after ``first_run``.

    ``reference`` and ``first_run`` are UTC epoch seconds (or aware datetimes);
    ``recurrence`` is seconds (or a timedelta) and must be positive. ``first_run`` is
    moved up to the grid when it is not on it, and never before the reference.
    ``stop_after`` (epoch seconds or an aware datetime, a rollback date): no run at a grid
    point after it.
    """

    periodic = True
    can_be_scheduled = True
    run_ordering = ("data_interval_end", "logical_date")

    def __init__(
        self,
        reference: int | datetime,
        recurrence: int | timedelta,
        first_run: int | datetime | None = None,
        stop_after: int | datetime | None = None,
    ) -> None:
        self.reference = _epoch(reference) if isinstance(reference, datetime) else int(reference)
        if isinstance(recurrence, timedelta):
            self.recurrence = int(recurrence.total_seconds())
            if timedelta(seconds=self.recurrence) != recurrence:
                raise ValueError(f"recurrence must be whole seconds, got {recurrence}")
        else:
            self.recurrence = int(recurrence)
        if self.recurrence <= 0:
            raise ValueError(f"recurrence must be positive, got {self.recurrence} s")
        if first_run is None:
            first = self.reference
        else:
            first = _epoch(first_run) if isinstance(first_run, datetime) else int(first_run)
        # The smallest grid point at or after first_run.
        self.first_run = next_run_after(self.reference, self.recurrence, first - 1)
        if isinstance(stop_after, datetime):
            stop_after = _epoch(stop_after)
        self.stop_after = None if stop_after is None else int(stop_after)
        self.description = (
            f"Pinball grid every {_every(self.recurrence)} from "
            f"{_datetime(self.reference).isoformat()}, "
            f"first run {self.first_run_datetime.isoformat()}"
        )
        if self.stop_after is not None:
            self.description += f", rolled back at {_datetime(self.stop_after).isoformat()}"

    # --- identity and serialization ---

    @property
    def first_run_datetime(self) -> DateTime:
        return _datetime(self.first_run)

    @property
    def summary(self) -> str:
        return f"pinball every {_every(self.recurrence)}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PinballTimetable):
            return NotImplemented
        return self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash((self.reference, self.recurrence, self.first_run, self.stop_after))

    def __repr__(self) -> str:
        return (
            f"PinballTimetable(reference={self.reference}, recurrence={self.recurrence}, "
            f"first_run={self.first_run}, stop_after={self.stop_after})"
        )

    def serialize(self) -> dict[str, Any]:
        data = {"reference": self.reference, "recurrence": self.recurrence,
                "first_run": self.first_run}
        # Only when set, so DAGs serialized before rollbacks existed compare equal.
        if self.stop_after is not None:
            data["stop_after"] = self.stop_after
        return data

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> PinballTimetable:
        return cls(int(data["reference"]), int(data["recurrence"]), int(data["first_run"]),
                   data.get("stop_after"))

    def validate(self) -> None:
        if self.recurrence <= 0:  # pragma: no cover - the constructor refuses it
            from airflow.exceptions import AirflowTimetableInvalid

            raise AirflowTimetableInvalid("recurrence must be positive")

    # --- the grid ---

    def grid_point_at_or_after(self, seconds: int) -> int:
        """The first run at or after ``seconds`` (never before first_run)."""
        return max(self.first_run, next_run_after(self.reference, self.recurrence, seconds - 1))

    def runs_between(self, start: datetime, end: datetime) -> list[DateTime]:
        """Every run time in ``[start, end]``; a helper for checks and docs."""
        point = self.grid_point_at_or_after(_epoch(start))
        last = _epoch(end) if self.stop_after is None else min(_epoch(end), self.stop_after)
        times = []
        while point <= last:
            times.append(_datetime(point))
            point += self.recurrence
        return times

    def _info(self, point: int) -> DagRunInfo:
        return DagRunInfo.interval(start=_datetime(point - self.recurrence), end=_datetime(point))

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            # The grid point after the last scheduled run (its interval ends at its run
            # time); next_run_after also lands on the grid when the last run came from
            # an older grid (a changed reference or recurrence).
            point = next_run_after(
                self.reference, self.recurrence, _epoch(last_automated_data_interval.end)
            )
            point = max(point, self.first_run)
        else:
            # Catch-up from first_run whatever restriction.catchup says: skipping grid
            # points after the handover would lose runs nobody else will do.
            point = self.first_run
        if restriction.earliest is not None:
            point = max(point, self.grid_point_at_or_after(_epoch(restriction.earliest)))
        if restriction.latest is not None and point > _epoch(restriction.latest):
            return None
        if self.stop_after is not None and point > self.stop_after:
            return None
        return self._info(point)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """A manual run is a run at ``run_after`` itself (whole seconds), the way
        Pinball's "run now" renders end_date from the time it was started."""
        seconds = _epoch(run_after)
        return DataInterval.exact(_datetime(seconds))
