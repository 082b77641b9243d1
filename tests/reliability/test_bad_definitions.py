"""Bad definitions: Hypothesis writes JSON repository trees and Python definition modules
from a grammar of plausible mistakes (wrong types, missing keys, cycles, bad recurrences,
bad templates, syntax errors, raising code) and a real server re-parses each one.

Each workflow with a mistake must be reported (not OK, with an error of the kinds the
mistake calls for), each without one must be served, and the load must end within the
sandbox's limit without a crashed worker, whatever the rest of the tree holds. Results a
definition forges on the worker's result pipe are refused, never trusted or run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legacy_parser.cluster import JSON_PARSER, PYTHON_PARSER
from legacy_parser.isolation import SandboxLimits
from legacy_parser.limits import ResultCaps
from legacy_parser.model import ErrorKind, ParseResult, WorkflowError, to_plain
from legacy_parser.result_wire import KnownWorkflows
from legacy_parser.sandbox import Sandbox
from tests.helpers import EXAMPLES, health, parse_repo, parse_workers
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.config import parse_config
from token_fetcher.server import TokenFetcherServer

K = pb.ErrorKind
GEN_JSON, GEN_PY = "gen_json", "gen_python"
TIME_LIMIT = 10.0
# Kinds that mean the parse itself failed, not the definition.
CRASH_KINDS = {K.ERROR_KIND_TIMEOUT, K.ERROR_KIND_MEMORY_LIMIT, K.ERROR_KIND_WORKER_CRASHED}
EXAMPLES_PER_FORMAT = 40  # each one a parse in a fresh worker (~0.1-0.2 s)
PARSES = settings(max_examples=EXAMPLES_PER_FORMAT, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])

TEMPLATES_MODULE = '''"""Templates for generated JSON definitions, good and bad."""

from pinball_ext.job_templates import CommandJobTemplate, ConditionTemplateBase


class EchoTemplate(CommandJobTemplate):
    COMMAND = 'echo hello'

    def __init__(self, name, max_attempts=1, emails=None, priority=None):
        super(EchoTemplate, self).__init__(name, self.COMMAND, max_attempts=max_attempts,
                                           emails=emails, priority=priority)


class PercentTemplate(EchoTemplate):
    COMMAND = 'echo disk above 90%'


class NeedsParamTemplate(EchoTemplate):
    COMMAND = 'echo %(warehouse)s'


class RaisingTemplate(EchoTemplate):
    def __init__(self, name, **kwargs):
        raise RuntimeError('this template refuses to be built')


class NotATemplate(object):
    def __init__(self, name, **kwargs):
        self.name = name


class AConditionTemplate(ConditionTemplateBase):
    def get_pinball_condition(self, outputs, params=None):
        raise AssertionError('never reached: the job is not a condition')


NOT_A_CLASS = 5
'''


@dataclass
class Expected:
    """What a generated tree must produce."""

    ok: dict[str, int] = field(default_factory=dict)  # workflow -> job count
    broken: dict[str, set] = field(default_factory=dict)  # workflow -> acceptable kinds
    cluster: set | None = None  # acceptable kinds of a cluster-level error


# --- JSON trees -----------------------------------------------------------------------------

WORKFLOWS = ["wf_alpha", "wf_beta", "wf_gamma"]
JOBS = ["extract", "load", "report"]


def good_schedule(workflow: str) -> dict:
    return {"workflow": workflow, "start_date": "2015-01-01", "time": "06.00.00.000",
            "recurrence": "1d", "overrun_policy": "SKIP", "emails": ["oncall@example.com"]}


def good_job(workflow: str, job: str, parents: list[str]) -> dict:
    return {"workflow": workflow, "job": job, "is_condition": False,
            "template": "gen_templates.EchoTemplate", "template_params": {},
            "parents": parents, "emails": [], "max_attempts": 1, "retry_delay_sec": 0,
            "priority": 1}


def _set(key, value):
    def apply(data):
        data[key] = value
    return apply


def _drop(key):
    def apply(data):
        del data[key]
    return apply


# Mistakes in a schedule file: (mutation of the dict, or raw bytes; acceptable kinds).
SCHEDULE_MISTAKES = {
    "drops workflow": (_drop("workflow"), {K.ERROR_KIND_MISSING_ATTRIBUTE}),
    "drops recurrence": (_drop("recurrence"), {K.ERROR_KIND_MISSING_ATTRIBUTE}),
    "drops emails": (_drop("emails"), {K.ERROR_KIND_MISSING_ATTRIBUTE}),
    "extra key": (_set("owner", "me"), {K.ERROR_KIND_UNKNOWN_ATTRIBUTE}),
    "recurrence empty": (_set("recurrence", ""), {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence zero": (_set("recurrence", "0d"), {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence negative": (_set("recurrence", "-1d"), {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence unit": (_set("recurrence", "1x"), {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence months": (_set("recurrence", "1m"), {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence fraction": (_set("recurrence", "1.5H"), {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence spaced": (_set("recurrence", "1 d"), {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence arabic digit": (_set("recurrence", "\u0663d"), {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence newline": (_set("recurrence", "1d\n"), {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence number": (_set("recurrence", 86400),
                          {K.ERROR_KIND_INVALID_RECURRENCE, K.ERROR_KIND_INVALID_DEFINITION}),
    "recurrence null": (_set("recurrence", None),
                        {K.ERROR_KIND_INVALID_RECURRENCE, K.ERROR_KIND_INVALID_DEFINITION}),
    "recurrence beyond int64": (_set("recurrence", "99999999999999999999d"),
                                {K.ERROR_KIND_INVALID_DEFINITION}),
    "time out of range": (_set("time", "25.99.00.000"), {K.ERROR_KIND_INVALID_SCHEDULE}),
    "time words": (_set("time", "noon"), {K.ERROR_KIND_INVALID_SCHEDULE}),
    "time number": (_set("time", 6), {K.ERROR_KIND_INVALID_DEFINITION}),
    "start date month 13": (_set("start_date", "2015-13-01"), {K.ERROR_KIND_INVALID_SCHEDULE}),
    "start date 30 February": (_set("start_date", "2015-02-30"), {K.ERROR_KIND_INVALID_SCHEDULE}),
    "start date words": (_set("start_date", "yesterday"), {K.ERROR_KIND_INVALID_SCHEDULE}),
    "overrun policy unknown": (_set("overrun_policy", "SOMETIMES"),
                               {K.ERROR_KIND_UNKNOWN_OVERRUN_POLICY}),
    "overrun policy lower case": (_set("overrun_policy", "skip"),
                                  {K.ERROR_KIND_UNKNOWN_OVERRUN_POLICY}),
    "overrun policy number": (_set("overrun_policy", 1), {K.ERROR_KIND_INVALID_DEFINITION}),
    "names another workflow": (_set("workflow", "someone_else"),
                               {K.ERROR_KIND_INVALID_DEFINITION}),
    "emails a string": (_set("emails", "a@example.com"), {K.ERROR_KIND_INVALID_DEFINITION}),
    "truncated": (b'{"workflow": "wf', {K.ERROR_KIND_INVALID_JSON}),
    "a list": (b"[]", {K.ERROR_KIND_INVALID_JSON}),
    "empty file": (b"", {K.ERROR_KIND_INVALID_JSON}),
    "not UTF-8": (b"\xff\xfe{}", {K.ERROR_KIND_INVALID_JSON}),
    "missing": (None, {K.ERROR_KIND_IO_ERROR}),
}

# Mistakes in one job file (the workflow's last job); parents of the job may be rewritten.
JOB_MISTAKES = {
    "drops parents": (_drop("parents"), {K.ERROR_KIND_MISSING_ATTRIBUTE}),
    "drops priority": (_drop("priority"), {K.ERROR_KIND_MISSING_ATTRIBUTE}),
    "drops template": (_drop("template"), {K.ERROR_KIND_MISSING_ATTRIBUTE}),
    "extra key": (_set("owner", "me"), {K.ERROR_KIND_UNKNOWN_ATTRIBUTE}),
    "missing parent": (_set("parents", ["no_such_job"]), {K.ERROR_KIND_MISSING_PARENT}),
    "depends on itself": ("self", {K.ERROR_KIND_CYCLE}),
    "cycle": ("cycle", {K.ERROR_KIND_CYCLE}),
    "parents a string": (_set("parents", "extract"), {K.ERROR_KIND_INVALID_DEFINITION}),
    "parents hold a number": (_set("parents", [1]), {K.ERROR_KIND_INVALID_DEFINITION}),
    "is_condition a string": (_set("is_condition", "yes"), {K.ERROR_KIND_INVALID_DEFINITION}),
    "condition with parents": ("condition", {K.ERROR_KIND_CONDITION_WITH_PARENTS}),
    "max_attempts a string": (_set("max_attempts", "3"), {K.ERROR_KIND_INVALID_DEFINITION}),
    "max_attempts beyond int32": (_set("max_attempts", 2**40), {K.ERROR_KIND_INVALID_DEFINITION}),
    "retry_delay_sec a float": (_set("retry_delay_sec", 1.5), {K.ERROR_KIND_INVALID_DEFINITION}),
    "priority a word": (_set("priority", "high"), {K.ERROR_KIND_INVALID_DEFINITION}),
    "priority true": (_set("priority", True), {K.ERROR_KIND_INVALID_DEFINITION}),
    "names another job": (_set("job", "someone_else"), {K.ERROR_KIND_INVALID_DEFINITION}),
    "template_params a list": (_set("template_params", []), {K.ERROR_KIND_INVALID_DEFINITION}),
    "template without module": (_set("template", "EchoTemplate"),
                                {K.ERROR_KIND_INVALID_DEFINITION}),
    "template module missing": (_set("template", "no_such_module_xyz.Template"),
                                {K.ERROR_KIND_IMPORT_ERROR}),
    "template class missing": (_set("template", "gen_templates.Missing"),
                               {K.ERROR_KIND_IMPORT_ERROR}),
    "template not a class": (_set("template", "gen_templates.NOT_A_CLASS"),
                             {K.ERROR_KIND_WRONG_TEMPLATE_TYPE}),
    "template not a template": (_set("template", "gen_templates.NotATemplate"),
                                {K.ERROR_KIND_WRONG_TEMPLATE_TYPE}),
    "template is a condition": (_set("template", "gen_templates.AConditionTemplate"),
                                {K.ERROR_KIND_WRONG_TEMPLATE_TYPE}),
    "template raises": (_set("template", "gen_templates.RaisingTemplate"),
                        {K.ERROR_KIND_TEMPLATE_ERROR}),
    "template lone percent": (_set("template", "gen_templates.PercentTemplate"),
                              {K.ERROR_KIND_COMMAND_FORMAT}),
    "template needs a param": (_set("template", "gen_templates.NeedsParamTemplate"),
                               {K.ERROR_KIND_COMMAND_FORMAT}),
    "truncated": (b'{"workflow": "wf_alpha", "job": ', {K.ERROR_KIND_INVALID_JSON}),
    "a string": (b'"a job"', {K.ERROR_KIND_INVALID_JSON}),
    "not UTF-8": (b'{"job": "\xe9"}', {K.ERROR_KIND_INVALID_JSON}),
    "a folder": ("folder", {K.ERROR_KIND_IO_ERROR}),
}


JSON_MISTAKES = sorted([("schedule", label) for label in SCHEDULE_MISTAKES]
                       + [("job", label) for label in JOB_MISTAKES])


def json_workflow(name: str, jobs: list[str], mistake: tuple[str, str] | None,
                  ) -> tuple[dict[str, bytes | None], set | None]:
    """The files of one workflow folder (None: a folder), and the kinds its mistake calls
    for (None: no mistake, the workflow must be served)."""
    folder = f"repo/workflow/{name}"
    schedule = good_schedule(name)
    configs = {job: good_job(name, job, jobs[:i][-1:]) for i, job in enumerate(jobs)}
    raw: dict[str, bytes | None] = {}
    kinds = None
    if mistake is not None and mistake[0] == "schedule":
        change, kinds = SCHEDULE_MISTAKES[mistake[1]]
        if change is None or isinstance(change, bytes):
            raw["schedule"] = change
        else:
            change(schedule)
    elif mistake is not None:
        change, kinds = JOB_MISTAKES[mistake[1]]
        last = jobs[-1]
        if change == "self":
            configs[last]["parents"] = [last]
        elif change == "cycle":
            configs[jobs[0]]["parents"] = [last]
        elif change == "condition":
            configs[last]["is_condition"] = True
            configs[last]["parents"] = [jobs[0]] if len(jobs) > 1 else ["extract_x"]
        elif change == "folder":
            raw[f"job/{last}"] = None
        elif isinstance(change, bytes):
            raw[f"job/{last}"] = change
        else:
            change(configs[last])
    files: dict[str, bytes | None] = {}
    if "schedule" not in raw:
        files[f"{folder}/schedule"] = json.dumps(schedule).encode()
    elif raw["schedule"] is not None:  # None: no schedule file at all
        files[f"{folder}/schedule"] = raw["schedule"]
    for job, config in configs.items():
        key = f"job/{job}"
        files[f"{folder}/{key}"] = raw[key] if key in raw else json.dumps(config).encode()
    return files, kinds


@st.composite
def json_trees(draw):
    """{relative path: bytes or None (a folder)}, Expected."""
    files: dict[str, bytes | None] = {}
    expected = Expected()
    if draw(st.integers(0, 19)) == 0:  # now and then, no workflow folder at all
        files["repo/nothing_here"] = b""
        expected.cluster = {K.ERROR_KIND_IO_ERROR}
        return files, expected
    names = draw(st.lists(st.sampled_from(WORKFLOWS), min_size=1, max_size=3, unique=True))
    for name in names:
        jobs = draw(st.lists(st.sampled_from(JOBS), min_size=1, max_size=3, unique=True))
        mistake = draw(st.one_of(st.none(), st.sampled_from(JSON_MISTAKES)))
        workflow_files, kinds = json_workflow(name, jobs, mistake)
        files.update(workflow_files)
        if kinds is None:
            expected.ok[name] = len(jobs)
        else:
            expected.broken[name] = kinds
    return files, expected


# --- Python modules -------------------------------------------------------------------------

PY_HEADER = '''"""Generated definitions."""
import sys
from datetime import datetime, timedelta

from pinball.scheduler.overrun_policy import OverrunPolicy
from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig


class Boom(CommandJobTemplate):
    def get_pinball_job(self, inputs, outputs, params=None):
        raise RuntimeError('boom in a template')


class NotATemplate(object):
    def __init__(self, name):
        self.name = name

'''


@dataclass
class PyWorkflow:
    key: str  # the source of the dict key
    jobs: dict[str, str]  # job key source -> JobConfig source
    final: str = "JobConfig(CommandJobTemplate('final', 'echo done'))"
    schedule: str = "ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))"
    notify: str = "'oncall@example.com'"
    value: str | None = None  # replaces WorkflowConfig(...) when set

    def source(self) -> str:
        if self.value is not None:
            return f"    {self.key}: {self.value},\n"
        jobs = ", ".join(f"{k}: {v}" for k, v in self.jobs.items())
        return (f"    {self.key}: WorkflowConfig(\n        jobs={{{jobs}}},\n"
                f"        final_job_config={self.final},\n        schedule={self.schedule},\n"
                f"        notify_emails={self.notify}),\n")


def _job(name: str, deps: list[str], template: str | None = None) -> str:
    template = template or f"CommandJobTemplate({name!r}, 'echo {name}')"
    return f"JobConfig({template}, dependency={deps!r})"


def _first_job(workflow: PyWorkflow, source: str) -> None:
    first = next(iter(workflow.jobs))
    workflow.jobs[first] = source


def _last_deps(deps: str):
    def apply(workflow: PyWorkflow) -> None:
        last = list(workflow.jobs)[-1]
        workflow.jobs[last] = f"JobConfig(CommandJobTemplate({last}, 'echo'), dependency={deps})"
    return apply


def _attr(name: str, value: str):
    def apply(workflow: PyWorkflow) -> None:
        setattr(workflow, name, value)
    return apply


def _template(source: str):
    def apply(workflow: PyWorkflow) -> None:
        _first_job(workflow, f"JobConfig({source})")
    return apply


def _cycle(workflow: PyWorkflow) -> None:
    names = list(workflow.jobs)
    first, last = names[0], names[-1]
    workflow.jobs[first] = f"JobConfig(CommandJobTemplate({first}, 'echo'), dependency=[{last}])"


def _final_job_name(workflow: PyWorkflow) -> None:
    workflow.jobs["'final'"] = _job("final", [])


def _schedule(source: str):
    return _attr("schedule", source)


R = "datetime(2015, 1, 1, 6, 0)"
PY_MISTAKES = {
    "jobs a list": (_attr("value", "WorkflowConfig(jobs=[], final_job_config=JobConfig("
                                   "CommandJobTemplate('final', 'x')), schedule=ScheduleConfig("
                                   "timedelta(days=1), " + R + "))"),
                    {K.ERROR_KIND_INVALID_DEFINITION}),
    "a job is a string": (lambda w: _first_job(w, "'not a JobConfig'"),
                          {K.ERROR_KIND_INVALID_DEFINITION}),
    "template a string": (_template("'RevenueReportJob'"), {K.ERROR_KIND_WRONG_TEMPLATE_TYPE}),
    "template not a template": (_template("NotATemplate('x')"),
                                {K.ERROR_KIND_WRONG_TEMPLATE_TYPE}),
    "dependency a string": (_last_deps("'extract'"), {K.ERROR_KIND_INVALID_DEFINITION}),
    "dependency holds a number": (_last_deps("[1]"), {K.ERROR_KIND_INVALID_DEFINITION}),
    "missing parent": (_last_deps("['no_such_job']"), {K.ERROR_KIND_MISSING_PARENT}),
    "cycle": (_cycle, {K.ERROR_KIND_CYCLE}),
    "a job named final": (_final_job_name, {K.ERROR_KIND_RESERVED_JOB_NAME}),
    "final job config None": (_attr("final", "None"), {K.ERROR_KIND_INVALID_DEFINITION}),
    "final job a template": (_attr("final", "CommandJobTemplate('final', 'x')"),
                             {K.ERROR_KIND_INVALID_DEFINITION}),
    "schedule None": (_schedule("None"), {K.ERROR_KIND_INVALID_SCHEDULE}),
    "recurrence zero": (_schedule(f"ScheduleConfig(timedelta(0), {R})"),
                        {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence negative": (_schedule(f"ScheduleConfig(timedelta(hours=-1), {R})"),
                            {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence fractional": (_schedule(f"ScheduleConfig(timedelta(seconds=1.5), {R})"),
                              {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence a string": (_schedule(f"ScheduleConfig('1d', {R})"),
                            {K.ERROR_KIND_INVALID_RECURRENCE}),
    "recurrence a number": (_schedule(f"ScheduleConfig(86400, {R})"),
                            {K.ERROR_KIND_INVALID_RECURRENCE}),
    "reference a string": (_schedule("ScheduleConfig(timedelta(days=1), '2015-01-01')"),
                           {K.ERROR_KIND_INVALID_SCHEDULE}),
    "overrun policy 99": (_schedule(f"ScheduleConfig(timedelta(days=1), {R}, 99)"),
                          {K.ERROR_KIND_UNKNOWN_OVERRUN_POLICY}),
    "overrun policy True": (_schedule(f"ScheduleConfig(timedelta(days=1), {R}, True)"),
                            {K.ERROR_KIND_UNKNOWN_OVERRUN_POLICY}),
    "overrun policy a name": (_schedule(f"ScheduleConfig(timedelta(days=1), {R}, 'SKIP')"),
                              {K.ERROR_KIND_UNKNOWN_OVERRUN_POLICY}),
    "max running zero": (_schedule(f"ScheduleConfig(timedelta(days=1), {R}, None, 0)"),
                         {K.ERROR_KIND_INVALID_SCHEDULE}),
    "max running a string": (_schedule(f"ScheduleConfig(timedelta(days=1), {R}, None, '2')"),
                             {K.ERROR_KIND_INVALID_SCHEDULE}),
    "notify emails a list": (_attr("notify", "['a@example.com']"),
                             {K.ERROR_KIND_INVALID_DEFINITION}),
    "command with an unknown parameter": (
        _template("CommandJobTemplate('j', 'echo %(no_such_param)s')"),
        {K.ERROR_KIND_COMMAND_FORMAT}),
    "command with a lone percent": (_template("CommandJobTemplate('j', 'echo 90%')"),
                                    {K.ERROR_KIND_COMMAND_FORMAT}),
    "command a number": (_template("CommandJobTemplate('j', 5)"), {K.ERROR_KIND_COMMAND_FORMAT}),
    "command not UTF-8": (_template("CommandJobTemplate('j', 'echo \\udcff')"),
                          {K.ERROR_KIND_INVALID_DEFINITION}),
    "template raises": (_template("Boom('j', 'echo')"), {K.ERROR_KIND_TEMPLATE_ERROR}),
    "max_attempts beyond int32": (_template("CommandJobTemplate('j', 'echo', max_attempts=2**40)"),
                                  {K.ERROR_KIND_INVALID_DEFINITION}),
    "priority a word": (_template("CommandJobTemplate('j', 'echo', priority='high')"),
                        {K.ERROR_KIND_TEMPLATE_ERROR, K.ERROR_KIND_INVALID_DEFINITION}),
    "not a WorkflowConfig": (_attr("value", "'daily'"), {K.ERROR_KIND_INVALID_DEFINITION}),
}

# Mistakes of the module as a whole: (source change, acceptable cluster-level kinds).
MODULE_MISTAKES = {
    "syntax error": ("truncate", {K.ERROR_KIND_SYNTAX_ERROR}),
    "raises at import": ("raise ValueError('boom at import')\n",
                         {K.ERROR_KIND_EXCEPTION_AT_IMPORT}),
    "divides by zero": ("1 / 0\n", {K.ERROR_KIND_EXCEPTION_AT_IMPORT}),
    "exits": ("sys.exit(2)\n", {K.ERROR_KIND_EXCEPTION_AT_IMPORT}),
    "imports a missing module": ("import no_such_module_xyz\n", {K.ERROR_KIND_IMPORT_ERROR}),
    "WORKFLOWS a list": ("WORKFLOWS = list(WORKFLOWS.values())\n", {K.ERROR_KIND_NOT_A_DICT}),
    "no WORKFLOWS": ("del WORKFLOWS\n", {K.ERROR_KIND_MISSING_WORKFLOWS}),
}


def py_workflow(name: str, jobs: list[str], mistake: str | None) -> tuple[PyWorkflow, set | None]:
    workflow = PyWorkflow(repr(name), {repr(job): _job(job, jobs[:i][-1:])
                                       for i, job in enumerate(jobs)})
    if mistake is None:
        return workflow, None
    change, kinds = PY_MISTAKES[mistake]
    change(workflow)
    return workflow, kinds


def py_module(workflows: list[PyWorkflow]) -> tuple[str, str]:
    """(the module's source, its WORKFLOWS literal)."""
    body = "WORKFLOWS = {\n" + "".join(w.source() for w in workflows) + "}\n"
    return PY_HEADER + body, body


def with_module_mistake(body: str, label: str, cut: int | None = None) -> str:
    change, _ = MODULE_MISTAKES[label]
    if change == "truncate":  # cut inside the dict literal: never valid Python
        start = len(PY_HEADER) + len("WORKFLOWS = {")
        source = PY_HEADER + body
        end = len(source) - 3
        return source[:start + (cut if cut is not None else (end - start) // 2) % (end - start)]
    if change.startswith(("WORKFLOWS", "del")):
        return PY_HEADER + body + change
    return PY_HEADER + change + body


@st.composite
def python_modules(draw):
    """(module source, Expected)."""
    expected = Expected()
    names = draw(st.lists(st.sampled_from(WORKFLOWS), min_size=1, max_size=3, unique=True))
    workflows = []
    for name in names:
        jobs = draw(st.lists(st.sampled_from(JOBS), min_size=1, max_size=3, unique=True))
        mistake = draw(st.one_of(st.none(), st.sampled_from(sorted(PY_MISTAKES))))
        workflow, kinds = py_workflow(name, jobs, mistake)
        workflows.append(workflow)
        if kinds is None:
            expected.ok[name] = len(jobs) + 1  # the final job
        else:
            expected.broken[name] = kinds
    source, body = py_module(workflows)
    if draw(st.integers(0, 5)) == 0:
        label = draw(st.sampled_from(sorted(MODULE_MISTAKES)))
        source = with_module_mistake(body, label, draw(st.integers(0, 10**6)))
        expected = Expected(cluster=MODULE_MISTAKES[label][1])
    return source, expected


# --- the server that parses them -------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    base = tmp_path_factory.mktemp("generated")
    json_root = base / "json"
    (json_root / "repo" / "workflow").mkdir(parents=True)
    (json_root / "gen_templates.py").write_text(TEMPLATES_MODULE)
    (json_root / "pinball.yaml").write_text(yaml.safe_dump(
        {"parser": JSON_PARSER, "parser_params": {"repository_root": "repo"}}))
    py_root = base / "python"
    (py_root / "gen_defs").mkdir(parents=True)
    (py_root / "gen_defs" / "__init__.py").write_text("")
    (py_root / "gen_defs" / "workflows.py").write_text("WORKFLOWS = {}\n")
    config = parse_config({
        "listen": "127.0.0.1:0", "metrics": "", "state_dir": str(base / "state"),
        "poll_interval_seconds": 3600,  # only Reload parses: one parse per example
        "sandbox": {"timeout_seconds": TIME_LIMIT, "memory_mb": 1024, "workers": 1},
        "clusters": {
            GEN_JSON: {"repo": str(json_root), "pinball_config": str(json_root / "pinball.yaml")},
            GEN_PY: {"repo": str(py_root), "parser": PYTHON_PARSER,
                     "parser_params": {"workflows_config": "gen_defs.workflows.WORKFLOWS"}},
            "example_python": {"repo": str(EXAMPLES / "python_repo"),
                               "pinball_config": str(EXAMPLES / "python_repo" / "pinball.yaml")},
        }}, base)
    server = TokenFetcherServer(config, shutdown_notice_seconds=0)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        assert server.catalog.wait_ready(60)
        yield {"json": json_root, "python": py_root, "server": server, "channel": channel,
               "stub": pb_grpc.TokenFetcherStub(channel)}
    finally:
        channel.close()
        server.stop(grace=1)


def reload_and_check(stub, cluster: str, expected: Expected) -> None:
    started = time.monotonic()
    reply = stub.Reload(pb.ReloadRequest(cluster=cluster), timeout=TIME_LIMIT + 20)
    took = time.monotonic() - started
    assert took < TIME_LIMIT + 2, f"the parse took {took:.1f} s"
    info = reply.cluster
    kinds = {e.kind for e in info.errors}
    assert not kinds & CRASH_KINDS, list(info.errors)
    assert all(e.message for e in info.errors)
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster), timeout=10)
    served = {w.name: w for w in listing.workflows}
    if expected.cluster is not None:
        assert listing.cluster_errors, "a cluster-level mistake went unreported"
        assert {e.kind for e in listing.cluster_errors} <= expected.cluster, \
            list(listing.cluster_errors)
        # Nothing of this tree is served as OK: earlier versions stay, flagged stale.
        assert all(w.status != pb.PARSE_STATUS_OK for w in listing.workflows)
        return
    assert list(listing.cluster_errors) == [], list(listing.cluster_errors)
    assert set(served) == set(expected.ok) | set(expected.broken), sorted(served)
    for name, job_count in expected.ok.items():
        summary = served[name]
        assert summary.status == pb.PARSE_STATUS_OK, (name, list(summary.errors))
        assert summary.job_count == job_count
        spec = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=cluster, workflow=name),
                                    timeout=10)
        assert spec.fingerprint == summary.fingerprint and len(spec.spec.jobs) == job_count
    for name, acceptable in expected.broken.items():
        summary = served[name]
        assert summary.status in (pb.PARSE_STATUS_STALE, pb.PARSE_STATUS_BROKEN), name
        assert summary.errors, name
        got = {e.kind for e in summary.errors}
        assert got <= acceptable, (name, [(pb.ErrorKind.Name(e.kind), e.message)
                                          for e in summary.errors], acceptable)
        assert all(e.workflow == name and e.cluster == cluster for e in summary.errors)


