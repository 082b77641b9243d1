"""Every error the parser reports, where it reports it, and the sandbox under attack.

One test per case of examples/broken (kind, workflow, job, file and line as CASES.md
describes them, and the good workflow beside the bad one still returned), the cases of
docs/pinball-compatibility.md ("stricter than Pinball") the examples do not cover, the
hostile definitions, and the isolation guarantees of the sandbox.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from legacy_parser.isolation import SandboxLimits
from legacy_parser.model import ErrorKind, ParseResult
from legacy_parser.sandbox import Sandbox
from tests.helpers import (
    EXAMPLES,
    JSON_PARSER,
    PY_PARSER,
    json_job,
    json_schedule,
    json_workflow,
    parse_repo,
    parse_workers,
    wait_for,
    write_repo,
)

BROKEN = EXAMPLES / "broken"
HOSTILE_LIMITS = SandboxLimits(timeout_seconds=5, memory_bytes=512 * 1024 * 1024)


# --- examples/broken: one case per error kind ---------------------------------------------------

# directory -> (good workflows returned, [(kind, workflow, job, file, line, message parts)])
BROKEN_CASES: dict[str, tuple[list[str], list[tuple]]] = {
    "syntax_error": ([], [
        (ErrorKind.SYNTAX_ERROR, "", "", "syntax_error_workflows/daily.py", 9,
         ["SyntaxError", "expected ':'"]),
    ]),
    "import_error": ([], [
        (ErrorKind.IMPORT_ERROR, "", "", "import_error_workflows/workflows.py", 8,
         ["No module named 'ads_common'"]),
    ]),
    "exception_at_import": ([], [
        (ErrorKind.EXCEPTION_AT_IMPORT, "", "", "exception_at_import_workflows/workflows.py", 8,
         ["ValueError", "day is out of range for month"]),
    ]),
    "missing_workflows": ([], [
        (ErrorKind.MISSING_WORKFLOWS, "", "", "missing_workflows_defs/workflows.py", 0,
         ["'missing_workflows_defs.workflows'", "no attribute 'WORKFLOWS'"]),
    ]),
    "not_a_dict": ([], [
        (ErrorKind.NOT_A_DICT, "", "", "not_a_dict_workflows/workflows.py", 0,
         ["not_a_dict_workflows.workflows.WORKFLOWS is a list", "not a dict"]),
    ]),
    "missing_parent": (["good_daily"], [
        (ErrorKind.MISSING_PARENT, "bad_daily", "load", "missing_parent_workflows/workflows.py",
         19, ["'load'", "'extrct'"]),
    ]),
    "reserved_job_name": (["good_daily"], [
        (ErrorKind.RESERVED_JOB_NAME, "bad_daily", "final",
         "reserved_job_name_workflows/workflows.py", 19, ["'final'"]),
    ]),
    "cycle": (["good_daily"], [
        (ErrorKind.CYCLE, "bad_daily", "a", "cycle_workflows/workflows.py", 18,
         ["a -> b -> c -> a"]),
    ]),
    "cycle_unreachable": (["good_daily"], [
        (ErrorKind.CYCLE, "bad_daily", "a", "cycle_unreachable_workflows/workflows.py", 22,
         ["a -> b -> a"]),
    ]),
    "invalid_recurrence": (["good_daily"], [
        (ErrorKind.INVALID_RECURRENCE, "zero_recurrence", "",
         "invalid_recurrence_workflows/workflows.py", 19, ["recurrence", "(0 s)"]),
        (ErrorKind.INVALID_RECURRENCE, "negative_recurrence", "",
         "invalid_recurrence_workflows/workflows.py", 23, ["recurrence", "(-3600 s)"]),
    ]),
    "unknown_overrun_policy": (["good_daily"], [
        (ErrorKind.UNKNOWN_OVERRUN_POLICY, "bad_daily", "",
         "unknown_overrun_policy_workflows/workflows.py", 19, ["unknown overrun policy 99"]),
    ]),
    "unknown_overrun_policy_json": (["good_daily"], [
        (ErrorKind.UNKNOWN_OVERRUN_POLICY, "bad_daily", "", "repo/workflow/bad_daily/schedule",
         0, ["unknown overrun policy 'SOMETIMES'"]),
    ]),
    "command_format": (["good_daily"], [
        (ErrorKind.COMMAND_FORMAT, "missing_param", "export",
         "command_format_workflows/workflows.py", 19, ["no parameter 'no_such_param'"]),
        (ErrorKind.COMMAND_FORMAT, "lone_percent", "check_disk",
         "command_format_workflows/workflows.py", 26,
         ["'echo disk usage above 90%'", "incomplete format"]),
    ]),
    "wrong_template_type": (["good_daily"], [
        (ErrorKind.WRONG_TEMPLATE_TYPE, "string_template", "report",
         "wrong_template_type_workflows/workflows.py", 24, ["'report'", "builtins.str"]),
        (ErrorKind.WRONG_TEMPLATE_TYPE, "object_template", "report",
         "wrong_template_type_workflows/workflows.py", 28,
         ["'report'", "wrong_template_type_workflows.workflows.ReportSpec"]),
    ]),
    "unknown_attribute": (["good_daily"], [
        (ErrorKind.UNKNOWN_ATTRIBUTE, "bad_daily", "LoadJob",
         "repo/workflow/bad_daily/job/LoadJob", 0, ["unknown attribute(s): owner"]),
    ]),
    "missing_attribute": (["good_daily"], [
        (ErrorKind.MISSING_ATTRIBUTE, "bad_daily", "LoadJob",
         "repo/workflow/bad_daily/job/LoadJob", 0, ["missing attribute(s): priority"]),
    ]),
    "invalid_json": (["good_daily"], [
        (ErrorKind.INVALID_JSON, "bad_daily", "LoadJob", "repo/workflow/bad_daily/job/LoadJob",
         15, ["invalid JSON", "line 15 column 1"]),
    ]),
    "condition_with_parents": (["good_daily"], [
        (ErrorKind.CONDITION_WITH_PARENTS, "bad_daily", "load_ready",
         "repo/workflow/bad_daily/job/load_ready", 0, ["'load_ready'", "'ExtractJob'"]),
    ]),
}

# The good_daily workflows beside the bad ones, in each format.
GOOD_PYTHON_JOBS = {"extract": ((), 3.0), "load": (("extract",), 2.0),
                    "final": (("load",), 1.0)}
GOOD_JSON_JOBS = {"ExtractJob": ((), 2.0), "LoadJob": (("ExtractJob",), 1.0)}


def cases_md_table() -> dict[str, set[str]]:
    """CASES.md's first table: directory -> the error kinds it names."""
    table = {}
    for line in (BROKEN / "CASES.md").read_text().splitlines():
        match = re.match(r"\| `([a-z_]+)` \| (?:Python|JSON) \| `([a-z_]+)`", line)
        if match:
            table[match.group(1)] = {match.group(2)}
    return table


