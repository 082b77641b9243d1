"""Pinball's tokens for one run of a parsed workflow, without running user code.

The run time decides the instance id (its epoch milliseconds, where Pinball used the
wall clock), the token names, and ``end_date`` in the commands; nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from legacy_parser.model import WORKFLOW_START_INPUT, OverrunPolicy, Workflow
from legacy_parser.schedule import next_run_after, run_end_date


@dataclass(frozen=True, slots=True)
class JobToken:
    """Pinball's waiting job token for one run, typed instead of pickled."""

    name: str
    job: str
    payload_name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    emails: tuple[str, ...]
    max_attempts: int
    retry_delay_sec: int
    warn_timeout_sec: int | None
    abort_timeout_sec: int | None
    command: str
    cleanup_template: str | None
    is_condition: bool
    priority: float


@dataclass(frozen=True, slots=True)
class ScheduleToken:
    name: str
    next_run_epoch: int
    recurrence_seconds: int
    overrun_policy: OverrunPolicy
    workflow: str
    emails: tuple[str, ...]
    max_running_instances: int


@dataclass(frozen=True, slots=True)
class EventToken:
    """The start event that lets a top-level job run."""

    name: str
    job: str


@dataclass(frozen=True, slots=True)
class RunTokens:
    workflow: str
    run_epoch: int
    instance: str
    end_date: str
    jobs: tuple[JobToken, ...]
    schedule: ScheduleToken
    events: tuple[EventToken, ...]


def schedule_token_name(workflow: str) -> str:
    return f"/schedule/workflow/{workflow}"


def run_tokens(workflow: Workflow, run_epoch: int) -> RunTokens:
    end_date = run_end_date(run_epoch)
    instance = str(run_epoch * 1000)
    prefix = f"/workflow/{workflow.name}/{instance}"
    jobs = tuple(
        JobToken(
            name=f"{prefix}/job/waiting/{job.name}",
            job=job.name,
            payload_name=job.template_name,
            inputs=job.inputs,
            outputs=job.outputs,
            emails=job.emails,
            max_attempts=job.max_attempts,
            retry_delay_sec=job.retry_delay_sec,
            warn_timeout_sec=job.warn_timeout_sec,
            abort_timeout_sec=job.abort_timeout_sec,
            command=job.command.render(end_date),
            cleanup_template=job.cleanup_template,
            is_condition=job.is_condition,
            priority=job.token_priority,
        )
        for job in workflow.jobs
    )
    events = tuple(
        EventToken(
            name=f"{prefix}/input/{job.name}/{WORKFLOW_START_INPUT}/workflow_start_event",
            job=job.name,
        )
        for job in workflow.jobs
        if not job.parents
    )
    schedule = workflow.schedule
    schedule_token = ScheduleToken(
        name=schedule_token_name(workflow.name),
        next_run_epoch=next_run_after(schedule.reference_epoch, schedule.recurrence_seconds,
                                      run_epoch),
        recurrence_seconds=schedule.recurrence_seconds,
        overrun_policy=schedule.overrun_policy,
        workflow=workflow.name,
        emails=schedule.emails,
        max_running_instances=schedule.max_running_instances,
    )
    return RunTokens(workflow.name, run_epoch, instance, end_date, jobs, schedule_token, events)
