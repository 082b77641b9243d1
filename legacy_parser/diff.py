"""What changed between two parses of a legacy repo: the canary check before deploying it."""

from __future__ import annotations

from dataclasses import dataclass

from legacy_parser.model import Job, ParseResult, Workflow

_JOB_ASPECTS = {
    "command": lambda job: (job.command.segments, job.cleanup_template),
    "graph": lambda job: (job.parents, job.children, job.inputs, job.outputs),
    "kind": lambda job: (job.kind, job.template, job.template_name),
    "priority": lambda job: (job.priority, job.score, job.token_priority),
    "retries": lambda job: (job.max_attempts, job.retry_delay_sec),
    "timeouts": lambda job: (job.warn_timeout_sec, job.abort_timeout_sec),
    "emails": lambda job: job.emails,
    "executor": lambda job: (job.executor, job.executor_config, job.write_lock),
}


@dataclass(frozen=True)
class Difference:
    """One line of a diff: ``change`` is added, removed, changed, broken or fixed."""

    change: str
    workflow: str
    job: str = ""
    aspects: tuple[str, ...] = ()
    detail: str = ""

    def __str__(self) -> str:
        subject = f"{self.workflow}/{self.job}" if self.job else self.workflow
        text = f"{self.change:8} {subject}"
        if self.aspects:
            text += f" ({', '.join(self.aspects)})"
        return text + (f": {self.detail}" if self.detail else "")


def _job_aspects(old: Job, new: Job) -> tuple[str, ...]:
    return tuple(name for name, read in _JOB_ASPECTS.items() if read(old) != read(new))


def _workflow_differences(old: Workflow, new: Workflow) -> list[Difference]:
    found = []
    if old.schedule != new.schedule:
        found.append(Difference("changed", new.name, aspects=("schedule",)))
    if old.notify_emails != new.notify_emails:
        found.append(Difference("changed", new.name, aspects=("notify_emails",)))
    old_jobs = {job.name: job for job in old.jobs}
    new_jobs = {job.name: job for job in new.jobs}
    for name in sorted(old_jobs.keys() | new_jobs.keys()):
        if name not in new_jobs:
            found.append(Difference("removed", new.name, name))
        elif name not in old_jobs:
            found.append(Difference("added", new.name, name))
        else:
            aspects = _job_aspects(old_jobs[name], new_jobs[name])
            if aspects:
                found.append(Difference("changed", new.name, name, aspects))
    return found


def diff_parses(old: ParseResult, new: ParseResult) -> list[Difference]:
    old_workflows = {workflow.name: workflow for workflow in old.workflows}
    new_workflows = {workflow.name: workflow for workflow in new.workflows}
    new_errors = {error.workflow: error for error in new.errors if error.workflow}
    old_errors = {error.workflow: error for error in old.errors if error.workflow}
    found = []
    for name in sorted(old_workflows.keys() | new_workflows.keys() | new_errors.keys()
                       | old_errors.keys()):
        if name in new_errors:
            found.append(Difference("broken", name, detail=str(new_errors[name])))
        elif name not in new_workflows:
            if name in old_workflows:
                found.append(Difference("removed", name))
        elif name in old_errors:
            found.append(Difference("fixed", name))
        elif name not in old_workflows:
            found.append(Difference("added", name))
        else:
            found.extend(_workflow_differences(old_workflows[name], new_workflows[name]))
    found.extend(Difference("broken", "(cluster)", detail=str(error))
                 for error in new.errors if not error.workflow)
    return found
