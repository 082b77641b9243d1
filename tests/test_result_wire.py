"""The parse result between worker and server: a line per workflow, rebuilt one at a time,
with the unchanged lines of a cluster's last parse reused rather than decoded again."""

from __future__ import annotations

import dataclasses
import io

import pytest

from legacy_parser.model import ParseResult
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


def read(known: KnownWorkflows, output: bytes) -> ParseResult:
    """The result the server rebuilds from ``output``, fed to it at once."""
    reader = known.reader()
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
