"""Processes for the benchmarks: the real server as a subprocess, CPU pinning, RSS sampling."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_plan() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load-generator CPUs): the server alone on the first CPU."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(available) < 2:
        return None, None
    return {available[0]}, set(available[1:])


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of ``pid`` (and so the children it starts later) to ``cpus``."""
    if not cpus:
        return
    try:
        for thread in psutil.Process(pid).threads():
            os.sched_setaffinity(thread.id, cpus)
    except (psutil.Error, OSError):
        pass


def pinned_command(command: list[str], cpus: set[int] | None) -> list[str]:
    taskset = shutil.which("taskset")
    if cpus and taskset:
        return [taskset, "-c", ",".join(map(str, sorted(cpus))), *command]
    return command


def spawn(command: list[str], cpus: set[int] | None = None, **kwargs) -> subprocess.Popen:
    process = subprocess.Popen(pinned_command(command, cpus), **kwargs)
    if cpus and not shutil.which("taskset"):
        pin(process.pid, cpus)
    return process


class RssSampler:
    """Samples the RSS of a process, of its whole tree (children included), and of its
    children alone; and the process's RSS plus its children's USS (their memory that no
    other process maps): the tree's pages with those the children share with the process
    (the interpreter's code, its libraries) counted once, as the kernel holds them."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = 0
        self.peak_self = 0
        self.peak_children = 0
        self.peak_tree_distinct = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        try:
            own = self.process.memory_info().rss
        except psutil.Error:
            return
        total = distinct = own
        try:
            children = self.process.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            try:
                rss = child.memory_info().rss
                unshared = _unique_set_size(child, rss)
            except psutil.Error:  # it exited meanwhile
                continue
            total += rss
            distinct += unshared
        self.peak_self = max(self.peak_self, own)
        self.peak_tree = max(self.peak_tree, total)
        self.peak_tree_distinct = max(self.peak_tree_distinct, distinct)
        self.peak_children = max(self.peak_children, total - own)
        self.samples += 1

    def current_self(self) -> int:
        try:
            return self.process.memory_info().rss
        except psutil.Error:
            return 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _unique_set_size(process: psutil.Process, rss: int) -> int:
    """``process``'s USS, or its RSS where its memory map cannot be read."""
    try:
        return process.memory_full_info().uss
    except psutil.AccessDenied:
        return rss


class ServerProcess:
    """``token-fetcher serve --config`` in a subprocess, on a free port."""

    def __init__(self, workdir: Path, clusters: dict, name: str, cpus: set[int] | None = None,
                 poll_interval: float = 1.0, sandbox: dict | None = None) -> None:
        self.workdir = workdir / f"server-{name}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        config = {
            "listen": self.target,
            "metrics": f"127.0.0.1:{free_port()}",
            "state_dir": str(self.workdir / "state"),
            "poll_interval_seconds": poll_interval,
            "clusters": clusters,
        }
        if sandbox:
            config["sandbox"] = sandbox
        self.config_path = self.workdir / "token-fetcher.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.cpus = cpus
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "server.log"
        self.started_at = 0.0

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [str(BIN / "token-fetcher"), "serve", "--config", str(self.config_path),
                   "--log-level", "WARNING"]
        # This checkout first, whatever the venv's install points at.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep)
        self.started_at = time.monotonic()
        self.process = spawn(command, self.cpus, stdout=self._log, stderr=subprocess.STDOUT,
                             cwd=str(self.workdir), env=env)

    def wait_serving(self, timeout: float = 300.0, interval: float = 0.01) -> float:
        """Seconds from start() until health says SERVING."""
        assert self.process is not None
        channel = grpc.insecure_channel(self.target)
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = self.started_at + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}; "
                                       f"see {self.log_path}:\n{self.log_tail()}")
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic() - self.started_at
                except grpc.RpcError:
                    pass
                time.sleep(interval)
        finally:
            channel.close()
        raise TimeoutError(f"the server was not SERVING after {timeout:g} s; see {self.log_path}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self.process = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def python_cluster(corpus: Path) -> dict:
    return {"repo": str(corpus), "pinball_config": str(corpus / "pinball.yaml")}


def run_python(code: str, cpus: set[int] | None = None, timeout: float = 600,
               extra_path: list[str] | None = None) -> tuple[float, str]:
    """Run ``python -c code`` in a fresh interpreter: (wall seconds, stdout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *(extra_path or []),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    started = time.monotonic()
    done = subprocess.run(pinned_command([sys.executable, "-c", code], cpus), env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"python -c failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, done.stdout


def pin_tree(pid: int, cpus: set[int] | None) -> None:
    """Move a running process, every thread of it and its children, to ``cpus``."""
    if not cpus:
        return
    try:
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
    except psutil.Error:
        return
    for member in family:
        pin(member.pid, cpus)
