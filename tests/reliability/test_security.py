"""Security: loopback by default, TLS and mutual TLS on both sides (certificates made up
here with the `cryptography` package), Reload and reflection switched off by config,
nothing pickled or evaluated, and user code only ever running in worker processes."""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

from tests.helpers import EXAMPLES, ROOT, health
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client import TokenFetcherClient, Unavailable
from token_fetcher.config import DEFAULT_LISTEN, DEFAULT_METRICS, ServerConfig, parse_config

from .reliability_helpers import JS, PY, Authority, client_credentials, cluster_from_yaml

SPEC = pb.GetWorkflowSpecRequest(cluster=PY, workflow="daily_reporting")


# --- loopback by default --------------------------------------------------------------------


def test_the_default_addresses_are_loopback(tmp_path):
    minimal = parse_config({"clusters": {PY: cluster_from_yaml(EXAMPLES / "python_repo")}},
                           tmp_path)
    assert (minimal.listen, minimal.metrics) == ("127.0.0.1:50051", "127.0.0.1:9464")
    defaults = ServerConfig(clusters={})
    assert (defaults.listen, defaults.metrics) == (DEFAULT_LISTEN, DEFAULT_METRICS)
    assert DEFAULT_LISTEN.startswith("127.0.0.1:") and DEFAULT_METRICS.startswith("127.0.0.1:")


def test_the_bound_sockets_are_loopback(serve_process):
    server = serve_process({"clusters": {PY: cluster_from_yaml(EXAMPLES / "python_repo")}})
    server.wait_serving()
    listening = server.listening()
    assert len(listening) == 2, listening  # gRPC and metrics, nothing else
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    assert server.port in {port for _, port in listening}