def write_tree(root: Path, files: dict[str, bytes | None]) -> None:
    shutil.rmtree(root / "repo")
    (root / "repo").mkdir()
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            path.mkdir()
        else:
            path.write_bytes(data)


def test_generated_json_trees(generated):
    stub = generated["stub"]

    @PARSES
    @given(tree=json_trees())
    def check(tree):
        files, expected = tree
        write_tree(generated["json"], files)
        reload_and_check(stub, GEN_JSON, expected)

    check()
    pool_still_works(generated)


def test_generated_python_modules(generated):
    stub = generated["stub"]
    module = generated["python"] / "gen_defs" / "workflows.py"

    @PARSES
    @given(case=python_modules())
    def check(case):
        source, expected = case
        module.write_text(source)
        reload_and_check(stub, GEN_PY, expected)

    check()
    pool_still_works(generated)


def test_every_json_mistake_in_one_tree(generated):
    """Each mistake of the grammar at least once per run: one workflow per mistake, next to
    good ones, in a single tree (one parse)."""
    files: dict[str, bytes | None] = {}
    expected = Expected()
    for index, mistake in enumerate([None, None, *JSON_MISTAKES]):
        name = f"wf_{index:03d}"
        workflow_files, kinds = json_workflow(name, JOBS, mistake)
        files.update(workflow_files)
        if kinds is None:
            expected.ok[name] = len(JOBS)
        else:
            expected.broken[name] = kinds
    write_tree(generated["json"], files)
    reload_and_check(generated["stub"], GEN_JSON, expected)


