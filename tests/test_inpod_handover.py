"""The in-pod hand-over: the worker side and the legacy side as real local processes
sharing a directory, as the two containers of a worker pod share a volume.

Each side can be stopped at any step of the protocol (``--pause-at``) and killed there
with SIGKILL. Intervals are short (inpod_sides.py); every wait is on a condition with
a deadline.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from inpod_sides import HEARTBEAT, POLL, STALE_AFTER

from tests.helpers import process_ended, wait_for
from token_fetcher.inpod import runner
from token_fetcher.inpod.handover import Handover

SIDES = Path(__file__).with_name("inpod_sides.py")
DEADLINE = 20.0

# A command whose processes a test can find: the shell, and a child in the background.
SLEEPER = "echo $$ > shell.pid; sleep 60 & echo $! > child.pid; echo started; wait"


class Sides:
    """Starts the two sides under ``tmp_path``; kills whatever is left at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "handover"
        self.root.mkdir()
        self.work = tmp_path / "work"  # the commands' working directory
        self.work.mkdir()
        self.result = tmp_path / "result.json"
        self.processes: list[subprocess.Popen] = []

    def _start(self, *argv: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, str(SIDES), *argv],
            cwd=self.work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def legacy(self, pause_at: str | None = None) -> subprocess.Popen:
        argv = ["legacy", str(self.root)]
        if pause_at:
            argv += ["--pause-at", pause_at]
        process = self._start(*argv)
        wait_for(lambda: (self.root / runner.LEGACY_FILE).exists() or process.poll() is not None,
                 DEADLINE, message="the legacy side's heartbeat")
        assert process.poll() is None, process.stderr.read().decode()
        return process

    def worker(self, command: str, *options: str) -> subprocess.Popen:
        return self._start("worker", str(self.root), str(self.result), command, *options)

    def paused(self, side: str, step: str) -> None:
        marker = self.root / f"paused-{side}-{step}"
        wait_for(marker.exists, DEADLINE, message=f"the {side} side to reach {step!r}")

    def outcome(self, process: subprocess.Popen) -> dict:
        """The worker's result once it has exited."""
        wait_for(lambda: process.poll() is not None, DEADLINE, message="the worker to end")
        assert process.returncode == 0, process.stderr.read().decode()
        return json.loads(self.result.read_text())

    def lines(self) -> list[str]:
        path = Path(f"{self.result}.lines")
        return path.read_text().splitlines() if path.exists() else []

    def task_dirs(self) -> list[Path]:
        tasks = self.root / runner.TASKS_DIR
        return sorted(tasks.iterdir()) if tasks.exists() else []

    def exit_record(self) -> dict:
        """The exit.json of the one task folder left behind."""
        [task] = self.task_dirs()
        return wait_for(lambda: runner.read_json(str(task / runner.EXIT)), DEADLINE,
                        message="the task's exit.json")

    def pid(self, name: str) -> int:
        path = self.work / name
        wait_for(lambda: path.exists() and path.read_text().strip(), DEADLINE,
                 message=f"{name} to be written")
        return int(path.read_text())

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=DEADLINE)
            process.stderr.close()
        for name in ("shell.pid", "child.pid"):
            path = self.work / name
            pid = path.read_text().strip() if path.exists() else ""
            if pid and not process_ended(int(pid)):
                os.kill(int(pid), signal.SIGKILL)


def gone(pid: int) -> None:
    wait_for(lambda: process_ended(pid), DEADLINE, message=f"process {pid} to end")


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=DEADLINE)


@pytest.fixture
def sides(tmp_path):
    started = Sides(tmp_path)
    yield started
    started.close()


# ------------------------------------------------------------------------- a normal run


def test_output_is_streamed_and_the_exit_status_is_returned(sides):
    sides.legacy()
    worker = sides.worker(
        'echo "out $HANDOVER_TEST"; echo err >&2; pwd; printf "no newline"; exit 3'
    )
    result = sides.outcome(worker)
    assert result["outcome"]["outcome"] == runner.EXITED
    assert result["outcome"]["exit_code"] == 3
    assert sides.lines() == ["out yes", "err", str(sides.work), "no newline"]
    assert sides.task_dirs() == []  # the worker cleans up after a settled hand-over


def test_lines_reach_the_worker_while_the_command_runs(sides):
    sides.legacy()
    gate = sides.work / "gate"
    worker = sides.worker(f"echo first; while [ ! -e {gate} ]; do sleep 0.02; done; echo second")
    wait_for(lambda: sides.lines() == ["first"], DEADLINE, message="the first line, streamed")
    gate.touch()
    assert sides.outcome(worker)["outcome"]["exit_code"] == 0
    assert sides.lines() == ["first", "second"]


