"""The worker container's side of the in-pod hand-over: hand a command to the legacy
container's runner, follow it, stop it.

``Handover.run`` writes the request into the shared hand-over directory (the layout is
described in ``token_fetcher.inpod.runner``), streams the command's output line by line
to a callback, keeps the worker's heartbeat fresh, reports the warn timeout once,
enforces the timeout, and returns the ``Outcome`` the runner wrote. Whatever ends the
call early (timeout, an exception such as Airflow's task timeout, the task being
killed) first asks the runner to stop the command and waits for it to confirm. A dead
or restarted runner raises ``LegacyUnavailable`` instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from token_fetcher.inpod.runner import (
    CANCEL,
    CLAIM,
    EXIT,
    EXITED,
    LEGACY_FILE,
    OUTPUT,
    REQUEST,
    SHARED_DIR_MODE,
    STARTED,
    TASKS_DIR,
    WORKER_ALIVE,
    age,
    read_json,
    touch,
    write_json,
)

__all__ = ["Handover", "HandoverError", "HandoverTimeout", "LegacyUnavailable", "Outcome"]


class HandoverError(Exception):
    """The hand-over could not be completed."""


class LegacyUnavailable(HandoverError):
    """The legacy container's runner is not there, stopped answering, or restarted."""


class HandoverTimeout(HandoverError):
    """The command ran past its timeout and was stopped; ``outcome`` is how it ended
    (None when the runner did not confirm the stop)."""

    def __init__(self, message: str, outcome: Outcome | None) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class Outcome:
    """How a handed-over command ended (the runner's ``exit.json``)."""

    outcome: str
    exit_code: int | None = None
    message: str = ""
    peak_memory_bytes: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.outcome == EXITED and self.exit_code == 0

    @property
    def measured(self) -> bool:
        """Whether the command ran, so its resource use means something."""
        return self.exit_code is not None and self.wall_seconds > 0

    def describe(self) -> str:
        if self.outcome == EXITED:
            if self.exit_code is not None and self.exit_code < 0:
                return f"killed by signal {-self.exit_code}"
            return f"exited {self.exit_code}"
        return f"{self.outcome}: {self.message}" if self.message else self.outcome

    @classmethod
    def from_json(cls, value: Mapping) -> Outcome:
        return cls(
            outcome=str(value["outcome"]),
            exit_code=value.get("exit_code"),
            message=str(value.get("message", "")),
            peak_memory_bytes=int(value.get("peak_memory_bytes", 0)),
            cpu_seconds=float(value.get("cpu_seconds", 0.0)),
            wall_seconds=float(value.get("wall_seconds", 0.0)),
        )


def _no_step(step: str) -> None:
    """The default step hook: nothing."""


