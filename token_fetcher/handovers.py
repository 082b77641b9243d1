"""The handovers between Pinball and Airflow, on a workflow's schedule grid.

Grid points at or before the migration date belong to Pinball; the first grid point
strictly after it is Airflow's first run (docs/pinball-compatibility.md, "Schedules and
the handover"). After a rollback, Airflow keeps the grid points up to and including the
last one at or before the rollback date, and Pinball resumes from the next one
(rollback_handover()). Both splits are the one grid function, handover().
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from legacy_parser.schedule import last_run_at_or_before, next_run_after

if TYPE_CHECKING:
    from token_fetcher._proto import token_fetcher_pb2 as pb

__all__ = ["Handover", "Rollback", "handover", "rollback_handover", "schedule_handover"]


@dataclass(frozen=True)
class Handover:
    """Where Pinball stops and Airflow starts, in UTC epoch seconds.

    ``last_legacy_run`` is None when the migration date is before the reference, so
    Pinball never ran the workflow.
    """

    last_legacy_run: int | None
    first_new_run: int


def handover(reference: int, recurrence: int, migration_epoch: int) -> Handover:
    """Split the grid ``reference + k * recurrence`` (k >= 0) at ``migration_epoch``.

    Grid points at or before the migration date are Pinball's; the first one strictly
    after it is Airflow's first run, and every later grid point is Airflow's too.
    """
    return Handover(
        last_legacy_run=last_run_at_or_before(reference, recurrence, migration_epoch),
        first_new_run=next_run_after(reference, recurrence, migration_epoch),
    )


def schedule_handover(
    message: pb.WorkflowSpec | pb.WorkflowSummary, migration_epoch: int
) -> Handover | None:
    """The handover on the grid of a spec's or a summary's ``schedule``; None when it has
    no usable one (no schedule, or a recurrence that is not positive)."""
    schedule = message.schedule
    if not message.HasField("schedule") or schedule.recurrence_seconds <= 0:
        return None
    return handover(schedule.reference_time.seconds, schedule.recurrence_seconds, migration_epoch)


@dataclass(frozen=True)
class Rollback:
    """Where Airflow stops and Pinball resumes after a rollback, in UTC epoch seconds.

    ``last_new_run`` is None when Airflow made no run: rolled back before the first grid
    point after the migration date.
    """

    last_new_run: int | None
    first_legacy_run: int


def rollback_handover(
    reference: int, recurrence: int, migration_epoch: int, rollback_epoch: int
) -> Rollback:
    """The reverse handover: Airflow keeps the grid points after the migration date up
    to and including the last one at or before ``rollback_epoch``; Pinball resumes at the
    first one strictly after it. The same split of the grid as handover()."""
    if rollback_epoch < migration_epoch:
        raise ValueError(
            f"the rollback date ({rollback_epoch}) is before the migration date "
            f"({migration_epoch})"
        )
    forward = handover(reference, recurrence, migration_epoch)
    back = handover(reference, recurrence, rollback_epoch)
    last = back.last_legacy_run
    if last is not None and last < forward.first_new_run:
        last = None
    return Rollback(last_new_run=last, first_legacy_run=back.first_new_run)