def test_a_signal_death_and_the_resources_are_reported(sides):
    sides.legacy()
    # About 64 MiB held by a child of the shell, and some CPU time.
    command = (
        "python3 -c 'import time; b = bytearray(64 << 20); "
        "t = time.process_time(); exec(\"while time.process_time() - t < 0.3: pass\")'; "
        "kill -9 $$"
    )
    result = sides.outcome(sides.worker(command))["outcome"]
    assert result["outcome"] == runner.EXITED
    assert result["exit_code"] == -signal.SIGKILL
    assert result["peak_memory_bytes"] >= 64 << 20
    assert result["cpu_seconds"] >= 0.3
    assert result["wall_seconds"] >= result["cpu_seconds"] - 0.05


def test_commands_are_served_one_after_another(sides):
    sides.legacy()
    for number in range(3):
        result = sides.outcome(sides.worker(f"echo run {number}"))
        assert result["outcome"]["exit_code"] == 0
    assert sides.lines() == ["run 0", "run 1", "run 2"]


# ---------------------------------------------------------------------- the timeouts


def test_the_timeout_stops_the_command_and_its_children(sides):
    sides.legacy()
    worker = sides.worker(SLEEPER, "--timeout", "1.5")
    result = sides.outcome(worker)
    assert result["error"] == "timeout"
    assert result["outcome"]["outcome"] == runner.CANCELLED
    assert "timed out after 1.5 s" in result["outcome"]["message"]
    assert "started" in sides.lines()  # output before the timeout was streamed
    gone(sides.pid("shell.pid"))
    gone(sides.pid("child.pid"))


def test_the_warn_timeout_is_reported_once_and_the_command_goes_on(sides):
    sides.legacy()
    gate = sides.work / "gate"
    worker = sides.worker(
        f"while [ ! -e {gate} ]; do sleep 0.02; done; echo finished", "--warn-after", "0.3"
    )
    wait_for(lambda: "WARN-TIMEOUT-REPORTED" in sides.lines(), DEADLINE,
             message="the warn timeout to be reported")
    gate.touch()
    result = sides.outcome(worker)
    assert result["outcome"]["exit_code"] == 0
    assert sides.lines() == ["WARN-TIMEOUT-REPORTED", "finished"]


# ------------------------------------------------------------- a killed worker side


def test_a_worker_killed_before_its_request_leaves_nothing_to_run(sides):
    sides.legacy()
    worker = sides.worker(SLEEPER, "--pause-at", "created")
    sides.paused("worker", "created")
    kill(worker)
    [task] = sides.task_dirs()
    # No request was written: the runner never claims it, however long it looks.
    assert not (task / runner.REQUEST).exists()
    result = sides.outcome(sides.worker("echo next"))  # the runner still serves
    assert result["outcome"]["exit_code"] == 0
    assert not (sides.work / "shell.pid").exists()


@pytest.mark.parametrize("step", ["requested", "following"])
def test_a_worker_killed_after_its_request_leaves_no_legacy_process(sides, step):
    sides.legacy()
    worker = sides.worker(SLEEPER, "--pause-at", step)
    sides.paused("worker", step)
    kill(worker)
    record = sides.exit_record()
    assert record["outcome"] == runner.ABANDONED, record
    if (sides.work / "shell.pid").exists():  # killed after the command started
        gone(sides.pid("shell.pid"))
        gone(sides.pid("child.pid"))


def test_a_worker_killed_after_the_exit_leaves_the_result_behind(sides):
    sides.legacy()
    worker = sides.worker("echo done", "--pause-at", "ended")
    sides.paused("worker", "ended")
    kill(worker)
    assert sides.exit_record()["exit_code"] == 0


# ------------------------------------------------------------- a killed legacy side


def test_no_legacy_side_fails_the_hand_over_after_the_ready_timeout(sides):
    result = sides.outcome(sides.worker("echo never", "--ready-timeout", "0.5"))
    assert result["error"] == "LegacyUnavailable"
    assert "no legacy runner is serving" in result["message"]
    assert sides.task_dirs() == []


def test_a_legacy_side_killed_before_claiming_fails_the_worker(sides):
    legacy = sides.legacy()
    kill(legacy)
    result = sides.outcome(sides.worker("echo never", "--ready-timeout", "0.5"))
    assert result["error"] == "LegacyUnavailable"


@pytest.mark.parametrize("step", ["claimed", "started", "exited"])
def test_a_legacy_side_killed_at_a_step_fails_the_worker_and_is_cleaned_up(sides, step):
    legacy = sides.legacy(pause_at=step)
    worker = sides.worker("echo done" if step == "exited" else SLEEPER)
    sides.paused("legacy", step)
    kill(legacy)
    result = sides.outcome(worker)
    assert result["error"] == "LegacyUnavailable"
    assert "stopped answering" in result["message"]
    # A new runner (kubelet restarts the container) cleans up what the dead one left.
    sides.legacy()
    record = sides.exit_record()
    assert record["outcome"] == runner.LOST, record
    if step == "started":
        gone(sides.pid("shell.pid"))
        gone(sides.pid("child.pid"))
    # And it serves the next hand-over.
    assert sides.outcome(sides.worker("echo next"))["outcome"]["exit_code"] == 0


