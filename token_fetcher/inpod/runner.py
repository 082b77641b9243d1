"""The legacy container's side of the in-pod hand-over; standalone (standard library only).

The worker pod has two containers sharing a volume (the *hand-over directory*): the
Airflow worker and the legacy image. This program runs in the legacy container
(``python3 runner.py --root /handover``); it takes the commands the worker hands over,
runs each as ``bash -c <command>`` in a session of its own, and reports how it ended.
It imports nothing outside the standard library, so the pod's init container can copy
this one file into the shared volume and any legacy image with a Python 3.7+ can run it.
That is why it is one file, longer than the package's other modules: split, it would be
a package to copy and to import on an interpreter the project does not control.

The hand-over directory (every JSON file is written whole and renamed into place, so a
reader never sees half a file)::

    legacy.json                 the runner: {"instance", "pid"}; its mtime is the heartbeat
    tasks/<id>/worker.alive     the worker's heartbeat (mtime), written before the request
    tasks/<id>/request.json     {"command", "cwd", "env"}: the worker's hand-over
    tasks/<id>/claim.json       {"instance"}: created once (hard link), by the runner that took it
    tasks/<id>/started.json     {"pid", "start_ticks", "instance", "pid_namespace"}: the
                                command's session leader
    tasks/<id>/output.log       the command's stdout and stderr, as written
    tasks/<id>/cancel.json      {"reason"}: the worker asks for a stop
    tasks/<id>/exit.json        how it ended (see ``OUTCOMES``), with the measured resources

Liveness runs both ways. The worker stops following when the runner's heartbeat is
stale or a runner of another instance took over; the runner stops (SIGTERM to the
session's process group, SIGKILL after ``kill_grace``) a command whose worker heartbeat
is stale, or whose worker asked for it. A runner that starts recovers what a dead one
left: it kills the sessions of commands that were running and records them as ``lost``.
(In the pod a dead runner also takes its commands with it: it is PID 1 of its
container's PID namespace.)

Resources, per command: its CPU time (user + system of every process the runner reaps
while it runs: the command with its waited-for descendants, and orphans, since the
runner is their subreaper) and its peak memory: the largest of the sampled sums of the
resident sets of its session's processes and the kernel's high-water mark of any one
of them (so a one-process command's peak is exact, however short it ran).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import uuid

LEGACY_FILE = "legacy.json"
TASKS_DIR = "tasks"
WORKER_ALIVE = "worker.alive"
REQUEST = "request.json"
CLAIM = "claim.json"
STARTED = "started.json"
OUTPUT = "output.log"
CANCEL = "cancel.json"
EXIT = "exit.json"

EXITED = "exited"  # the command ran to its end; exit_code is its status (-N: signal N)
CANCELLED = "cancelled"  # the worker asked for a stop (timeout, task killed)
ABANDONED = "abandoned"  # the worker's heartbeat went stale: it was stopped
STOPPED = "stopped"  # the runner itself was told to stop (the pod is ending)
LOST = "lost"  # the runner that had it died; a new runner cleaned up
NOT_STARTED = "not_started"  # bash could not be started
OUTCOMES = (EXITED, CANCELLED, ABANDONED, STOPPED, LOST, NOT_STARTED)

SHARED_DIR_MODE = 0o2775  # group-writable, new entries keep the group
_PR_SET_CHILD_SUBREAPER = 36


def write_json(path: str, value: dict) -> None:
    """Write ``value`` to a temporary file and rename it into place."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle)
    os.replace(temporary, path)


def create_json(path: str, value: dict) -> bool:
    """Create ``path`` holding ``value`` unless it exists; False when it did. Whole or
    not at all: the content is written first, then hard-linked into place."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle)
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)


def read_json(path: str) -> dict | None:
    """The object in ``path``, or None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def age(path: str) -> float | None:
    """Seconds since ``path`` was last touched, or None when it does not exist."""
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return None


def touch(path: str) -> None:
    with open(path, "a"):
        pass
    os.utime(path)


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None for a process that is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot): tells a process from a later one
    that reuses its pid."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def session_members(session: int, started_from: int = 0) -> list[int]:
    """The live processes of ``session`` that started at or after ``started_from``."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if (
            fields
            and fields[0] != b"Z"
            and int(fields[3]) == session
            and int(fields[19]) >= started_from
        ):
            members.append(int(name))
    return members


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB; zeros for a process that is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def tree_memory_bytes(session: int) -> int:
    """The memory ``session`` holds now: the sum of its resident sets, or its largest
    process's high-water mark if that is more (catches a peak between two samples)."""
    total = highest = 0
    for pid in session_members(session):
        rss, hwm = _memory_kib(pid)
        total += rss
        highest = max(highest, hwm)
    return max(total, highest) * 1024


