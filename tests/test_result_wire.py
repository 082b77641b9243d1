"""The parse result between worker and server: a line per workflow, rebuilt one at a time,
with the unchanged lines of a cluster's last parse reused rather than decoded again."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import selectors
import subprocess
import sys
import time

import pytest

from legacy_parser.cluster import PYTHON_PARSER
from legacy_parser.limits import ResultCaps
from legacy_parser.model import ErrorKind, ParseResult, to_plain
from legacy_parser.result_wire import KnownWorkflows, write_rest, write_workflow
from tests.helpers import EXAMPLES, parse_repo


@pytest.fixture(scope="module")
def example_result(sandbox) -> ParseResult:
    result = parse_repo(sandbox, EXAMPLES / "python_repo", "example_python")
    assert len(result.workflows) > 2 and not result.errors
    return result


def wire(result: ParseResult) -> bytes:
    """What a worker writes for ``result``."""
    stream = io.StringIO()
    for workflow in result.workflows:
        write_workflow(stream, workflow)
    write_rest(stream, result)
    return stream.getvalue().encode()


DEFAULT_CAPS = ResultCaps()


def read(known: KnownWorkflows, output: bytes, caps: ResultCaps = DEFAULT_CAPS) -> ParseResult:
    """The result the server rebuilds from ``output``, fed to it at once."""
    reader = known.reader(caps)
    reader.feed(output)
    return reader.finish()


def test_a_result_comes_back_equal_with_a_line_per_workflow(example_result):
    output = wire(example_result)
    assert output.count(b"\n") == len(example_result.workflows)
    assert read(KnownWorkflows(), output) == example_result


def test_unchanged_lines_reuse_the_workflow_of_the_last_parse(example_result):
    known = KnownWorkflows()
    first = read(known, wire(example_result))
    changed = example_result.workflows[1]
    edited = dataclasses.replace(example_result, workflows=(
        example_result.workflows[0], dataclasses.replace(changed, line=changed.line + 1),
        *example_result.workflows[2:]))
    second = read(known, wire(edited))
    assert second == edited
    reused = [new is old for new, old in zip(second.workflows, first.workflows, strict=True)]
    assert reused == [index != 1 for index in range(len(reused))]


def test_a_malformed_result_leaves_the_known_workflows_as_they_were(example_result):
    known = KnownWorkflows()
    first = read(known, wire(example_result))
    output = wire(example_result)
    with pytest.raises(ValueError):
        read(known, output[:-5])  # the last line cut short
    again = read(known, output)
    assert all(new is old for new, old in zip(again.workflows, first.workflows, strict=True))


def test_equal_names_are_one_object(example_result):
    """A job's name in its children's parents is the job's own name string, not a copy."""
    result = read(KnownWorkflows(), wire(example_result))
    for workflow in result.workflows:
        jobs = {job.name: job for job in workflow.jobs}
        for job in workflow.jobs:
            for parent in job.parents:
                assert parent is jobs[parent].name
            assert job.inputs is job.parents or job.inputs != job.parents


def _largest(result: ParseResult) -> tuple[str, int]:
    """The name and job count of the workflow with the most jobs (the only one with so many)."""
    counts = sorted((len(w.jobs), w.name) for w in result.workflows)
    assert counts[-1][0] > counts[-2][0]
    return counts[-1][1], counts[-1][0]


def test_a_workflow_over_the_caps_is_its_error_each_time_it_is_read(example_result):
    """An unchanged line reuses the workflow and the verdict on it: a workflow the caps
    refused once is refused again, not served because it was seen before."""
    name, jobs = _largest(example_result)
    caps = ResultCaps(max_jobs_per_workflow=jobs - 1)
    known = KnownWorkflows()
    output = wire(example_result)
    for _ in range(2):
        result = read(known, output, caps)
        assert name not in {w.name for w in result.workflows}
        assert len(result.workflows) == len(example_result.workflows) - 1
        [error] = result.errors
        assert (error.kind, error.workflow) == (ErrorKind.RESULT_TOO_LARGE, name)
        assert f"{jobs} jobs; at most {jobs - 1}" in error.message


def test_other_caps_judge_the_known_workflows_again(example_result):
    name, jobs = _largest(example_result)
    known = KnownWorkflows()
    output = wire(example_result)
    assert read(known, output) == example_result
    tighter = read(known, output, ResultCaps(max_jobs_per_workflow=jobs - 1))
    assert [error.workflow for error in tighter.errors] == [name]
    assert read(known, output) == example_result


def test_workflows_in_the_last_line_are_a_malformed_result(example_result):
    """The worker writes each workflow on a line of its own, where the caps check it; the
    last line carrying workflows is output the worker did not write."""
    stream = io.StringIO()
    stream.write(json.dumps({"result": to_plain(example_result)}))
    with pytest.raises(ValueError, match="last line"):
        read(KnownWorkflows(), stream.getvalue().encode())