def test_every_python_mistake_in_one_module(generated):
    workflows, expected = [], Expected()
    for index, mistake in enumerate([None, None, *sorted(PY_MISTAKES)]):
        name = f"wf_{index:03d}"
        workflow, kinds = py_workflow(name, JOBS, mistake)
        workflows.append(workflow)
        if kinds is None:
            expected.ok[name] = len(JOBS) + 1
        else:
            expected.broken[name] = kinds
    (generated["python"] / "gen_defs" / "workflows.py").write_text(py_module(workflows)[0])
    reload_and_check(generated["stub"], GEN_PY, expected)


@pytest.mark.parametrize("label", sorted(MODULE_MISTAKES))
def test_every_module_mistake(generated, label):
    workflow, _ = py_workflow("wf_alpha", JOBS, None)
    source = with_module_mistake(py_module([workflow])[1], label)
    (generated["python"] / "gen_defs" / "workflows.py").write_text(source)
    reload_and_check(generated["stub"], GEN_PY, Expected(cluster=MODULE_MISTAKES[label][1]))


def pool_still_works(generated) -> None:
    """The worker pool survived: a good cluster parses, nothing is left running, the server
    is healthy."""
    reply = generated["stub"].Reload(pb.ReloadRequest(cluster="example_python"), timeout=60)
    assert (reply.cluster.ok_count, list(reply.cluster.errors)) == (7, [])
    assert parse_workers(psutil.Process()) == []
    assert health(generated["channel"]) == "SERVING"


