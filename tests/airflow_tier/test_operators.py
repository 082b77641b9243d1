"""MigratedJobOperator in local mode, called directly."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from airflow.sdk.exceptions import AirflowException
from airflow_helpers import killed_while_running

from tests.helpers import process_ended, wait_for
from token_fetcher.airflow.operators import MigratedJobOperator

# The end_date example of docs/pinball-compatibility.md.
RUN_TIME = datetime(2015, 2, 2, 0, 0, 1, tzinfo=UTC)


def operator(segments, tmp_path, **kwargs) -> MigratedJobOperator:
    return MigratedJobOperator(
        task_id="job",
        cluster="c",
        workflow="w",
        job="job",
        fingerprint="f" * 64,
        command_segments=segments,
        cwd=str(tmp_path),
        **kwargs,
    )


def test_renders_end_date_runs_in_cwd_and_succeeds(tmp_path):
    out = tmp_path / "out.txt"
    op = operator(['echo "end_date=', f'" > {out}; pwd >> {out}'], tmp_path)
    op.execute({"data_interval_end": RUN_TIME})
    assert out.read_text().splitlines() == ["end_date=2015-02-01", str(tmp_path)]


def test_a_non_zero_exit_fails_the_task(tmp_path):
    op = operator(["echo about to fail; exit 3"], tmp_path)
    with pytest.raises(AirflowException, match="exited 3"):
        op.execute({"data_interval_end": RUN_TIME})


def test_the_warn_timeout_notifies_without_stopping_the_job(tmp_path):
    fired = threading.Event()
    op = operator(["sleep 1.5; echo done > out.txt"], tmp_path, warn_timeout_seconds=1)
    op._warn_timeout = lambda context: fired.set()
    op.execute({"data_interval_end": RUN_TIME})
    assert fired.is_set()
    assert (tmp_path / "out.txt").read_text() == "done\n"


def test_the_process_group_is_stopped_when_the_task_is_killed(tmp_path):
    op = operator(["sleep 60 & echo $! > child.pid; wait"], tmp_path)
    pid_file = tmp_path / "child.pid"
    errors = killed_while_running(op, {"data_interval_end": RUN_TIME}, pid_file)
    assert errors  # killed: non-zero exit
    # The background child got the signal too: gone, or a zombie waiting for a reaper.
    child = int(pid_file.read_text())
    wait_for(lambda: process_ended(child), 10, message="the child to stop")
