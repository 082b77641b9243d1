"""Running a template for one job and reading the payload it returns into a typed Job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from legacy_parser.commands import command_template
from legacy_parser.errors import DefinitionError
from legacy_parser.model import DEFAULT_JOB_PRIORITY, ErrorKind, Job, JobKind


def template_bases() -> tuple[type, type]:
    # Imported late: the shims exist only inside sandbox workers.
    from pinball_ext.job_templates import ConditionTemplateBase, JobTemplateBase

    return JobTemplateBase, ConditionTemplateBase


def qualified_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def check_template(template: Any, job: str, file: str, line: int) -> JobKind:
    """The Python format's rule (Pinball's PyWorkflowParser checks the class): the job's
    kind, or a wrong_template_type error."""
    job_base, condition_base = template_bases()
    if isinstance(template, job_base):
        return JobKind.JOB
    if isinstance(template, condition_base):
        return JobKind.CONDITION
    raise DefinitionError(
        ErrorKind.WRONG_TEMPLATE_TYPE,
        f"template of job {job!r} is {qualified_name(template)}, not a JobTemplateBase or "
        "ConditionTemplateBase",
        job, file, line,
    )


def check_duck_template(template: Any, job: str, file: str, line: int,
                        want_condition: bool) -> JobKind:
    """The JSON format's rule (Pinball's repository parser never checks a class): any object
    with the method its job needs is a template; one without it is wrong_template_type.
    Also asked of a class before it is built: the format builds a condition's template with
    ``retry_delay_sec``, which a job template class rejects with a TypeError that would
    hide what is wrong."""
    method = "get_pinball_condition" if want_condition else "get_pinball_job"
    if callable(getattr(template, method, None)):
        return JobKind.CONDITION if want_condition else JobKind.JOB
    described = (template if isinstance(template, type) else type(template))
    raise DefinitionError(
        ErrorKind.WRONG_TEMPLATE_TYPE,
        f"template of job {job!r} is {described.__module__}.{described.__qualname__}, which "
        f"has no {method} method (the job is {'' if want_condition else 'not '}a condition)",
        job, file, line,
    )


def template_priority(template: Any) -> float:
    """Pinball's rule: the template's priority, or 1.0 when unset or zero."""
    priority = getattr(template, "priority", None)
    if not priority:
        return DEFAULT_JOB_PRIORITY
    if isinstance(priority, bool) or not isinstance(priority, int | float):
        raise TypeError(f"priority must be a number, got {priority!r}")
    return float(priority)


def _optional_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    return _int(value, field)


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise TypeError(f"{field} must be a whole number, got {value!r}")
    return int(value)


def _strings(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{field} must be a list of strings, got {value!r}")
    if not all(isinstance(item, str) for item in value):
        raise TypeError(f"{field} must be a list of strings, got {value!r}")
    return tuple(value)


def build_job(*, name: str, kind: JobKind, template: Any, payload: Any,
              parents: Sequence[str], children: Sequence[str], priority: float, score: float,
              token_priority: float, file: str, line: int) -> Job:
    """A typed Job from the template and the ShellJob / ShellConditionJob it returned."""
    from pinball.workflow.job import Job as PayloadJob

    if not isinstance(payload, PayloadJob):
        raise DefinitionError(
            ErrorKind.TEMPLATE_ERROR,
            f"template {qualified_name(template)} returned {type(payload).__name__}, "
            "not a pinball.workflow.job.ShellJob",
            name, file, line,
        )
    command = getattr(payload, "command", None)
    if command is not None and not isinstance(command, str):
        raise TypeError(f"command must be a string, got {command!r}")
    cleanup = getattr(payload, "cleanup_template", None)
    if cleanup is not None and not isinstance(cleanup, str):
        raise TypeError(f"cleanup_template must be a string, got {cleanup!r}")
    executor_config = getattr(template, "_executor_config", None) or {}
    if not isinstance(executor_config, dict):
        raise TypeError(f"executor_config must be a dict, got {executor_config!r}")
    return Job(
        name=name,
        kind=kind,
        template=qualified_name(template),
        template_name=str(payload.name),
        parents=tuple(parents),
        children=tuple(children),
        inputs=_strings(payload.inputs, "inputs"),
        outputs=_strings(payload.outputs, "outputs"),
        command=command_template(command),
        priority=priority,
        score=score,
        token_priority=token_priority,
        max_attempts=_int(payload.max_attempts, "max_attempts"),
        retry_delay_sec=_int(payload.retry_delay_sec, "retry_delay_sec"),
        warn_timeout_sec=_optional_int(payload.warn_timeout_sec, "warn_timeout_sec"),
        abort_timeout_sec=_optional_int(payload.abort_timeout_sec, "abort_timeout_sec"),
        emails=_strings(payload.emails, "emails"),
        executor=str(getattr(template, "_executor", None) or ""),
        executor_config=tuple((str(k), str(v)) for k, v in executor_config.items()),
        write_lock=str(getattr(template, "write_lock", None) or ""),
        cleanup_template=cleanup,
        file=file,
        line=line,
    )