def test_every_broken_case_is_tested_with_the_kind_cases_md_names():
    directories = {p.name for p in BROKEN.iterdir() if p.is_dir() and p.name != "hostile"}
    assert set(BROKEN_CASES) == directories
    assert cases_md_table() == {
        name: {str(error[0]) for error in errors} for name, (_, errors) in BROKEN_CASES.items()}


@pytest.mark.parametrize("case", sorted(BROKEN_CASES))
def test_broken_case(sandbox, case):
    good, expected = BROKEN_CASES[case]
    result = parse_repo(sandbox, BROKEN / case, case)
    assert [(e.kind, e.workflow, e.job, e.file, e.line) for e in result.errors] == \
        [error[:5] for error in expected]
    for error, (*_, parts) in zip(result.errors, expected, strict=True):
        assert error.cluster == case
        for part in parts:
            assert part in error.message, (part, error.message)
        # the error names its place when printed
        assert f"cluster {case}" in str(error)
        assert error.file in str(error)
    # One bad workflow never hides the good one beside it.
    assert [workflow.name for workflow in result.workflows] == good
    for workflow in result.workflows:
        jobs = GOOD_JSON_JOBS if (BROKEN / case / "repo").is_dir() else GOOD_PYTHON_JOBS
        assert {job.name: (job.parents, job.score) for job in workflow.jobs} == jobs


