"""The parse result between worker and server: a line per workflow, rebuilt one at a time,
with the unchanged lines of a cluster's last parse reused rather than decoded again."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest

from legacy_parser.limits import ResultCaps
from legacy_parser.model import ErrorKind, ParseResult, to_plain
from legacy_parser.result_wire import KnownWorkflows, write_result
from tests.helpers import EXAMPLES, parse_repo


@pytest.fixture(scope="module")
def example_result(sandbox) -> ParseResult:
    result = parse_repo(sandbox, EXAMPLES / "python_repo", "example_python")
    assert len(result.workflows) > 2 and not result.errors
    return result


def wire(result: ParseResult) -> bytes:
    stream = io.StringIO()
    write_result(stream, result)
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
