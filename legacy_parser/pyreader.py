"""Python definitions, read with PyWorkflowParser's semantics (docs/pinball-compatibility.md,
"The Python format (PyWorkflowParser)").

Runs inside a sandbox worker: it imports user code.
"""

from __future__ import annotations

import calendar
import datetime
import importlib
from collections.abc import Callable
from typing import Any

from legacy_parser import graph
from legacy_parser.errors import DefinitionError, Locator
from legacy_parser.model import (
    DEFAULT_MAX_RUNNING_INSTANCES,
    FINAL_JOB_NAME,
    WORKFLOW_START_INPUT,
    ErrorKind,
    JobKind,
    OverrunPolicy,
    Schedule,
    Workflow,
    WorkflowError,
)
from legacy_parser.templates import build_job, check_template, template_priority


def read_python_workflows(cluster: str, params: dict[str, Any], locator: Locator,
                          emit: Callable[[Workflow], None]) -> list[WorkflowError]:
    """Every workflow of the cluster, each given to ``emit`` as soon as it is built; the
    errors."""
    dotted = params.get("workflows_config")
    if not isinstance(dotted, str) or "." not in dotted:
        return [WorkflowError(
            ErrorKind.INVALID_CONFIG,
            f"parser param workflows_config must be a dotted path module.NAME, got {dotted!r}",
            cluster,
        )]
    module_name, _, attribute = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except BaseException as error:  # noqa: BLE001 - definition code may raise anything
        if isinstance(error, KeyboardInterrupt):
            raise
        return [locator.error_from_exception(error, cluster, at_import=True)]
    module_file = locator.relative(getattr(module, "__file__", "") or "")
    if not hasattr(module, attribute):
        return [WorkflowError(
            ErrorKind.MISSING_WORKFLOWS,
            f"module {module_name!r} has no attribute {attribute!r} (workflows_config {dotted})",
            cluster, file=module_file,
        )]
    workflows_config = getattr(module, attribute)
    if not isinstance(workflows_config, dict):
        return [WorkflowError(
            ErrorKind.NOT_A_DICT,
            f"{dotted} is a {type(workflows_config).__name__}, not a dict of "
            "{workflow_name: WorkflowConfig}",
            cluster, file=module_file,
        )]

    errors: list[WorkflowError] = []
    for name, config in workflows_config.items():
        workflow_name = name if isinstance(name, str) else repr(name)
        try:
            if not isinstance(name, str) or not name:
                raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                                      f"workflow name {name!r} is not a non-empty string",
                                      file=module_file)
            workflow = _read_workflow(cluster, name, config, params, locator)
        except Exception as error:  # noqa: BLE001 - one bad workflow must not hide the others
            errors.append(locator.error_from_exception(error, cluster, workflow_name))
        else:
            emit(workflow)
    return errors


def _site(obj: Any, locator: Locator) -> tuple[str, int]:
    file, line = getattr(obj, "definition_site", ("", 0))
    return locator.relative(file), line