def _make_folder_not_utf8(workflow_dir: Path, raw: bytes) -> None:
    folder = os.fsencode(workflow_dir) + b"/" + raw
    shown = os.fsdecode(raw)  # as os.listdir names it: wf_\udcff
    os.makedirs(folder + b"/job")
    with open(folder + b"/schedule", "w") as handle:
        handle.write(json.dumps(good_schedule(shown)))
    with open(folder + b"/job/extract", "w") as handle:
        handle.write(json.dumps(good_job(shown, "extract", [])))


def test_a_file_name_that_is_not_utf8_does_not_stop_the_watch(start_server, stub_for, tmp_path):
    """A folder name that is not UTF-8 (os.listdir gives it back with a lone surrogate)
    used to raise in the catalog's file watch: Reload answered INTERNAL, and the poll thread
    died, so that no change was ever noticed again, on any cluster."""
    from tests.helpers import wait_for

    from .reliability_helpers import JS, cluster_from_yaml, copy_example

    repo = copy_example(tmp_path, "json_repo")
    stub = stub_for(start_server({JS: cluster_from_yaml(repo)}))

    def statuses():
        listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=JS), timeout=10)
        return {w.status for w in listing.workflows}, listing

    workflow_dir = repo / "repo" / "workflow"
    _make_folder_not_utf8(workflow_dir, b"wf_\xff")
    _, listing = wait_for(lambda: (lambda s: s if pb.PARSE_STATUS_BROKEN in s[0] else None)(
        statuses()), message="the bad name to be noticed")
    # Only that workflow is broken, shown escaped; the rest are served.
    by_name = {w.name: w for w in listing.workflows}
    assert by_name["wf_\\udcff"].status == pb.PARSE_STATUS_BROKEN
    assert [e.workflow for e in by_name["wf_\\udcff"].errors] == ["wf_\\udcff"]
    assert {w.status for n, w in by_name.items() if n != "wf_\\udcff"} == {pb.PARSE_STATUS_OK}
    shutil.rmtree(os.fsencode(workflow_dir) + b"/wf_\xff")
    wait_for(lambda: statuses()[0] == {pb.PARSE_STATUS_OK}, message="recovery by the watch")