class Handover:
    """Hands commands to the runner serving ``root``.

    ``heartbeat``/``stale_after``/``poll`` as for the runner (use the same values on
    both sides); ``ready_timeout``: how long to wait for a runner to appear;
    ``stop_timeout``: how long to wait for the runner to confirm a stop (at least its
    kill grace). ``on_step`` is called with ``"created"`` (the task folder exists, no
    request yet), ``"requested"``, ``"following"`` (the command started) and
    ``"ended"`` (its exit was read, the folder not yet removed).
    """

    def __init__(
        self,
        root: str,
        *,
        heartbeat: float = 1.0,
        stale_after: float = 15.0,
        poll: float = 0.1,
        ready_timeout: float = 120.0,
        stop_timeout: float = 30.0,
        on_step: Callable[[str], None] = _no_step,
    ) -> None:
        self.root = root
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.poll = poll
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.on_step = on_step
        self._current: str | None = None  # the task folder of the command running

    def run(
        self,
        command: str,
        *,
        cwd: str = "",
        env: Mapping[str, str] | None = None,
        on_output: Callable[[str], None] = lambda line: None,
        timeout: float | None = None,
        warn_after: float | None = None,
        on_warn: Callable[[], None] = lambda: None,
    ) -> Outcome:
        """Run ``command`` in the legacy container and wait for its end.

        Raises ``HandoverTimeout`` past ``timeout`` seconds (the command is stopped
        first) and ``LegacyUnavailable`` when the runner is missing or dies. Calls
        ``on_warn`` once when the command is still running after ``warn_after``
        seconds; it keeps running.
        """
        began = time.monotonic()
        self._wait_ready()
        task = os.path.join(self.root, TASKS_DIR, f"{time.time_ns():020d}-{uuid.uuid4().hex}")
        os.makedirs(task)
        os.chmod(task, SHARED_DIR_MODE)  # the runner (another user) writes into it
        touch(os.path.join(task, WORKER_ALIVE))
        self.on_step("created")
        self._current = task
        ended = False
        try:
            write_json(
                os.path.join(task, REQUEST),
                {"command": command, "cwd": cwd, "env": dict(env or {})},
            )
            self.on_step("requested")
            outcome = self._follow(task, began, on_output, timeout, warn_after, on_warn)
            ended = True
            self.on_step("ended")
            return outcome
        except HandoverTimeout:
            ended = True
            raise
        finally:
            if not ended:
                # Interrupted (an exception from a callback, Airflow's timeout, a kill):
                # the command must not outlive the task.
                self._stop(task, "the worker stopped following (task interrupted)")
            self._current = None
            _remove_when_settled(task)

    def cancel(self, reason: str) -> None:
        """Ask the runner to stop the command ``run`` is following, without waiting:
        ``run`` then returns its ``cancelled`` outcome. Safe in a signal handler."""
        task = self._current
        if task is not None:
            with contextlib.suppress(OSError):
                write_json(os.path.join(task, CANCEL), {"reason": reason})

    # --- internals ---

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        legacy = os.path.join(self.root, LEGACY_FILE)
        while True:
            heartbeat_age = age(legacy)
            if heartbeat_age is not None and heartbeat_age <= self.stale_after:
                return
            if time.monotonic() > deadline:
                raise LegacyUnavailable(
                    f"no legacy runner is serving {self.root} (waited {self.ready_timeout:g} s): "
                    "is the legacy container running `runner.py --root` on the shared volume?"
                )
            time.sleep(self.poll)

    def _legacy_problem(self, task: str) -> str | None:
        """Why the runner can no longer be trusted with ``task``, or None."""
        heartbeat_age = age(os.path.join(self.root, LEGACY_FILE))
        if heartbeat_age is None or heartbeat_age > self.stale_after:
            silent = heartbeat_age or 0
            return f"the legacy runner stopped answering (no heartbeat for {silent:.0f} s)"
        claim = read_json(os.path.join(task, CLAIM))
        legacy = read_json(os.path.join(self.root, LEGACY_FILE))
        if claim is not None and legacy is not None and claim["instance"] != legacy["instance"]:
            return "the legacy runner restarted while it had the command"
        return None

    def _follow(self, task, began, on_output, timeout, warn_after, on_warn) -> Outcome:
        reader = _LineReader(os.path.join(task, OUTPUT), on_output)
        last_beat = time.monotonic()
        started = warned = False
        while True:
            if time.monotonic() - last_beat >= self.heartbeat:
                touch(os.path.join(task, WORKER_ALIVE))
                last_beat = time.monotonic()
            reader.read()
            result = read_json(os.path.join(task, EXIT))
            if result is not None:
                reader.read(final=True)
                return Outcome.from_json(result)
            problem = self._legacy_problem(task)
            if problem is not None:
                reader.read(final=True)
                raise LegacyUnavailable(problem)
            if not started and os.path.exists(os.path.join(task, STARTED)):
                started = True
                self.on_step("following")
            elapsed = time.monotonic() - began
            if warn_after is not None and not warned and elapsed >= warn_after:
                warned = True
                on_warn()
            if timeout is not None and elapsed >= timeout:
                outcome = self._stop(task, f"timed out after {timeout:g} s")
                reader.read(final=True)
                raise HandoverTimeout(f"the command ran longer than {timeout:g} s", outcome)
            time.sleep(self.poll)

    def _stop(self, task: str, reason: str) -> Outcome | None:
        """Ask the runner to stop the command; its outcome once confirmed, else None."""
        if not os.path.isdir(task):
            return None
        with contextlib.suppress(OSError):
            write_json(os.path.join(task, CANCEL), {"reason": reason})
        if not os.path.exists(os.path.join(task, REQUEST)):
            return None  # never handed over
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            touch(os.path.join(task, WORKER_ALIVE))
            result = read_json(os.path.join(task, EXIT))
            if result is not None:
                return Outcome.from_json(result)
            if self._legacy_problem(task) is not None:
                return None
            time.sleep(self.poll)
        return None


def _remove_when_settled(task: str) -> None:
    """Remove the task folder unless a command may still be running from it: a runner
    that starts later needs its ``started.json`` to clean up after a dead one."""
    handed_over = os.path.exists(os.path.join(task, REQUEST))
    if not handed_over or os.path.exists(os.path.join(task, EXIT)):
        shutil.rmtree(task, ignore_errors=True)


class _LineReader:
    """Follows a growing file, passing each complete line (without its newline) on."""

    def __init__(self, path: str, on_line: Callable[[str], None]) -> None:
        self.path = path
        self.on_line = on_line
        self.offset = 0
        self.pending = b""

    def read(self, final: bool = False) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            data = b""
        self.offset += len(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            self.on_line(line.decode("utf-8", errors="replace"))
        if final and self.pending:
            self.on_line(self.pending.decode("utf-8", errors="replace"))
            self.pending = b""