def _read_workflow(cluster: str, name: str, config: Any, params: dict[str, Any],
                   locator: Locator) -> Workflow:
    from pinball_ext.workflow.config import JobConfig, WorkflowConfig

    file, line = _site(config, locator)
    if not isinstance(config, WorkflowConfig):
        raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                              f"workflow {name!r} is a {type(config).__name__}, "
                              "not a WorkflowConfig", file=file, line=line)
    schedule = _read_schedule(config, locator)
    jobs_config = config.jobs
    if not isinstance(jobs_config, dict):
        raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                              f"jobs must be a dict of {{job_name: JobConfig}}, "
                              f"got {type(jobs_config).__name__}", file=file, line=line)

    templates: dict[str, Any] = {}
    parents: dict[str, list[str]] = {}
    sites: dict[str, tuple[str, int]] = {}
    for job_name, job_config in jobs_config.items():
        job_file, job_line = _site(job_config, locator)
        if not isinstance(job_name, str) or not job_name:
            raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                                  f"job name {job_name!r} is not a non-empty string",
                                  file=job_file or file, line=job_line or line)
        if job_name == FINAL_JOB_NAME:
            raise DefinitionError(ErrorKind.RESERVED_JOB_NAME,
                                  f"a job may not be named {FINAL_JOB_NAME!r}: Pinball adds "
                                  "the final job itself", job_name, job_file, job_line)
        if not isinstance(job_config, JobConfig):
            raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                                  f"job {job_name!r} is a {type(job_config).__name__}, "
                                  "not a JobConfig", job_name, file, line)
        dependency = job_config.dependency or []
        if isinstance(dependency, str) or not all(isinstance(p, str) for p in dependency):
            raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                                  f"dependency of job {job_name!r} must be a list of job "
                                  f"names, got {dependency!r}", job_name, job_file, job_line)
        templates[job_name] = job_config.template
        parents[job_name] = list(dependency)
        sites[job_name] = (job_file, job_line)

    try:
        children = graph.children_of(parents)
    except graph.GraphError as error:
        raise DefinitionError(ErrorKind(error.kind), str(error), error.job,
                              *sites[error.job]) from None
    final_config = config.final_job_config
    if not isinstance(final_config, JobConfig):
        raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                              f"final_job_config is a {type(final_config).__name__}, "
                              "not a JobConfig", FINAL_JOB_NAME, file, line)
    # The final job depends on every leaf found before it is added.
    final_parents = graph.leaves(children)
    for leaf in final_parents:
        children[leaf].append(FINAL_JOB_NAME)
    children[FINAL_JOB_NAME] = []
    parents[FINAL_JOB_NAME] = final_parents
    templates[FINAL_JOB_NAME] = final_config.template
    sites[FINAL_JOB_NAME] = _site(final_config, locator)

    cycle = graph.find_cycle(children)
    if cycle:
        raise DefinitionError(ErrorKind.CYCLE,
                              "dependency cycle: " + " -> ".join(cycle), cycle[0],
                              *sites[cycle[0]])

    kinds = {job: check_template(templates[job], job, *sites[job]) for job in templates}
    priorities = {job: template_priority(templates[job]) for job in templates}
    scores = graph.scores(children, priorities)

    jobs = []
    for job_name in sorted(templates):
        template = templates[job_name]
        inputs = parents[job_name] or [WORKFLOW_START_INPUT]
        outputs = children[job_name]
        try:
            if kinds[job_name] is JobKind.JOB:
                # Pinball gives the final job no parser params.
                job_params = None if job_name == FINAL_JOB_NAME else params
                payload = template.get_pinball_job(list(inputs), list(outputs), job_params)
                token_priority = scores[job_name]
            else:
                payload = template.get_pinball_condition(list(outputs))
                token_priority = 0.0
            jobs.append(build_job(
                name=job_name, kind=kinds[job_name], template=template, payload=payload,
                parents=parents[job_name], children=outputs, priority=priorities[job_name],
                score=scores[job_name], token_priority=token_priority,
                file=sites[job_name][0], line=sites[job_name][1],
            ))
        except DefinitionError:
            raise
        except Exception as error:  # noqa: BLE001 - located and reported as this job's error
            located = locator.error_from_exception(error, "", name, job_name)
            raise DefinitionError(located.kind, located.message, job_name,
                                  located.file or sites[job_name][0],
                                  located.line or sites[job_name][1]) from None

    notify = config.notify_emails
    if notify is not None and not isinstance(notify, str):
        raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                              f"notify_emails must be a comma-separated string, got {notify!r}",
                              file=file, line=line)
    return Workflow(
        cluster=cluster,
        name=name,
        jobs=tuple(jobs),
        final_job=FINAL_JOB_NAME,
        schedule=schedule,
        notify_emails=tuple(notify.split(",")) if notify else (),
        file=file,
        line=line,
    )


def _read_schedule(config: Any, locator: Locator) -> Schedule:
    from pinball_ext.workflow.config import ScheduleConfig

    schedule = config.schedule
    file, line = _site(schedule, locator)
    if not isinstance(schedule, ScheduleConfig):
        file, line = _site(config, locator)
        raise DefinitionError(ErrorKind.INVALID_SCHEDULE,
                              f"schedule is a {type(schedule).__name__}, not a ScheduleConfig",
                              file=file, line=line)
    recurrence = schedule.recurrence
    if not isinstance(recurrence, datetime.timedelta):
        raise DefinitionError(ErrorKind.INVALID_RECURRENCE,
                              f"recurrence must be a datetime.timedelta, got {recurrence!r}",
                              file=file, line=line)
    seconds = recurrence.total_seconds()
    if seconds <= 0 or seconds != int(seconds):
        raise DefinitionError(ErrorKind.INVALID_RECURRENCE,
                              f"recurrence must be a positive whole number of seconds, got "
                              f"{recurrence!r} ({seconds:g} s)", file=file, line=line)
    reference = schedule.reference_timestamp
    if not isinstance(reference, datetime.datetime):
        raise DefinitionError(ErrorKind.INVALID_SCHEDULE,
                              f"reference_timestamp must be a datetime, got {reference!r}",
                              file=file, line=line)
    policy = schedule.overrun_policy
    if policy is None:
        policy = OverrunPolicy.SKIP
    elif isinstance(policy, bool) or policy not in set(OverrunPolicy):
        raise DefinitionError(ErrorKind.UNKNOWN_OVERRUN_POLICY,
                              f"unknown overrun policy {policy!r}; expected one of "
                              + ", ".join(f"{p.name}={p.value}" for p in OverrunPolicy),
                              file=file, line=line)
    max_running = schedule.max_running_instances
    if max_running is None:
        max_running = DEFAULT_MAX_RUNNING_INSTANCES
    elif isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1:
        raise DefinitionError(ErrorKind.INVALID_SCHEDULE,
                              f"max_running_instances must be a positive integer, got "
                              f"{max_running!r}", file=file, line=line)
    notify = config.notify_emails
    return Schedule(
        # Pinball reads the wall-clock fields as UTC, ignoring any tzinfo.
        reference_epoch=calendar.timegm(reference.timetuple()),
        recurrence_seconds=int(seconds),
        overrun_policy=OverrunPolicy(policy),
        max_running_instances=max_running,
        emails=tuple(notify.split(",")) if isinstance(notify, str) and notify else (),
    )