def test_a_workflow_folder_whose_name_is_not_utf8_is_that_workflows_error_only(generated):
    """The contract cannot carry such a name (protobuf strings are UTF-8): the catalog makes
    it an error of that workflow, shown escaped, and serves the rest."""
    root = generated["json"]
    write_tree(root, {})
    for raw in (b"wf_alpha", b"wf_\xff"):
        _make_folder_not_utf8(root / "repo" / "workflow", raw)
    stub = generated["stub"]
    reply = stub.Reload(pb.ReloadRequest(cluster=GEN_JSON), timeout=30)
    assert (reply.cluster.ok_count, reply.cluster.broken_count) == (1, 1)
    listing = {w.name: w for w in stub.ListWorkflows(
        pb.ListWorkflowsRequest(cluster=GEN_JSON), timeout=10).workflows}
    assert listing["wf_alpha"].status == pb.PARSE_STATUS_OK
    [error] = listing["wf_\\udcff"].errors
    assert error.kind == K.ERROR_KIND_INVALID_DEFINITION and "UTF-8" in error.message


# --- results forged on the worker's result pipe ---------------------------------------------

FORGER = '''"""Writes a result of its own to the worker's result pipe, then ends the worker."""
import os

for fd in range(3, 20):
    try:
        os.write(fd, {payload!r})
        break
    except OSError:
        continue
os._exit(0)
'''