def test_a_syntax_error_file_is_listed_for_change_detection(sandbox):
    result = parse_repo(sandbox, BROKEN / "syntax_error", "syntax_error")
    assert "syntax_error_workflows/daily.py" in [source.path for source in result.files]


# --- stricter than Pinball (docs/pinball-compatibility.md), beyond examples/broken ------------

STRICT_PYTHON = {
    "strict_defs/__init__.py": "",
    "strict_defs/workflows.py": '''
        from datetime import datetime, timedelta

        from pinball_ext.job_templates import CommandJobTemplate
        from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

        DAILY = ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))
        FINAL = JobConfig(CommandJobTemplate('final', 'echo done'))

        WORKFLOWS = {
            'lenient': WorkflowConfig(
                jobs={
                    'first': JobConfig(CommandJobTemplate('first', 'echo 1'), dependency=None),
                    'second': JobConfig(CommandJobTemplate('second', 'echo 2')),
                },
                final_job_config=FINAL,
                schedule=DAILY,
                notify_emails=None),
            'hidden_cycle': WorkflowConfig(
                jobs={
                    'report': JobConfig(CommandJobTemplate('report', 'echo report')),
                    'feed': JobConfig(CommandJobTemplate('feed', 'echo feed')),
                    'ping': JobConfig(CommandJobTemplate('ping', 'echo ping'),
                                      dependency=['feed', 'pong']),
                    'pong': JobConfig(CommandJobTemplate('pong', 'echo pong'),
                                      dependency=['ping']),
                },
                final_job_config=FINAL,
                schedule=DAILY),
            'self_loop': WorkflowConfig(
                jobs={'again': JobConfig(CommandJobTemplate('again', 'echo'),
                                         dependency=['again'])},
                final_job_config=FINAL,
                schedule=DAILY),
            'string_dependency': WorkflowConfig(
                jobs={
                    'extract': JobConfig(CommandJobTemplate('extract', 'echo extract')),
                    'load': JobConfig(CommandJobTemplate('load', 'echo load'),
                                      dependency='extract'),
                },
                final_job_config=FINAL,
                schedule=DAILY),
            'hourly_negative': WorkflowConfig(
                jobs={'a': JobConfig(CommandJobTemplate('a', 'echo a'))},
                final_job_config=FINAL,
                schedule=ScheduleConfig(timedelta(minutes=-30), datetime(2015, 1, 1))),
        }
    ''',
}


@pytest.fixture(scope="module")
def strict_python(sandbox, tmp_path_factory) -> ParseResult:
    repo = write_repo(tmp_path_factory.mktemp("strict_python"), STRICT_PYTHON)
    return sandbox.parse("strict", str(repo), PY_PARSER,
                         {"workflows_config": "strict_defs.workflows.WORKFLOWS"})


def error_for(result: ParseResult, workflow: str):
    errors = result.errors_for(workflow)
    assert len(errors) == 1, result.errors
    return errors[0]


def test_dependency_none_and_notify_emails_none_are_accepted_as_empty(strict_python):
    assert [workflow.name for workflow in strict_python.workflows] == ["lenient"]
    lenient = strict_python.workflows[0]
    assert lenient.notify_emails == ()
    assert lenient.schedule.emails == ()
    for name in ("first", "second"):
        job = lenient.job(name)
        assert job.parents == ()
        assert job.inputs == ("__WORKFLOW_START__",)
        assert job.children == ("final",)
    assert lenient.job("final").parents == ("first", "second")


def test_a_cycle_that_reaches_no_leaf_is_reported(strict_python):
    # Pinball searches only from the final job, so ping and pong (and feed, whose only
    # child is ping) would silently vanish from its tokens.
    error = error_for(strict_python, "hidden_cycle")
    assert (error.kind, error.job, error.file, error.line) == (
        ErrorKind.CYCLE, "ping", "strict_defs/workflows.py", 22)
    assert "ping -> pong -> ping" in error.message


def test_a_job_depending_on_itself_is_a_cycle(strict_python):
    error = error_for(strict_python, "self_loop")
    assert (error.kind, error.job, error.file, error.line) == (
        ErrorKind.CYCLE, "again", "strict_defs/workflows.py", 30)
    assert "again -> again" in error.message


