"""What a parse result may hold: names the API can carry, and sizes the server can afford.

The server applies these to every result it reads back from a worker, so nothing a
definition does (or a worker it tampered with) can put an unservable name or an
unbounded command into the catalog; the workflow that breaks a rule is BROKEN instead,
with an error naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from legacy_parser.control_characters import escape_control_characters
from legacy_parser.model import ErrorKind, Workflow, WorkflowError

MAX_NAME_LENGTH = 512


@dataclass(frozen=True, slots=True)
class ResultCaps:
    max_jobs_per_workflow: int = 10_000
    max_command_bytes: int = 1024**2


def name_problem(name: str) -> str:
    """Why ``name`` cannot be a workflow, job or cluster name on the wire; "" if it can."""
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; at most {MAX_NAME_LENGTH}"
    if _CONTROL.search(name):
        return f"{printable(name)!r} contains control characters"
    if name != name.strip():
        return f"{name!r} has leading or trailing whitespace"
    return ""


def printable(name: str, length: int = 100) -> str:
    """``name`` shortened, with control characters escaped: fit for an error or a terminal,
    and itself a valid name (a broken workflow is listed under it)."""
    shown = escape_control_characters(name[:length]) + ("..." if len(name) > length else "")
    return shown if shown == shown.strip() else repr(shown)


# C0 controls and DEL. A regular expression: every job name of every parse is checked,
# twice (in the worker and in the server), and a loop over characters in Python cost
# a noticeable part of a refresh at 10,000 workflows.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def caps_violation(workflow: Workflow, caps: ResultCaps) -> WorkflowError | None:
    """The first rule ``workflow`` breaks, as its error; None if it breaks none."""
    def error(kind: ErrorKind, message: str, job: str = "", file: str = "",
              line: int = 0) -> WorkflowError:
        return WorkflowError(kind, message, workflow.cluster, workflow_name, job,
                             file or workflow.file, line or workflow.line)

    problem = name_problem(workflow.name)
    workflow_name = printable(workflow.name) if problem else workflow.name
    if problem:
        return error(ErrorKind.INVALID_NAME, f"workflow name {problem}")
    if len(workflow.jobs) > caps.max_jobs_per_workflow:
        return error(ErrorKind.RESULT_TOO_LARGE,
                     f"{len(workflow.jobs)} jobs; at most {caps.max_jobs_per_workflow} "
                     "(sandbox.max_jobs_per_workflow)")
    for job in workflow.jobs:
        problem = name_problem(job.name)
        if problem:
            return error(ErrorKind.INVALID_NAME, f"job name {problem}",
                         printable(job.name), job.file, job.line)
        size = sum(len(segment.encode("utf-8", "surrogatepass"))
                   for segment in job.command.segments)
        if size > caps.max_command_bytes:
            return error(ErrorKind.RESULT_TOO_LARGE,
                         f"the command is {size} bytes; at most {caps.max_command_bytes} "
                         "(sandbox.max_command_kb)", job.name, job.file, job.line)
    return None