@pytest.mark.parametrize("payload, words", [
    (b"[" * 200000, "malformed"),
    (b'{"result": {"cluster": "x", "workflows": [{"__class__": "os.system"}], "errors": [],'
     b' "files": [], "duration_seconds": 0}}', "malformed"),
    (b'{"result": "__import__(\'os\').system(\'touch /tmp/pwned\')"}', "malformed"),
    (b"\x80\x04\x95pickle", "malformed"),
], ids=["deeply nested", "object-shaped", "code as text", "pickle bytes"])
def test_a_forged_result_is_refused_not_run(tmp_path, payload, words):
    repo = tmp_path / "forger"
    (repo / "forger_defs").mkdir(parents=True)
    (repo / "forger_defs" / "__init__.py").write_text("")
    (repo / "forger_defs" / "workflows.py").write_text(FORGER.format(payload=payload))
    sandbox = Sandbox(SandboxLimits(timeout_seconds=TIME_LIMIT, memory_bytes=1024**3))
    try:
        result = sandbox.parse("forger", str(repo), PYTHON_PARSER,
                               {"workflows_config": "forger_defs.workflows.WORKFLOWS"})
    finally:
        sandbox.close()
    assert result.workflows == ()
    [error] = result.errors
    assert error.kind is ErrorKind.WORKER_CRASHED and words in error.message, error