def test_a_dependency_that_is_a_string_is_an_error(strict_python):
    error = error_for(strict_python, "string_dependency")
    assert (error.kind, error.job, error.file, error.line) == (
        ErrorKind.INVALID_DEFINITION, "load", "strict_defs/workflows.py", 37)
    assert "'extract'" in error.message and "list" in error.message


def test_a_negative_recurrence_is_an_error(strict_python):
    error = error_for(strict_python, "hourly_negative")
    assert (error.kind, error.job, error.file, error.line) == (
        ErrorKind.INVALID_RECURRENCE, "", "strict_defs/workflows.py", 45)
    assert "(-1800 s)" in error.message


def test_a_missing_workflows_module_is_an_import_error_without_a_pseudo_file(sandbox,
                                                                           tmp_path):
    repo = write_repo(tmp_path, {"defs/__init__.py": ""})
    result = sandbox.parse("nomodule", str(repo), PY_PARSER,
                           {"workflows_config": "defs.no_such_module.WORKFLOWS"})
    assert [(e.kind, e.workflow, e.job, e.file, e.line) for e in result.errors] == [
        (ErrorKind.IMPORT_ERROR, "", "", "", 0)]
    assert "No module named 'defs.no_such_module'" in result.errors[0].message


@pytest.mark.parametrize(("params", "fragment"), [
    ({}, "workflows_config must be a dotted path"),
    ({"workflows_config": "WORKFLOWS"}, "got 'WORKFLOWS'"),
])
def test_a_bad_workflows_config_param_is_a_config_error(sandbox, tmp_path, params, fragment):
    result = sandbox.parse("noconfig", str(tmp_path), PY_PARSER, params)
    assert [(e.kind, e.cluster) for e in result.errors] == [
        (ErrorKind.INVALID_CONFIG, "noconfig")]
    assert fragment in result.errors[0].message


def test_an_unknown_parser_is_a_config_error(sandbox, tmp_path):
    result = sandbox.parse("weird", str(tmp_path), "pinball.parser.OtherParser", {})
    assert [e.kind for e in result.errors] == [ErrorKind.INVALID_CONFIG]
    assert "'pinball.parser.OtherParser'" in result.errors[0].message


STRICT_JSON: dict[str, str] = {
    "strict_templates.py": '''
        class NotATemplate(object):
            def __init__(self, name, max_attempts=1, emails=None, priority=None):
                self.name = name
    ''',
}
for _name, _jobs, _schedule in [
    ("good", {"a": json_job("good", "a")}, {}),
    ("renamed", {"a": json_job("renamed", "b")}, {}),
    ("json_cycle", {"a": json_job("json_cycle", "a", parents=["b"]),
                    "b": json_job("json_cycle", "b", parents=["a"]),
                    "c": json_job("json_cycle", "c")}, {}),
    ("json_missing_parent", {"a": json_job("json_missing_parent", "a", parents=["nope"])}, {}),
    ("zero_days", {"a": json_job("zero_days", "a")}, {"recurrence": "0d"}),
    ("negative_days", {"a": json_job("negative_days", "a")}, {"recurrence": "-1d"}),
    ("months", {"a": json_job("months", "a")}, {"recurrence": "1m"}),
    ("bad_time", {"a": json_job("bad_time", "a")}, {"time": "6pm"}),
    ("job_as_condition", {"a": json_job("job_as_condition", "a", is_condition=True)}, {}),
    ("condition_as_job", {"a": json_job(
        "condition_as_job", "a", template="pinball_ext.job_templates.CommandConditionTemplate",
        template_params={"command": "true"})}, {}),
    ("not_a_template", {"a": json_job("not_a_template", "a",
                                      template="strict_templates.NotATemplate")}, {}),
    ("missing_module", {"a": json_job("missing_module", "a",
                                      template="no_such_module.Template")}, {}),
    ("missing_class", {"a": json_job("missing_class", "a",
                                     template="strict_templates.Nope")}, {}),
]:
    STRICT_JSON.update(json_workflow(_name, _jobs, **_schedule))
STRICT_JSON["workflow/wrong_folder/schedule"] = json_schedule("elsewhere")
STRICT_JSON["workflow/wrong_folder/job/a"] = json_job("wrong_folder", "a")