def _free(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def test_a_config_without_addresses_listens_on_loopback_only(serve_process):
    if not (_free(50051) and _free(9464)):
        pytest.skip("ports 50051 and 9464 are in use on this machine")
    server = serve_process({"clusters": {PY: cluster_from_yaml(EXAMPLES / "python_repo")},
                            "listen": None, "metrics": None})
    server.wait_serving()
    assert server.listening() == [("127.0.0.1", 9464), ("127.0.0.1", 50051)]


# --- TLS and mutual TLS ---------------------------------------------------------------------


def _spec(target: str, credentials) -> str:
    """'OK', or the client's error code name."""
    with TokenFetcherClient(target, credentials=credentials, retries=0, timeout=5) as client:
        try:
            return "OK" if client.get_spec(PY, "daily_reporting").spec.name else "EMPTY"
        except Unavailable as error:
            return error.code.name


def _plaintext(target: str) -> str:
    with TokenFetcherClient(target, retries=0, timeout=5) as client:
        try:
            client.get_spec(PY, "daily_reporting")
            return "OK"
        except Unavailable as error:
            return error.code.name


def test_tls(start_server, tmp_path):
    pki = tmp_path / "pki"
    authority, stranger = Authority(pki, "good"), Authority(pki, "stranger")
    cert, key = authority.issue("server", server=True)
    server = start_server(tls={"cert_file": str(cert), "key_file": str(key)})
    target = f"127.0.0.1:{server.port}"
    assert _spec(target, client_credentials(authority)) == "OK"
    assert _plaintext(target) == "UNAVAILABLE"
    # A client that does not trust the server's CA refuses it.
    assert _spec(target, client_credentials(stranger)) == "UNAVAILABLE"
    with grpc.secure_channel(target, client_credentials(authority)) as channel:
        assert health(channel) == "SERVING"


def test_mutual_tls_refuses_clients_without_a_valid_certificate(start_server, tmp_path):
    pki = tmp_path / "pki"
    authority, stranger = Authority(pki, "good"), Authority(pki, "stranger")
    cert, key = authority.issue("server", server=True)
    server = start_server(tls={"cert_file": str(cert), "key_file": str(key),
                               "client_ca_file": str(authority.cert_file)})
    target = f"127.0.0.1:{server.port}"
    scheduler = authority.issue("scheduler", server=False)
    impostor = stranger.issue("scheduler-impostor", server=False)
    assert _spec(target, client_credentials(authority, scheduler)) == "OK"
    assert _spec(target, client_credentials(authority)) == "UNAVAILABLE"  # no certificate
    assert _spec(target, client_credentials(authority, impostor)) == "UNAVAILABLE"
    assert _plaintext(target) == "UNAVAILABLE"
    with grpc.secure_channel(target, client_credentials(authority)) as channel:
        assert health(channel) == "UNAVAILABLE"  # probes need a certificate too


def test_a_locked_down_server_from_its_config_file(serve_process, tmp_path):
    """mTLS, Reload off and reflection off, as `token-fetcher serve` reads them from YAML."""
    pki = tmp_path / "pki"
    authority = Authority(pki, "good")
    cert, key = authority.issue("server", server=True)
    credentials = client_credentials(authority, authority.issue("scheduler", server=False))
    server = serve_process({
        "clusters": {PY: cluster_from_yaml(EXAMPLES / "python_repo")},
        "tls": {"cert_file": str(cert), "key_file": str(key),
                "client_ca_file": str(authority.cert_file)},
        "reload_enabled": False, "reflection_enabled": False}, credentials=credentials)
    server.wait_serving()
    stub = server.stub()
    assert stub.GetWorkflowSpec(SPEC, timeout=10).spec.name == "daily_reporting"
    assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).reload_enabled is False
    with pytest.raises(grpc.RpcError) as caught:
        stub.Reload(pb.ReloadRequest(cluster=PY), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "reload_enabled: false" in caught.value.details()
    for name in ("grpc.reflection.v1.ServerReflection",
                 "grpc.reflection.v1alpha.ServerReflection"):
        call = server.channel().stream_stream(f"/{name}/ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as caught:
            list(call(iter([b""]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert {ip for ip, _ in server.listening()} == {"127.0.0.1"}


# --- nothing pickled or evaluated ------------------------------------------------------------

UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle",
                  "jsonpickle", "copyreg"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all",
               "full_load_all"}
# The only modules that import code named by a definition; they run in sandbox workers.
IMPORTS_USER_CODE = {"legacy_parser/pyreader.py", "legacy_parser/jsonreader.py"}


def _sources():
    for package in ("token_fetcher", "legacy_parser"):
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))


def test_nothing_is_unpickled_or_evaluated():
    problems, imports_user_code = [], set()
    for name, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules = {(node.module or "").split(".")[0]}
            else:
                modules = set()
            if modules & UNSAFE_MODULES:
                problems.append(f"{name}:{node.lineno}: imports {modules & UNSAFE_MODULES}")
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_CALLS:
                problems.append(f"{name}:{node.lineno}: calls {func.id}()")
            if isinstance(func, ast.Attribute):
                owner = func.value.id if isinstance(func.value, ast.Name) else ""
                if owner == "yaml" and func.attr in UNSAFE_YAML:
                    problems.append(f"{name}:{node.lineno}: yaml.{func.attr}()")
                if func.attr in ("import_module", "exec_module", "run_path", "run_module"):
                    imports_user_code.add(name)
    assert problems == []
    assert imports_user_code == IMPORTS_USER_CODE


def test_the_contract_carries_no_opaque_bytes():
    """Every field of every message is typed: no bytes, no google.protobuf.Any, no Struct."""
    from google.protobuf.descriptor import FieldDescriptor

    seen, pending = set(), list(pb.DESCRIPTOR.message_types_by_name.values())
    while pending:
        message = pending.pop()
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        assert message.full_name not in ("google.protobuf.Any", "google.protobuf.Struct",
                                         "google.protobuf.Value")
        for field in message.fields:
            assert field.type != FieldDescriptor.TYPE_BYTES, field.full_name
            if field.message_type is not None:
                pending.append(field.message_type)
    assert len(seen) > 20


# --- user code runs in workers only ---------------------------------------------------------

PID_DEFINITIONS = '''"""Names its one workflow after the process importing it: pid, host name (the
parse sandbox has a UTS namespace of its own) and a token drawn at import."""
import os
import socket
import uuid
from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

NAME = "ran_%d_%s_%s" % (os.getpid(), socket.gethostname(), uuid.uuid4().hex)
WORKFLOWS = {NAME: WorkflowConfig(
    jobs={"a": JobConfig(CommandJobTemplate("a", "echo a"))},
    final_job_config=JobConfig(CommandJobTemplate("final", "echo done")),
    schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0)))}
'''

PROBE = '''
import json, sys, grpc
from token_fetcher.config import parse_config
from token_fetcher.server import TokenFetcherServer
from token_fetcher._proto import token_fetcher_pb2 as pb, token_fetcher_pb2_grpc as pb_grpc

config = parse_config(json.loads(sys.argv[1]), __import__("pathlib").Path(sys.argv[2]))
server = TokenFetcherServer(config, shutdown_notice_seconds=0)
server.start()
assert server.catalog.wait_ready(60)
with grpc.insecure_channel("127.0.0.1:%d" % server.port) as channel:
    stub = pb_grpc.TokenFetcherStub(channel)
    for cluster in ("example_python", "example_json"):
        for summary in stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=cluster)).workflows:
            stub.GetJobTokens(pb.GetJobTokensRequest(
                cluster=cluster, workflow=summary.name, run_time=summary.schedule.next_run_time))
    runs = [stub.ListWorkflows(pb.ListWorkflowsRequest(cluster="pids")).workflows[0].name]
    stub.Reload(pb.ReloadRequest(cluster="pids"))
    runs.append(stub.ListWorkflows(pb.ListWorkflowsRequest(cluster="pids")).workflows[0].name)
server.stop(grace=1)
print(json.dumps({
    "runs": runs,
    "pid": __import__("os").getpid(),
    "modules": sorted(sys.modules),
    "meta_path": [type(finder).__name__ for finder in sys.meta_path],
    "path": sys.path,
}))
'''

USER_MODULES = {"pinball", "pinball_ext", "example_workflows", "example_jobs", "json_templates",
                "pid_defs"}


def test_user_code_never_runs_in_the_server_process(tmp_path):
    """A fresh interpreter runs the server, loads and reloads definitions that record the
    process importing them, answers every workflow's tokens, then reports what it imported."""
    repo = tmp_path / "pid_repo"
    (repo / "pid_defs").mkdir(parents=True)
    (repo / "pid_defs" / "__init__.py").write_text("")
    (repo / "pid_defs" / "workflows.py").write_text(PID_DEFINITIONS)
    config = {"listen": "127.0.0.1:0", "metrics": "", "state_dir": str(tmp_path / "state"),
              "clusters": {
                  PY: cluster_from_yaml(EXAMPLES / "python_repo"),
                  JS: cluster_from_yaml(EXAMPLES / "json_repo"),
                  "pids": {"repo": str(repo),
                           "parser": "pinball_ext.workflow.parser.PyWorkflowParser",
                           "parser_params": {"workflows_config": "pid_defs.workflows.WORKFLOWS"}},
              }}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(PROBE), json.dumps(config),
                           str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    imported = {name for name in report["modules"] if name.split(".")[0] in USER_MODULES}
    assert imported == set(), imported
    assert "_ShimFinder" not in report["meta_path"]
    assert not any(str(EXAMPLES) in entry or str(repo) in entry for entry in report["path"])
    # The definitions ran twice (the first load, the Reload), each time imported afresh in
    # a sandboxed worker (host name "parse"): never in the server's own process.
    runs = [name.split("_") for name in report["runs"]]
    assert len(runs) == 2, runs
    for _, pid, host, _ in runs:
        assert int(pid) != report["pid"] and host == "parse", runs
    assert runs[0][3] != runs[1][3], "each parse gets a fresh worker"
    assert not _workers_left(str(repo))


def _workers_left(repo: str) -> list[int]:
    """Parse workers (or their sandboxes) still running for ``repo``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"legacy_parser.worker" in cmdline and repo.encode() in cmdline:
            found.append(int(entry.name))
    return found
