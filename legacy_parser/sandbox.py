"""Runs definition code in worker processes, never in the caller's.

Each parse gets a fresh worker (``python -m legacy_parser.worker``, exec'd, so nothing
of the caller's threads or gRPC state is inherited) with a memory limit, a CPU limit and
a wall-clock limit. A worker that hangs is killed with its whole process group; one
that crashes or exits early becomes an error for its cluster. The result comes back as
JSON and is rebuilt into typed values, so nothing a definition does can run code here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legacy_parser.model import ErrorKind, ParseResult, WorkflowError, from_plain

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
_STDERR_TAIL_BYTES = 2000


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    timeout_seconds: float = 60.0
    memory_bytes: int = 2 * 1024**3
    workers: int = 2


class SandboxClosed(RuntimeError):
    pass


class Sandbox:
    """Thread-safe: up to ``limits.workers`` parses run at once, the rest wait."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._slots = threading.BoundedSemaphore(self.limits.workers)
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._closed = False

    def parse(self, cluster: str, repo_root: str, parser: str,
              parser_params: dict[str, Any], default_email: str = "",
              pycache_dir: str = "") -> ParseResult:
        """Parse a cluster in a fresh worker; see ``cluster.parse_here`` for ``pycache_dir``."""
        request = json.dumps({
            "cluster": cluster,
            "repo_root": os.path.abspath(repo_root),
            "parser": parser,
            "parser_params": parser_params,
            "default_email": default_email,
            "pycache_dir": pycache_dir,
            "memory_bytes": self.limits.memory_bytes,
            "cpu_seconds": int(self.limits.timeout_seconds) + 1,
        }, default=str).encode()
        with self._slots:
            started = time.monotonic()
            outcome = self._run_worker(cluster, repo_root, request)
            elapsed = time.monotonic() - started
        if isinstance(outcome, WorkflowError):
            return ParseResult(cluster, (), (outcome,), (), elapsed)
        # Report the whole cost, worker start-up included.
        return dataclasses.replace(outcome, duration_seconds=elapsed)

    def _run_worker(self, cluster: str, repo_root: str,
                    request: bytes) -> ParseResult | WorkflowError:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        with tempfile.TemporaryFile() as stderr:
            with self._lock:
                if self._closed:
                    raise SandboxClosed("the sandbox is shut down")
                try:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "legacy_parser.worker"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                        cwd=repo_root if os.path.isdir(repo_root) else None,
                        env=env, start_new_session=True,
                    )
                except OSError as error:  # fork failed (EAGAIN, ENOMEM), or the repo
                    # folder vanished between the check and the chdir
                    return WorkflowError(
                        ErrorKind.WORKER_CRASHED,
                        f"cannot start a parse worker: {error.strerror or error}", cluster)
                self._running.add(process)
            try:
                output, _ = process.communicate(request, timeout=self.limits.timeout_seconds)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                process.communicate()
                return WorkflowError(
                    ErrorKind.TIMEOUT,
                    f"parsing took longer than the {self.limits.timeout_seconds:g} s limit; "
                    "the worker was killed (does definition code loop or block at import?)",
                    cluster)
            finally:
                _kill_group(process)  # whatever definition code started goes too
                with self._lock:
                    self._running.discard(process)
            if self._closed:
                raise SandboxClosed("the sandbox was shut down during the parse")
            stderr.seek(0, os.SEEK_END)
            stderr.seek(max(0, stderr.tell() - _STDERR_TAIL_BYTES))
            tail = stderr.read().decode("utf-8", "replace").strip()
        return self._read_result(cluster, process.returncode, output, tail)

    def _read_result(self, cluster: str, returncode: int, output: bytes,
                     stderr_tail: str) -> ParseResult | WorkflowError:
        if returncode != 0 or not output:
            return WorkflowError(
                _crash_kind(returncode, stderr_tail),
                _crash_message(returncode, self.limits) + _last_line(stderr_tail), cluster)
        try:
            return from_plain(ParseResult, json.loads(output)["result"])
        # RecursionError: JSON nested deeper than the parser's stack (definition code can
        # write to the result pipe).
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            return WorkflowError(ErrorKind.WORKER_CRASHED,
                                 f"the worker returned a malformed result: {error}", cluster)

    def close(self) -> None:
        """Stop every running worker; later parses raise SandboxClosed."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for process in running:
            _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


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