def test_unchanged_files_come_back_as_the_objects_of_the_last_parse(example_result):
    """A re-parse of a large tree lists the same files again; objects of the last result
    are given for those whose digest did not change, new ones for the others."""
    assert len(example_result.files) > 2
    known = KnownWorkflows()
    first = read(known, wire(example_result))
    changed = example_result.files[1]
    files = list(example_result.files)
    files[1] = dataclasses.replace(changed, sha256="0" * 64)
    edited = dataclasses.replace(example_result, files=tuple(files))
    second = read(known, wire(edited))
    assert second == edited
    reused = [new is old for new, old in zip(second.files, first.files, strict=True)]
    assert reused == [index != 1 for index in range(len(reused))]


STREAMED = '''
import os
import time
from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig


class WaitingTemplate(CommandJobTemplate):
    """Built only once the test has seen the line of the workflow defined before it."""

    def get_pinball_job(self, inputs, outputs, params):
        while not os.path.exists(os.environ["RELEASE"]):
            time.sleep(0.01)
        return super(WaitingTemplate, self).get_pinball_job(inputs, outputs, params)


DAILY = ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))
FINAL = JobConfig(CommandJobTemplate('final', 'echo done'))
WORKFLOWS = {
    'zz_first': WorkflowConfig(jobs={'a': JobConfig(CommandJobTemplate('a', 'echo a'))},
                               final_job_config=FINAL, schedule=DAILY),
    'aa_second': WorkflowConfig(jobs={'b': JobConfig(WaitingTemplate('b', 'echo b'))},
                                final_job_config=FINAL, schedule=DAILY),
}
'''


def test_the_worker_writes_each_workflow_as_soon_as_it_is_built(tmp_path):
    """The server rebuilds a workflow while the worker builds the next, and the worker
    need not hold every workflow's model: the first workflow's line arrives while the
    second is still being built (its template waits for the test to have read it)."""
    repo = tmp_path / "repo"
    (repo / "streamed").mkdir(parents=True)
    (repo / "streamed" / "__init__.py").write_text("")
    (repo / "streamed" / "workflows.py").write_text(STREAMED)
    release = tmp_path / "release"
    request = {
        "cluster": "streamed", "repo_root": str(repo), "parser": PYTHON_PARSER,
        "parser_params": {"workflows_config": "streamed.workflows.WORKFLOWS"},
        "default_email": "", "run_as": None, "memory_bytes": 0, "cpu_seconds": 0,
        "max_processes": 0, "max_open_files": 0, "max_file_bytes": 0,
        "caps": dataclasses.asdict(DEFAULT_CAPS)}
    worker = subprocess.Popen([sys.executable, "-m", "legacy_parser.worker"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env={**os.environ,
                                                              "RELEASE": str(release)})
    try:
        worker.stdin.write(json.dumps(request).encode())
        worker.stdin.close()
        first = _first_line(worker.stdout, timeout=30)
        release.touch()
        rest = worker.stdout.read()
        assert worker.wait(timeout=60) == 0
    finally:
        release.touch()
        worker.kill()
        worker.wait()
    assert json.loads(first)["name"] == "zz_first"
    result = read(KnownWorkflows(), first + rest)
    assert [w.name for w in result.workflows] == ["aa_second", "zz_first"]  # by name
    assert result.errors == ()


def _first_line(stream, timeout: float) -> bytes:
    """The first line on ``stream``; fails after ``timeout`` seconds without one."""
    os.set_blocking(stream.fileno(), False)
    received = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while b"\n" not in received:
            left = deadline - time.monotonic()
            assert left > 0, f"no line from the worker after {timeout} s: {received[:200]!r}"
            if selector.select(left):
                chunk = os.read(stream.fileno(), 65536)
                assert chunk, "the worker ended without writing a line"
                received += chunk
    os.set_blocking(stream.fileno(), True)
    line, _, more = received.partition(b"\n")
    assert not more, "the worker wrote past the first line before it was released"
    return line + b"\n"


def test_what_is_prepared_of_a_workflow_is_made_as_it_arrives_and_kept_while_it_is(
        example_result):
    """The service builds each workflow's spec as its line arrives; an unchanged line
    keeps the spec built for it, and a workflow over the caps gets none."""
    made: list[str] = []

    def prepare(workflow):
        made.append(workflow.name)
        return object()

    name, jobs = _largest(example_result)
    caps = ResultCaps(max_jobs_per_workflow=jobs - 1)
    known = KnownWorkflows(prepare)
    reader = known.reader(caps)
    output = wire(example_result)
    first_line = output[:output.index(b"\n") + 1]
    reader.feed(first_line)
    assert len(made) == (0 if json.loads(first_line)["name"] == name else 1)  # no waiting
    reader.feed(output[len(first_line):])
    first = reader.finish()
    assert sorted(made) == sorted(w.name for w in first.workflows) and name not in made
    kept = {w.name: known.prepared(w) for w in first.workflows}

    index, changed = next((i, w) for i, w in enumerate(example_result.workflows)
                          if w.name != name)
    workflows = list(example_result.workflows)
    workflows[index] = dataclasses.replace(changed, line=changed.line + 1)
    edited = dataclasses.replace(example_result, workflows=tuple(workflows))
    made.clear()
    second = read(known, wire(edited), caps)
    assert made == [changed.name]
    for workflow in second.workflows:
        assert (known.prepared(workflow) is kept[workflow.name]) == (workflow.name != changed.name)