STRICT_JSON_ERRORS = {
    # workflow: (kind, job, file, message parts)
    "renamed": (ErrorKind.INVALID_DEFINITION, "a", "workflow/renamed/job/a",
                ["job 'b'", "renamed/job/a"]),
    "wrong_folder": (ErrorKind.INVALID_DEFINITION, "", "workflow/wrong_folder/schedule",
                     ["'elsewhere'", "'wrong_folder'"]),
    "json_cycle": (ErrorKind.CYCLE, "a", "workflow/json_cycle/job/a", ["a -> b -> a"]),
    "json_missing_parent": (ErrorKind.MISSING_PARENT, "a", "workflow/json_missing_parent/job/a",
                            ["'nope'"]),
    "zero_days": (ErrorKind.INVALID_RECURRENCE, "", "workflow/zero_days/schedule", ["'0d'"]),
    "negative_days": (ErrorKind.INVALID_RECURRENCE, "", "workflow/negative_days/schedule",
                      ["'-1d'"]),
    "months": (ErrorKind.INVALID_RECURRENCE, "", "workflow/months/schedule", ["'1m'"]),
    "bad_time": (ErrorKind.INVALID_SCHEDULE, "", "workflow/bad_time/schedule", ["'6pm'"]),
    "job_as_condition": (ErrorKind.WRONG_TEMPLATE_TYPE, "a", "workflow/job_as_condition/job/a",
                         ["pinball_ext.job_templates.JobTemplate", "the job is a condition"]),
    "condition_as_job": (ErrorKind.WRONG_TEMPLATE_TYPE, "a", "workflow/condition_as_job/job/a",
                         ["pinball_ext.job_templates.CommandConditionTemplate",
                          "the job is not a condition"]),
    "not_a_template": (ErrorKind.WRONG_TEMPLATE_TYPE, "a", "workflow/not_a_template/job/a",
                       ["strict_templates.NotATemplate"]),
    "missing_module": (ErrorKind.IMPORT_ERROR, "a", "workflow/missing_module/job/a",
                       ["No module named 'no_such_module'"]),
    "missing_class": (ErrorKind.IMPORT_ERROR, "a", "workflow/missing_class/job/a",
                      ["'strict_templates'", "'Nope'"]),
}


@pytest.fixture(scope="module")
def strict_json(sandbox, tmp_path_factory) -> ParseResult:
    repo = write_repo(tmp_path_factory.mktemp("strict_json"), STRICT_JSON)
    return sandbox.parse("strict_json", str(repo), JSON_PARSER, {})


def test_json_good_workflow_survives_its_broken_neighbours(strict_json):
    assert [workflow.name for workflow in strict_json.workflows] == ["good"]
    assert sorted(error.workflow for error in strict_json.errors) == sorted(STRICT_JSON_ERRORS)


@pytest.mark.parametrize("workflow", sorted(STRICT_JSON_ERRORS))
def test_json_strict_case(strict_json, workflow):
    kind, job, file, parts = STRICT_JSON_ERRORS[workflow]
    error = error_for(strict_json, workflow)
    assert (error.kind, error.cluster, error.job, error.file, error.line) == \
        (kind, "strict_json", job, file, 0)
    for part in parts:
        assert part in error.message, (part, error.message)


# --- hostile definitions ------------------------------------------------------------------

HOSTILE_CASES = {
    # case: (kind, file, line, message part)
    "infinite_loop": (ErrorKind.TIMEOUT, "", 0, "longer than the 5 s limit"),
    "sys_exit": (ErrorKind.EXCEPTION_AT_IMPORT, "sys_exit_workflows/workflows.py", 5,
                 "sys.exit(3)"),
    "os_exit": (ErrorKind.WORKER_CRASHED, "", 0, "exited with code 7"),
    "segfault": (ErrorKind.WORKER_CRASHED, "", 0, "SIGSEGV"),
    "unbounded_memory": (ErrorKind.MEMORY_LIMIT, "unbounded_memory_workflows/workflows.py", 5,
                         "MemoryError"),
    "deep_recursion": (ErrorKind.EXCEPTION_AT_IMPORT, "deep_recursion_workflows/workflows.py", 5,
                       "RecursionError"),
}