def kill_session(session: int, started_from: int, sig: int) -> int:
    """Send ``sig`` to the process groups of ``session``'s live processes that started
    at or after ``started_from``; the number of processes found."""
    members = session_members(session, started_from)
    groups = set()
    for pid in members:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
    return len(members)


def _become_subreaper() -> None:
    """Orphans of the commands become our children (so their CPU time is counted when
    we reap them), as they would with the runner as PID 1 of its container."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux, or no prctl: orphans go to init and their CPU time is missed


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _no_step(step: str) -> None:
    """The default step hook: nothing."""


class Runner:
    """Serves hand-overs in ``root`` until told to stop (SIGTERM or SIGINT).

    ``heartbeat``: how often the runner touches its heartbeat; ``stale_after``: a worker
    heartbeat older than this means the worker is gone; ``poll``: how often the runner
    looks for work, exits and cancels; ``sample_every``: how often it measures memory;
    ``kill_grace``: SIGTERM to SIGKILL. ``on_step`` is called with ``"ready"``,
    ``"claimed"``, ``"started"`` and ``"exited"`` (the command ended, its exit not yet
    written) as the runner passes them.
    """

    def __init__(
        self,
        root: str,
        *,
        cwd: str = "",
        heartbeat: float = 1.0,
        stale_after: float = 15.0,
        poll: float = 0.1,
        sample_every: float = 0.5,
        kill_grace: float = 10.0,
        on_step=_no_step,
    ) -> None:
        self.root = root
        self.cwd = cwd
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.poll = poll
        self.sample_every = sample_every
        self.kill_grace = kill_grace
        self.on_step = on_step
        self.instance = uuid.uuid4().hex
        self.stopping = False
        self._last_beat = 0.0
        self._reaped: dict[int, int] = {}
        # What the processes reaped since the current command started used.
        self._reaped_cpu = 0.0
        self._reaped_peak = 0

    # --- the loop ---

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        _become_subreaper()
        tasks = os.path.join(self.root, TASKS_DIR)
        os.makedirs(tasks, exist_ok=True)
        # The worker runs as another user of the pod's group (fsGroup): it creates the
        # task folders, the runner writes into them.
        with contextlib.suppress(PermissionError):  # made by the worker: it is its own
            os.chmod(tasks, SHARED_DIR_MODE)
        write_json(self._path(LEGACY_FILE), {"instance": self.instance, "pid": os.getpid()})
        self._last_beat = time.monotonic()
        self._recover()
        self.on_step("ready")
        while not self.stopping:
            self._beat()
            self._reap()
            task = self._claim_next()
            if task is not None:
                self._run(task)
            else:
                time.sleep(self.poll)

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def _beat(self) -> None:
        if time.monotonic() - self._last_beat >= self.heartbeat:
            os.utime(self._path(LEGACY_FILE))
            self._last_beat = time.monotonic()

    def _reap(self) -> None:
        """Reap every exited child (commands and adopted orphans), keeping statuses."""
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped[pid] = status
            self._reaped_cpu += usage.ru_utime + usage.ru_stime
            self._reaped_peak = max(self._reaped_peak, usage.ru_maxrss * 1024)  # KiB

    def _task_dirs(self) -> list[str]:
        tasks = self._path(TASKS_DIR)
        try:
            names = sorted(os.listdir(tasks))
        except FileNotFoundError:
            return []
        return [os.path.join(tasks, name) for name in names if not name.startswith(".")]

    # --- recovery ---

    def _recover(self) -> None:
        """Clean up after a runner that died: kill what it was running, mark it lost."""
        for task in self._task_dirs():
            claim = read_json(os.path.join(task, CLAIM))
            if claim is None or os.path.exists(os.path.join(task, EXIT)):
                continue
            started = read_json(os.path.join(task, STARTED))
            message = (
                f"the runner that had this command ({claim.get('instance')}) died "
                "before it started"
            )
            if started is not None and started.get("pid_namespace") != _pid_namespace():
                # A restarted container: its PID namespace, and every process in it,
                # died with the old runner; these pids would name other processes.
                message = (
                    f"the runner that ran this command ({started.get('instance')}) died "
                    "with its container while it ran"
                )
            elif started is not None:
                found = kill_session(started["pid"], started["start_ticks"], signal.SIGKILL)
                message = (
                    f"the runner that ran this command ({started.get('instance')}) died "
                    f"while it ran; {found} of its processes were still running and were killed"
                )
            write_json(os.path.join(task, EXIT), {"outcome": LOST, "message": message})

    # --- one command ---

    def _claim_next(self) -> str | None:
        for task in self._task_dirs():
            if not os.path.exists(os.path.join(task, REQUEST)):
                continue
            if os.path.exists(os.path.join(task, CLAIM)):
                continue
            if not create_json(os.path.join(task, CLAIM), {"instance": self.instance}):
                continue
            worker_age = age(os.path.join(task, WORKER_ALIVE))
            if os.path.exists(os.path.join(task, CANCEL)):
                ended = {"outcome": CANCELLED, "message": "cancelled before it started"}
            elif worker_age is None or worker_age > self.stale_after:
                ended = {"outcome": ABANDONED, "message": "the worker was gone before it started"}
            else:
                self.on_step("claimed")
                return task
            write_json(os.path.join(task, EXIT), ended)
        return None

    def _run(self, task: str) -> None:
        try:
            request = read_json(os.path.join(task, REQUEST)) or {}
            command = request["command"]
            env = dict(os.environ)
            env.update(request.get("env") or {})
            if not isinstance(command, str):
                raise TypeError(f"the command is a {type(command).__name__}, not a string")
        except (ValueError, KeyError, TypeError) as exc:
            message = f"bad request {os.path.join(task, REQUEST)}: {exc!r}"
            write_json(os.path.join(task, EXIT), {"outcome": NOT_STARTED, "message": message})
            return
        self._reap()  # orphans of earlier commands are not this one's
        self._reaped_cpu, self._reaped_peak = 0.0, 0
        began = time.monotonic()
        with open(os.path.join(task, OUTPUT), "ab") as output:
            try:
                process = subprocess.Popen(
                    ["bash", "-c", command],
                    cwd=request.get("cwd") or self.cwd or None,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                write_json(
                    os.path.join(task, EXIT),
                    {"outcome": NOT_STARTED, "message": f"could not start bash: {exc}"},
                )
                return
        ticks = start_ticks(process.pid) or 0
        write_json(
            os.path.join(task, STARTED),
            {
                "pid": process.pid,
                "start_ticks": ticks,
                "instance": self.instance,
                "pid_namespace": _pid_namespace(),
            },
        )
        self.on_step("started")
        outcome, message, peak, status = EXITED, "", 0, None
        last_sample = 0.0
        while True:
            self._reap()
            status = self._reaped.pop(process.pid, None)
            if status is not None:
                break
            self._beat()
            if time.monotonic() - last_sample >= self.sample_every:
                peak = max(peak, tree_memory_bytes(process.pid))
                last_sample = time.monotonic()
            stop = self._stop_reason(task)
            if stop is not None:
                outcome, message = stop
                status = self._stop_session(process.pid, ticks)
                break
            time.sleep(self.poll)
        process.returncode = _exit_code(status)  # reaped here, not by Popen
        self.on_step("exited")
        write_json(
            os.path.join(task, EXIT),
            {
                "outcome": outcome,
                "exit_code": _exit_code(status),
                "message": message,
                "peak_memory_bytes": max(peak, self._reaped_peak),
                "cpu_seconds": round(self._reaped_cpu, 3),
                "wall_seconds": round(time.monotonic() - began, 3),
            },
        )

    def _stop_reason(self, task: str) -> tuple[str, str] | None:
        cancel = read_json(os.path.join(task, CANCEL))
        if cancel is not None:
            return CANCELLED, str(cancel.get("reason") or "cancelled by the worker")
        worker_age = age(os.path.join(task, WORKER_ALIVE))
        if worker_age is None or worker_age > self.stale_after:
            return ABANDONED, f"the worker's heartbeat stopped ({worker_age or 0:.0f} s old)"
        if self.stopping:
            return STOPPED, "the legacy container was told to stop"
        return None

    def _stop_session(self, session: int, ticks: int) -> int:
        """SIGTERM the session, SIGKILL what is left after ``kill_grace``; the session
        leader's wait status."""
        kill_session(session, ticks, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline:
            self._reap()
            if session in self._reaped and not session_members(session, ticks):
                return self._reaped.pop(session)
            time.sleep(self.poll)
        kill_session(session, ticks, signal.SIGKILL)
        while session not in self._reaped:
            self._reap()
            time.sleep(self.poll)
        return self._reaped.pop(session)


def check(root: str, stale_after: float) -> int:
    """For a liveness probe: 0 when the runner's heartbeat is fresh."""
    heartbeat_age = age(os.path.join(root, LEGACY_FILE))
    if heartbeat_age is None or heartbeat_age > stale_after:
        print(f"no fresh heartbeat in {os.path.join(root, LEGACY_FILE)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the hand-over directory")
    parser.add_argument("--cwd", default="", help="default working directory of commands")
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--stale-after", type=float, default=15.0)
    parser.add_argument("--kill-grace", type=float, default=10.0)
    parser.add_argument("--check", action="store_true", help="exit 0 if a runner is alive")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.root, args.stale_after)
    Runner(
        args.root,
        cwd=args.cwd,
        heartbeat=args.heartbeat,
        stale_after=args.stale_after,
        kill_grace=args.kill_grace,
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
