"""Runs definition code in worker processes that can touch nothing but their own parse.

Each parse gets a fresh worker (``python -m legacy_parser.worker``, exec'd, so nothing of
the caller's threads or gRPC state is inherited). Under bubblewrap the worker runs in
fresh user, PID, network, mount, IPC and UTS namespaces: it sees the Python runtime, the
parser package and its own repo, all read-only, and a small private tmpfs; it has no
network, cannot see or signal any process outside its parse, and all its descendants
die when the parse ends. Its environment is an allow-list, and resource limits bound
its memory, CPU, processes, open files and file sizes.

How a worker is isolated and started is legacy_parser.isolation; this module runs one
per parse. The caller reads the result with a deadline and a byte cap, then rebuilds
typed values from it with type checks (never pickle) and applies the result caps of
``limits``, so nothing a definition does can run code, or hold memory without bound, in
the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from legacy_parser.isolation import SandboxLimits, kill_group, probe_isolation, spawn
from legacy_parser.model import ErrorKind, ParseResult, WorkflowError
from legacy_parser.result_wire import MALFORMED, KnownWorkflows, ResultReader

_STDERR_TAIL_BYTES = 2000
_READ_CHUNK = 1 << 16


class SandboxClosed(RuntimeError):
    pass


class Sandbox:
    """Thread-safe: up to ``limits.workers`` parses run at once, the rest wait."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.isolation = probe_isolation(self.limits)
        self._slots = threading.BoundedSemaphore(self.limits.workers)
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._closed = False

    def parse(self, cluster: str, repo_root: str, parser: str,
              parser_params: dict[str, Any], default_email: str = "",
              python2_definitions: str = "auto",
              stub_modules: tuple[str, ...] = (),
              known: KnownWorkflows | None = None,
              worker_started: Callable[[], object] | None = None) -> ParseResult:
        """Parse a cluster in a fresh worker; ``python2_definitions`` ("auto" or "off") and
        ``stub_modules`` as in ``cluster.parse_here``. ``known``: the cluster's workflows
        from its last parse, whose unchanged lines of the result are not decoded again.
        ``worker_started`` is called once the worker runs, before its result is read: work
        of the caller's that overlaps the worker's start-up."""
        request = json.dumps({
            "cluster": cluster,
            "repo_root": os.path.abspath(repo_root),
            "parser": parser,
            "parser_params": parser_params,
            "default_email": default_email,
            "python2_definitions": python2_definitions,
            "stub_modules": list(stub_modules),
            "memory_bytes": self.limits.memory_bytes,
            "cpu_seconds": int(self.limits.timeout_seconds) + 1,
            # As the server's own user the count would include all of its processes and
            # threads, so the limit is only set for a user of the sandbox's own.
            "max_processes": (self.limits.max_processes
                              if self.isolation.bwrap or self.isolation.run_as is not None
                              else 0),
            "max_open_files": self.limits.max_open_files,
            "max_file_bytes": self.limits.max_file_bytes,
            "caps": dataclasses.asdict(self.limits.caps),
            "run_as": self.isolation.run_as,
        }, default=str).encode()
        with self._slots:
            started = time.monotonic()
            outcome = self._run_worker(cluster, repo_root, request, known or KnownWorkflows(),
                                       worker_started)
            elapsed = time.monotonic() - started
        if isinstance(outcome, WorkflowError):
            return ParseResult(cluster, (), (outcome,), (), elapsed)
        # Report the whole cost, worker start-up included.
        return dataclasses.replace(outcome, duration_seconds=elapsed)

    def _run_worker(self, cluster: str, repo_root: str, request: bytes,
                    known: KnownWorkflows, worker_started: Callable[[], object] | None
                    ) -> ParseResult | WorkflowError:
        repo_root = os.path.realpath(repo_root)
        run_as = self.isolation.run_as
        if run_as is not None and os.path.isdir(repo_root) and not _open_to_all(repo_root):
            return WorkflowError(
                ErrorKind.IO_ERROR,
                f"the repo {repo_root} is not readable by uid {run_as}: the server runs as "
                "root, so parses run as that user; make the repo readable by everyone "
                "(chmod -R o+rX) or run the server as an ordinary user", cluster)
        with tempfile.TemporaryFile() as stdin:
            stdin.write(request)
            stdin.seek(0)
            with self._lock:
                if self._closed:
                    raise SandboxClosed("the sandbox is shut down")
                try:
                    process = spawn(self.isolation, self.limits, repo_root,
                                    ["-m", "legacy_parser.worker"], stdin=stdin,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                except OSError as error:  # fork failed (EAGAIN, ENOMEM), or the repo
                    # folder vanished between the check and the chdir
                    return WorkflowError(
                        ErrorKind.WORKER_CRASHED,
                        f"cannot start a parse worker: {error.strerror or error}", cluster)
                self._running.add(process)
            try:
                if worker_started is not None:
                    worker_started()
                output = _Output(self.limits.max_result_bytes, known.reader(self.limits.caps))
                finished = output.collect(process,
                                          time.monotonic() + self.limits.timeout_seconds)
            finally:
                _end(process)  # whatever definition code started goes too
                with self._lock:
                    self._running.discard(process)
        if self._closed:
            raise SandboxClosed("the sandbox was shut down during the parse")
        if output.too_large:
            return WorkflowError(
                ErrorKind.RESULT_TOO_LARGE,
                f"the parse result is over the {self.limits.max_result_bytes // 2**20} MiB cap "
                "(sandbox.max_result_mb); the worker was stopped", cluster)
        if not finished:
            return WorkflowError(
                ErrorKind.TIMEOUT,
                f"parsing took longer than the {self.limits.timeout_seconds:g} s limit; "
                "the worker was killed (does definition code loop or block at import?)",
                cluster)
        returncode = process.returncode
        if self.isolation.bwrap and returncode > 128:  # bwrap reports a signal as 128 + N
            returncode = 128 - returncode
        return self._read_result(cluster, returncode, output.result, output.stderr_tail())

    def _read_result(self, cluster: str, returncode: int, result: ResultReader,
                     stderr_tail: str) -> ParseResult | WorkflowError:
        if returncode != 0 or not result.received:
            return WorkflowError(
                _crash_kind(returncode, stderr_tail),
                _crash_message(returncode, self.limits) + _last_line(stderr_tail), cluster)
        try:
            return result.finish()
        except MALFORMED as error:
            return WorkflowError(ErrorKind.WORKER_CRASHED,
                                 f"the worker returned a malformed result: {error}", cluster)

    def close(self) -> None:
        """Stop every running worker; later parses raise SandboxClosed."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for process in running:
            kill_group(process)


class _Output:
    """A worker's stdout (the result, capped, rebuilt as it arrives) and the tail of its
    stderr."""

    def __init__(self, max_result_bytes: int, result: ResultReader) -> None:
        self.result = result
        self._stderr = bytearray()
        self._max = max_result_bytes
        self.too_large = False

    def collect(self, process: subprocess.Popen, deadline: float) -> bool:
        """Read until the worker is done (True) or the deadline or cap is hit (False).

        The worker is done when it has exited and its pipes are drained. Descendants that
        escaped its process group (only possible without a PID namespace) may hold the
        pipes open, so a pipe left open after the worker exits is not waited for.
        """
        with selectors.DefaultSelector() as selector:
            for stream in (process.stdout, process.stderr):
                os.set_blocking(stream.fileno(), False)
                selector.register(stream, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                exited = process.poll() is not None
                # After the worker exits, only what is already buffered is read.
                ready = selector.select(0 if exited else min(remaining, 0.5))
                if exited and not ready:
                    break
                for key, _ in ready:
                    if not self._read(key.fileobj, selector, key.fileobj is process.stdout):
                        return False
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True

    def _read(self, stream, selector: selectors.BaseSelector, is_result: bool) -> bool:
        try:
            chunk = os.read(stream.fileno(), _READ_CHUNK)
        except BlockingIOError:
            return True
        if not chunk:
            selector.unregister(stream)
            return True
        if is_result:
            if self.result.received + len(chunk) > self._max:
                self.too_large = True
                return False
            self.result.feed(chunk)
        else:
            self._stderr = (self._stderr + chunk)[-_STDERR_TAIL_BYTES:]
        return True

    def stderr_tail(self) -> str:
        return self._stderr.decode("utf-8", "replace").strip()


def _open_to_all(folder: str) -> bool:
    return os.stat(folder).st_mode & 0o005 == 0o005


def _end(process: subprocess.Popen) -> None:
    """Kill the worker's group (with bwrap: ends its PID namespace) and reap it."""
    kill_group(process)
    for stream in (process.stdout, process.stderr):
        stream.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def _crash_kind(returncode: int, stderr_tail: str) -> ErrorKind:
    if returncode == -signal.SIGXCPU:
        return ErrorKind.TIMEOUT
    if "MemoryError" in stderr_tail:
        return ErrorKind.MEMORY_LIMIT
    return ErrorKind.WORKER_CRASHED


def _crash_message(returncode: int, limits: SandboxLimits) -> str:
    if returncode == -signal.SIGXCPU:
        return f"parsing used more than {limits.timeout_seconds:g} s of CPU; the worker was stopped"
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return (f"the parse worker died of {name} (definition code crashed the interpreter, "
                f"or exceeded the {limits.memory_bytes // 2**20} MiB memory limit)")
    if returncode == 0:
        return "the parse worker exited without a result"
    return (f"the parse worker exited with code {returncode} before returning a result "
            "(does definition code call os._exit?)")


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return f"; last output: {lines[-1][:300]}" if lines else ""