@pytest.fixture(scope="module")
def hostile_sandbox() -> Sandbox:
    box = Sandbox(HOSTILE_LIMITS)
    yield box
    box.close()


def test_every_hostile_case_is_tested():
    assert set(HOSTILE_CASES) == {p.name for p in (BROKEN / "hostile").iterdir() if p.is_dir()}


@pytest.mark.parametrize("case", sorted(HOSTILE_CASES))
def test_hostile_definition_is_contained(hostile_sandbox, case):
    kind, file, line, part = HOSTILE_CASES[case]
    started = time.monotonic()
    result = parse_repo(hostile_sandbox, BROKEN / "hostile" / case, case)
    elapsed = time.monotonic() - started
    assert result.workflows == ()
    assert [(e.kind, e.cluster, e.workflow, e.job, e.file, e.line) for e in result.errors] == \
        [(kind, case, "", "", file, line)]
    assert part in result.errors[0].message
    limit = HOSTILE_LIMITS.timeout_seconds
    assert elapsed < limit + 3 if kind is ErrorKind.TIMEOUT else elapsed < limit
    # The worker is replaced: the same sandbox parses a good repo right after.
    good = parse_repo(hostile_sandbox, EXAMPLES / "python_repo", "example_python")
    assert good.errors == ()
    assert len(good.workflows) == 7


def test_the_shims_never_leak_into_the_calling_process(sandbox):
    result = parse_repo(sandbox, EXAMPLES / "python_repo", "example_python")
    assert result.errors == ()
    leaked = [name for name in sys.modules
              if name.split(".")[0] in ("pinball", "pinball_ext")]
    assert leaked == []
    assert "pinball" not in sys.modules and "pinball_ext" not in sys.modules
    assert not any(type(finder).__name__ == "_ShimFinder" for finder in sys.meta_path)
    repo_root = str((EXAMPLES / "python_repo").resolve())
    assert repo_root not in sys.path
    assert not any(name.startswith("example_workflows") for name in sys.modules)


GATED_DEFS = '''
    """Blocks at import until the test opens, then closes, the gate fifo."""
    import os

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'gate')) as gate:
        gate.read()

    WORKFLOWS = {}
'''


def open_fifo_writer(path: Path) -> int | None:
    """The fifo's writing end, once a reader has it open (None before)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ENXIO:  # no reader yet
            return None
        raise


def test_a_worker_killed_mid_parse_is_reported_and_replaced(tmp_path):
    repo = write_repo(tmp_path, {"gated_defs/__init__.py": "",
                                 "gated_defs/workflows.py": GATED_DEFS})
    gate = repo / "gated_defs" / "gate"
    os.mkfifo(gate)
    sandbox = Sandbox(SandboxLimits(timeout_seconds=30, memory_bytes=1024**3))
    writer = None
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(sandbox.parse, "gated", str(repo), PY_PARSER,
                                 {"workflows_config": "gated_defs.workflows.WORKFLOWS"})
            # The fifo opens for writing only once the worker is inside the import.
            writer = wait_for(lambda: open_fifo_writer(gate), message="the worker at the gate")
            assert not future.done()
            (worker,) = wait_for(parse_workers, message="the worker process")
            os.kill(worker.pid, signal.SIGKILL)
            result = future.result(timeout=20)
        assert result.workflows == ()
        assert [(e.kind, e.cluster) for e in result.errors] == [
            (ErrorKind.WORKER_CRASHED, "gated")]
        assert "SIGKILL" in result.errors[0].message
        wait_for(lambda: not parse_workers(), message="the killed worker to be reaped")
        # the next parse gets a fresh worker
        good = parse_repo(sandbox, EXAMPLES / "python_repo", "example_python")
        assert good.errors == ()
        assert len(good.workflows) == 7
    finally:
        if writer is not None:
            os.close(writer)
        sandbox.close()


def test_a_closed_sandbox_refuses_to_parse(tmp_path):
    from legacy_parser.sandbox import SandboxClosed

    sandbox = Sandbox(HOSTILE_LIMITS)
    sandbox.close()
    with pytest.raises(SandboxClosed):
        sandbox.parse("closed", str(tmp_path), PY_PARSER, {"workflows_config": "a.B"})
