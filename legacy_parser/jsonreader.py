"""JSON repository trees, read with RepositoryConfigParser's semantics
(docs/pinball-compatibility.md, "The JSON format (RepositoryConfigParser)").

Layout: ``<root>/workflow/<workflow>/schedule`` and ``<root>/workflow/<workflow>/job/<job>``.
Runs inside a sandbox worker: templates are user classes loaded by dotted path.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import importlib
import json
import os
from collections.abc import Callable
from typing import Any

from legacy_parser import graph
from legacy_parser.digests import folder_listing
from legacy_parser.errors import DefinitionError, Locator
from legacy_parser.model import (
    DEFAULT_MAX_RUNNING_INSTANCES,
    WORKFLOW_START_INPUT,
    ErrorKind,
    JobKind,
    OverrunPolicy,
    Schedule,
    SourceFile,
    Workflow,
    WorkflowError,
)
from legacy_parser.schedule import parse_recurrence
from legacy_parser.templates import build_job, check_duck_template, template_priority

SCHEDULE_REQUIRED = ("workflow", "start_date", "time", "recurrence", "overrun_policy", "emails")
JOB_REQUIRED = ("workflow", "job", "is_condition", "template", "template_params", "parents",
                "emails", "max_attempts", "retry_delay_sec", "priority")
JOB_OPTIONAL = ("warn_timeout_sec", "abort_timeout_sec")
SECONDS_PER_DAY = 86400


class TreeReader:
    """Reads files of the tree, remembering each one (and each listing) for change detection."""

    def __init__(self, locator: Locator) -> None:
        self.locator = locator
        self.files: list[SourceFile] = []

    def listing(self, folder: str) -> list[str]:
        names, digest = folder_listing(folder)
        self.files.append(SourceFile(self.locator.relative(folder) + os.sep, digest))
        return names

    def json_object(self, path: str, job: str = "") -> dict[str, Any]:
        relative = self.locator.relative(path)
        with open(path, "rb") as handle:
            data = handle.read()
        self.files.append(SourceFile(relative, hashlib.sha256(data).hexdigest()))
        try:
            value = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise DefinitionError(ErrorKind.INVALID_JSON, f"not UTF-8 text: {error}", job,
                                  relative) from None
        except json.JSONDecodeError as error:
            raise DefinitionError(ErrorKind.INVALID_JSON,
                                  f"invalid JSON: {error.msg} at line {error.lineno} column "
                                  f"{error.colno}", job, relative, error.lineno) from None
        if not isinstance(value, dict):
            raise DefinitionError(ErrorKind.INVALID_JSON,
                                  f"expected a JSON object, got {type(value).__name__}", job,
                                  relative)
        return value


def _check_attributes(config: dict[str, Any], required: tuple[str, ...],
                      optional: tuple[str, ...], job: str, file: str) -> None:
    missing = [key for key in required if key not in config]
    if missing:
        raise DefinitionError(ErrorKind.MISSING_ATTRIBUTE,
                              "missing attribute(s): " + ", ".join(missing), job, file)
    unknown = [key for key in config if key not in required and key not in optional]
    if unknown:
        raise DefinitionError(ErrorKind.UNKNOWN_ATTRIBUTE,
                              "unknown attribute(s): " + ", ".join(sorted(unknown))
                              + "; allowed: " + ", ".join(required + optional), job, file)


def _expect(value: Any, types: type | tuple[type, ...], field: str, job: str, file: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        value_ok = False
    else:
        value_ok = isinstance(value, types)
    if not value_ok:
        raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                              f"attribute {field!r} has the wrong type: {value!r}", job, file)
    return value


def read_json_workflows(cluster: str, repo_root: str, params: dict[str, Any], locator: Locator,
                        emit: Callable[[Workflow], None],
                        ) -> tuple[list[WorkflowError], list[SourceFile]]:
    """As read_python_workflows, plus the files read."""
    root = os.path.join(repo_root, str(params.get("repository_root") or ""))
    workflows_dir = os.path.join(root, "workflow")
    reader = TreeReader(locator)
    try:
        names = reader.listing(workflows_dir)
    except OSError as error:
        return [WorkflowError(ErrorKind.IO_ERROR,
                              f"cannot list the workflow folder: {error.strerror}",
                              cluster, file=locator.relative(workflows_dir)),
                ], reader.files
    errors: list[WorkflowError] = []
    for name in names:
        folder = os.path.join(workflows_dir, name)
        if not os.path.isdir(folder):
            continue
        try:
            workflow = _read_workflow(cluster, name, folder, reader)
        except OSError as error:
            errors.append(WorkflowError(ErrorKind.IO_ERROR, f"{error.strerror}: {error.filename}",
                                        cluster, name, file=locator.relative(error.filename or "")))
        except Exception as error:  # noqa: BLE001 - one bad workflow must not hide the others
            errors.append(locator.error_from_exception(error, cluster, name))
        else:
            emit(workflow)
    return errors, reader.files


def _read_schedule(name: str, folder: str, reader: TreeReader) -> tuple[Schedule, str]:
    path = os.path.join(folder, "schedule")
    file = reader.locator.relative(path)
    config = reader.json_object(path)
    _check_attributes(config, SCHEDULE_REQUIRED, (), "", file)
    if config["workflow"] != name:
        raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                              f"schedule names workflow {config['workflow']!r} but lies in the "
                              f"folder of {name!r}", file=file)
    try:
        recurrence = parse_recurrence(_expect(config["recurrence"], str, "recurrence", "", file))
    except ValueError as error:
        raise DefinitionError(ErrorKind.INVALID_RECURRENCE, str(error), file=file) from None
    policy_name = config["overrun_policy"]
    try:
        policy = OverrunPolicy[_expect(policy_name, str, "overrun_policy", "", file)]
    except KeyError:
        raise DefinitionError(ErrorKind.UNKNOWN_OVERRUN_POLICY,
                              f"unknown overrun policy {policy_name!r}; expected one of "
                              + ", ".join(p.name for p in OverrunPolicy), file=file) from None
    time_text = _expect(config["time"], str, "time", "", file)
    date_text = _expect(config["start_date"], str, "start_date", "", file)
    try:
        clock = datetime.datetime.strptime(time_text[:5], "%H.%M")
    except ValueError:
        raise DefinitionError(ErrorKind.INVALID_SCHEDULE,
                              f"time {time_text!r} is not HH.MM.SS.mmm", file=file) from None
    if date_text:
        try:
            date = datetime.datetime.strptime(date_text, "%Y-%m-%d").date()
        except ValueError:
            raise DefinitionError(ErrorKind.INVALID_SCHEDULE,
                                  f"start_date {date_text!r} is not YYYY-MM-DD",
                                  file=file) from None
    elif SECONDS_PER_DAY % recurrence == 0:
        # Pinball starts an empty start_date "today"; for a recurrence that divides a day
        # every day gives the same grid, so the epoch date keeps fingerprints stable.
        date = datetime.date(1970, 1, 1)
    else:
        date = datetime.datetime.now(datetime.UTC).date()
    reference = calendar.timegm((date.year, date.month, date.day, clock.hour, clock.minute, 0))
    emails = _expect(config["emails"], list, "emails", "", file)
    schedule = Schedule(
        reference_epoch=reference,
        recurrence_seconds=recurrence,
        overrun_policy=policy,
        max_running_instances=DEFAULT_MAX_RUNNING_INSTANCES,
        emails=tuple(str(email) for email in emails),
    )
    return schedule, file


def _load_template_class(dotted: str, job: str, file: str) -> Any:
    module_name, _, attribute = dotted.rpartition(".")
    if not module_name:
        raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                              f"template {dotted!r} is not a dotted path module.Class", job, file)
    module = importlib.import_module(module_name)
    if not hasattr(module, attribute):
        raise DefinitionError(ErrorKind.IMPORT_ERROR,
                              f"module {module_name!r} has no template {attribute!r}", job, file)
    return getattr(module, attribute)


def _read_workflow(cluster: str, name: str, folder: str, reader: TreeReader) -> Workflow:
    schedule, schedule_file = _read_schedule(name, folder, reader)
    job_folder = os.path.join(folder, "job")
    configs: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    for job_name in reader.listing(job_folder):
        path = os.path.join(job_folder, job_name)
        file = reader.locator.relative(path)
        config = reader.json_object(path, job_name)
        _check_attributes(config, JOB_REQUIRED, JOB_OPTIONAL, job_name, file)
        if config["job"] != job_name or config["workflow"] != name:
            raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                                  f"job file names workflow {config['workflow']!r} job "
                                  f"{config['job']!r}, but lies at {name}/job/{job_name}",
                                  job_name, file)
        # Nulls as Pinball reads them: no parents makes a top-level job; null emails,
        # max_attempts and retry_delay_sec reach the template as None, which its defaults
        # decide (and a job's retry_delay_sec is never read).
        if config["parents"] is None:
            config["parents"] = []
        parents = _expect(config["parents"], list, "parents", job_name, file)
        if not all(isinstance(parent, str) for parent in parents):
            raise DefinitionError(ErrorKind.INVALID_DEFINITION,
                                  f"parents must be job names, got {parents!r}", job_name, file)
        if _expect(config["is_condition"], bool, "is_condition", job_name, file) and parents:
            raise DefinitionError(ErrorKind.CONDITION_WITH_PARENTS,
                                  f"condition {job_name!r} has parents {parents!r}; a condition "
                                  "must have none", job_name, file)
        _expect(config["template"], str, "template", job_name, file)
        _expect(config["template_params"], dict, "template_params", job_name, file)
        _expect(config["emails"], (list, type(None)), "emails", job_name, file)
        for field in ("max_attempts", "retry_delay_sec"):
            _expect(config[field], (int, type(None)), field, job_name, file)
        if config["priority"] is not None:
            _expect(config["priority"], (int, float), "priority", job_name, file)
        configs[job_name] = config
        files[job_name] = file

    parents_of = {job: list(config["parents"]) for job, config in configs.items()}
    try:
        children = graph.children_of(parents_of)
    except graph.GraphError as error:
        raise DefinitionError(ErrorKind(error.kind), str(error), error.job,
                              files[error.job]) from None
    cycle = graph.find_cycle(children)
    if cycle:
        raise DefinitionError(ErrorKind.CYCLE, "dependency cycle: " + " -> ".join(cycle),
                              cycle[0], files[cycle[0]])

    templates: dict[str, Any] = {}
    kinds: dict[str, JobKind] = {}
    for job_name, config in configs.items():
        file = files[job_name]
        arguments = {"max_attempts": config["max_attempts"], "emails": config["emails"],
                     "priority": config["priority"]}
        if config["is_condition"]:
            arguments["retry_delay_sec"] = config["retry_delay_sec"]
        try:
            template_class = _load_template_class(config["template"], job_name, file)
            if not callable(template_class):
                raise DefinitionError(ErrorKind.WRONG_TEMPLATE_TYPE,
                                      f"template {config['template']!r} is not a class",
                                      job_name, file)
            if isinstance(template_class, type):
                check_duck_template(template_class, job_name, file, 0, config["is_condition"])
            templates[job_name] = template_class(job_name, **arguments)
        except DefinitionError:
            raise
        except Exception as error:  # noqa: BLE001 - located and reported as this job's error
            # Importing or building the template failed: name the job and its file, or
            # the place in the template's module where it went wrong.
            located = reader.locator.error_from_exception(error, cluster, name, job_name)
            raise DefinitionError(located.kind, located.message, job_name,
                                  located.file or file, located.line) from None
        kinds[job_name] = check_duck_template(templates[job_name], job_name, file, 0,
                                              config["is_condition"])

    priorities = {job: template_priority(template) for job, template in templates.items()}
    scores = graph.scores(children, priorities)
    jobs = []
    for job_name in sorted(configs):
        config, template = configs[job_name], templates[job_name]
        inputs = config["parents"] or [WORKFLOW_START_INPUT]
        outputs = children[job_name]
        try:
            if kinds[job_name] is JobKind.CONDITION:
                payload = template.get_pinball_condition(list(outputs),
                                                         params=config["template_params"])
            else:
                payload = template.get_pinball_job(list(inputs), list(outputs),
                                                   config["template_params"])
        except DefinitionError:
            raise
        except Exception as error:  # noqa: BLE001 - located and reported as this job's error
            located = reader.locator.error_from_exception(error, cluster, name, job_name)
            raise DefinitionError(located.kind, located.message, job_name,
                                  located.file or files[job_name], located.line) from None
        jobs.append(build_job(
            name=job_name, kind=kinds[job_name], template=template, payload=payload,
            parents=config["parents"], children=outputs, priority=priorities[job_name],
            # Pinball's repository parser sets no token priority.
            score=scores[job_name], token_priority=0.0, file=files[job_name], line=0,
        ))
    return Workflow(
        cluster=cluster,
        name=name,
        jobs=tuple(jobs),
        final_job="",
        schedule=schedule,
        notify_emails=schedule.emails,
        file=schedule_file,
        line=0,
    )