def test_a_forged_workflow_over_the_caps_is_refused_by_the_server(tmp_path, sandbox):
    """The worker checks the caps before it writes; a definition writing a result of its
    own skips that check, and the server's own reading of every line still makes each
    workflow that breaks them an error, parse after parse."""
    example = parse_repo(sandbox, EXAMPLES / "python_repo", "forger")
    [good, bad, *_] = example.workflows
    forged = dataclasses.replace(bad, name="evil\x1b[2J")
    payload = "".join(json.dumps(to_plain(w)) + "\n" for w in (good, forged)) + json.dumps(
        {"result": to_plain(dataclasses.replace(example, workflows=()))})
    repo = tmp_path / "forger"
    (repo / "forger_defs").mkdir(parents=True)
    (repo / "forger_defs" / "__init__.py").write_text("")
    (repo / "forger_defs" / "workflows.py").write_text(FORGER.format(payload=payload.encode()))
    forging = Sandbox(SandboxLimits(timeout_seconds=TIME_LIMIT, memory_bytes=1024**3))
    known = KnownWorkflows()
    try:
        for _ in range(2):  # the second time from the workflows the first one read
            result = forging.parse("forger", str(repo), PYTHON_PARSER,
                                   {"workflows_config": "forger_defs.workflows.WORKFLOWS"},
                                   known=known)
            assert result.workflows == (good,)
            [error] = result.errors
            assert (error.kind, error.workflow) == (ErrorKind.INVALID_NAME, "evil\\x1b[2J")
    finally:
        forging.close()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["cluster", "workflows", "errors", "files", "duration_seconds", "result",
                         "name", "jobs", "kind", "x"]), children, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None, database=None)
@given(value=JSON_VALUES, wrap=st.booleans(), workflow_lines=st.lists(JSON_VALUES, max_size=3))
def test_any_json_on_the_result_pipe_is_a_result_or_an_error(value, wrap, workflow_lines):
    """What the server does with the worker's output, without a worker: never raises."""
    output = b"".join(json.dumps(line).encode() + b"\n" for line in workflow_lines)
    output += json.dumps({"result": value} if wrap else value).encode()
    result = KnownWorkflows().reader(ResultCaps())
    result.feed(output)
    outcome = Sandbox()._read_result("c", 0, result, "")
    assert isinstance(outcome, ParseResult | WorkflowError)