def test_a_legacy_side_restarted_under_a_running_command_fails_the_worker(sides):
    first = sides.legacy()
    worker = sides.worker(SLEEPER)
    sides.pid("child.pid")
    kill(first)
    sides.legacy()  # restarted before the worker noticed the silence
    result = sides.outcome(worker)
    # Either the worker saw another runner's instance, or the new runner's record of
    # the lost command first: a failure both ways.
    if "error" in result:
        assert result["error"] == "LegacyUnavailable"
        assert "restarted" in result["message"]
    else:
        assert result["outcome"]["outcome"] == runner.LOST
    gone(sides.pid("shell.pid"))
    gone(sides.pid("child.pid"))


def test_a_stopped_legacy_container_stops_its_command(sides):
    legacy = sides.legacy()
    worker = sides.worker(SLEEPER)
    sides.pid("child.pid")
    legacy.send_signal(signal.SIGTERM)  # the pod ends: kubelet stops the sidecar
    result = sides.outcome(worker)
    assert result["outcome"]["outcome"] == runner.STOPPED
    wait_for(lambda: legacy.poll() is not None, DEADLINE, message="the runner to exit")
    gone(sides.pid("child.pid"))


def test_a_cancel_stops_the_command_and_returns_its_outcome(sides):
    """What on_kill does: ask for a stop from another thread (Airflow's SIGTERM
    handler) while run() follows; run() returns the cancelled outcome."""
    sides.legacy()
    handover = Handover(str(sides.root), heartbeat=HEARTBEAT, stale_after=STALE_AFTER, poll=POLL)
    results = []
    thread = threading.Thread(
        target=lambda: results.append(handover.run(SLEEPER, cwd=str(sides.work)))
    )
    thread.start()
    sides.pid("child.pid")
    handover.cancel("the task was killed")
    thread.join(timeout=DEADLINE)
    assert not thread.is_alive()
    [outcome] = results
    assert (outcome.outcome, outcome.message) == (runner.CANCELLED, "the task was killed")
    assert outcome.exit_code == -signal.SIGTERM
    gone(sides.pid("shell.pid"))
    gone(sides.pid("child.pid"))
    handover.cancel("nothing is running: a no-op")
    assert sides.task_dirs() == []


def test_a_bad_request_is_refused_and_the_runner_serves_on(sides):
    sides.legacy()
    task = sides.root / runner.TASKS_DIR / "0-bad"
    task.mkdir()
    runner.touch(str(task / runner.WORKER_ALIVE))
    runner.write_json(str(task / runner.REQUEST), {"command": ["not", "a", "string"]})
    record = sides.exit_record()
    assert record["outcome"] == runner.NOT_STARTED
    assert "the command is a list, not a string" in record["message"]
    assert sides.outcome(sides.worker("echo next"))["outcome"]["exit_code"] == 0


def test_recovery_never_kills_by_pids_of_another_pid_namespace(sides):
    """After a container restart the recorded pids belong to a dead namespace: here
    they name a live process of ours, which must survive."""
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        task = sides.root / runner.TASKS_DIR / "0-old"
        task.mkdir(parents=True)
        runner.write_json(str(task / runner.CLAIM), {"instance": "old"})
        runner.write_json(str(task / runner.STARTED), {
            "pid": bystander.pid, "start_ticks": 0, "instance": "old",
            "pid_namespace": "pid:[1]",
        })
        sides.legacy()
        record = sides.exit_record()
        assert record["outcome"] == runner.LOST
        assert "died with its container" in record["message"]
        assert not process_ended(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait(timeout=DEADLINE)


def test_the_runner_is_one_file_needing_only_the_standard_library(tmp_path):
    """The pod's init container copies runner.py alone into the legacy container, whose
    Python may be old and has none of this project's packages."""
    source = Path(runner.__file__).read_text()
    ast.parse(source, feature_version=(3, 7))
    copy = tmp_path / "runner.py"
    shutil.copy(runner.__file__, copy)
    root = tmp_path / "handover"
    root.mkdir()
    # -S: no site-packages; -I: no user site, no PYTHON* variables, no script folder.
    check = [sys.executable, "-S", "-I", str(copy), "--root", str(root), "--check"]
    result = subprocess.run(check, capture_output=True, text=True, timeout=DEADLINE)
    assert (result.returncode, result.stderr.strip()) == (
        1, f"no fresh heartbeat in {root / runner.LEGACY_FILE}")
    serving = subprocess.Popen([*check[:-1], "--heartbeat", "0.05"], start_new_session=True)
    try:
        wait_for(lambda: subprocess.run(check, timeout=DEADLINE).returncode == 0, DEADLINE,
                 message="the copied runner to serve")
    finally:
        serving.send_signal(signal.SIGTERM)
        assert serving.wait(timeout=DEADLINE) == 0
