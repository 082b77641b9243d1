"""The server's log says what loaded, what broke and what recovered: a summary per cluster
on each load, a WARNING per workflow that becomes broken or stale (cluster, workflow,
file:line, error kind), an INFO when it recovers, cluster-level errors as WARNING."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from tests.helpers import example_clusters, wait_for

PY, JS = "example_python", "example_json"


def write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


@pytest.fixture
def messages(caplog):
    """The catalog's log messages at a level (``messages(logging.WARNING)``), as they come."""
    caplog.set_level(logging.INFO, logger="token_fetcher.catalog")

    def at(level: int) -> list[str]:
        return [record.getMessage() for record in caplog.records
                if record.name == "token_fetcher.catalog" and record.levelno == level]

    return at


def summaries(messages, cluster: str) -> list[str]:
    return [m for m in messages(logging.INFO) if m.startswith(f"cluster {cluster}: loaded in ")]


def test_each_load_logs_a_summary_per_cluster(start_server, messages):
    start_server()
    for cluster, count in ((PY, 7), (JS, 4)):
        [summary] = summaries(messages, cluster)
        assert re.fullmatch(rf"cluster {cluster}: loaded in \d+\.\d\d s: {count} workflows "
                            rf"\({count} OK, 0 stale, 0 broken, 0 dynamic\)", summary), summary
    assert messages(logging.WARNING) == []


def test_a_syntax_error_warns_per_workflow_and_recovery_is_logged(start_server, example_copy,
                                                                  messages):
    repo = example_copy("python_repo")
    server = start_server(example_clusters(python_repo=repo))
    module = repo / "example_workflows" / "ingest.py"
    original = module.read_text()
    line = original.count("\n") + 1
    write(module, original + "def broken(:\n")
    wait_for(lambda: len(summaries(messages, PY)) == 2, message="the re-parse's summary")
    where = f"syntax_error at example_workflows/ingest.py:{line}: "
    warnings = messages(logging.WARNING)
    assert [m for m in warnings if "the parse failed" in m] == [
        m for m in warnings if m.startswith(f"cluster {PY}: the parse failed: {where}")]
    stale = [m for m in warnings if " is STALE " in m]
    assert sorted(re.match(rf"cluster {PY}: workflow (\w+) is STALE \(its last good version "
                           rf"\w+ is served\): {where}", m).group(1) for m in stale) == list(
        server.catalog.snapshot(PY).names)
    assert len(warnings) == 8
    assert summaries(messages, PY)[-1].endswith("7 workflows (0 OK, 7 stale, 0 broken, "
                                                "0 dynamic)")

    write(module, original)
    wait_for(lambda: len(summaries(messages, PY)) == 3, message="the fixed parse's summary")
    infos = messages(logging.INFO)
    assert len([m for m in infos if re.match(rf"cluster {PY}: workflow \w+ recovered: OK", m)]) \
        == 7
    assert f"cluster {PY}: the parse succeeds again" in infos
    assert len(messages(logging.WARNING)) == 8  # nothing new


def test_a_broken_workflow_is_named_with_its_job_file_and_line(start_server, example_copy,
                                                               messages):
    repo = example_copy("python_repo")
    start_server(example_clusters(python_repo=repo))
    module = repo / "example_workflows" / "maintenance.py"
    text = module.read_text()
    write(module, text.replace("dependency=['snapshot_db']", "dependency=['snapshot_dbb']"))
    wait_for(lambda: messages(logging.WARNING), message="a warning")
    line = next(number for number, content in enumerate(text.splitlines(), 1)
                if "'verify_snapshot': JobConfig(" in content)
    [warning] = messages(logging.WARNING)
    assert warning.startswith(
        f"cluster {PY}: workflow db_backup is STALE (its last good version ")
    assert f"): missing_parent at example_workflows/maintenance.py:{line}: " in warning


def test_control_characters_from_definitions_are_escaped(start_server, example_copy, messages):
    repo = example_copy("python_repo")
    start_server(example_clusters(python_repo=repo))
    module = repo / "example_workflows" / "ingest.py"
    write(module, module.read_text() + "raise ValueError('\\x1b[2J wiped\\nline two')\n")
    wait_for(lambda: messages(logging.WARNING), message="a warning")
    warnings = messages(logging.WARNING)
    assert all("\x1b" not in m and "\n" not in m for m in warnings)
    assert any("\\x1b[2J wiped\\x0aline two" in m for m in warnings)
