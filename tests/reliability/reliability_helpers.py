"""Helpers of the reliability tier: `token-fetcher serve` as a real process, metrics,
certificates, and the consistency checks the load test applies to every answer.

Everything talks to 127.0.0.1 only. Nothing here sleeps for a fixed time: waits poll a
condition until a deadline.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil
import yaml

from tests.helpers import EXAMPLES, health, parse_workers, recomputed_fingerprint, scrape, wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc

BIN = Path(sys.executable).parent
PY = "example_python"
JS = "example_json"
SERVICE = "token_fetcher.v1.TokenFetcher"


def copy_example(tmp_path: Path, name: str) -> Path:
    target = tmp_path / "repos" / name.replace("/", "_")
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def python_cluster_inline(repo: Path) -> dict:
    """The Python example cluster with its parser settings inline rather than from the
    repo's pinball.yaml, so that faults of the repo reach the parse worker (with
    pinball_config they would already fail reading the YAML)."""
    setup = yaml.safe_load((EXAMPLES / "python_repo" / "pinball.yaml").read_text())
    return {"repo": str(repo), "parser": setup["parser"], "parser_params": setup["parser_params"],
            "default_email": setup["default_email"]}


def cluster_from_yaml(repo: Path) -> dict:
    return {"repo": str(repo), "pinball_config": str(repo / "pinball.yaml")}


def replace_atomically(path: Path, data: str | bytes) -> None:
    """Write aside, then rename over: readers see the old or the new file, never a part."""
    temp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, bytes):
        temp.write_bytes(data)
    else:
        temp.write_text(data)
    os.replace(temp, path)


# --- metrics ------------------------------------------------------------------------------


def codes_counted(samples) -> set[str]:
    """Every status code token_fetcher_rpcs_total has counted."""
    return {dict(labels)["code"] for name, labels in samples
            if name == "token_fetcher_rpcs_total"}


# --- processes ------------------------------------------------------------------------------


class ServerProcess:
    """``token-fetcher serve --config`` as a child process, its log read by a thread.
    ``config`` overrides the defaults below; a key set to None is left out of the file;
    ``args`` are added to the command line."""

    def __init__(self, folder: Path, config: dict, credentials=None,
                 args: tuple[str, ...] = ()) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        settings = {"listen": "127.0.0.1:0", "metrics": "127.0.0.1:0",
                    "state_dir": str(folder / "state"), "poll_interval_seconds": 0.1,
                    "shutdown_grace_seconds": 5}
        settings.update(config)
        settings = {key: value for key, value in settings.items() if value is not None}
        self.config = settings
        self.config_path = folder / "token-fetcher.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.credentials = credentials
        self.lines: list[str] = []
        self._ports: list[int] = []
        self.process = subprocess.Popen(
            [str(BIN / "token-fetcher"), "serve", "--config", str(self.config_path),
             "--log-level", "INFO", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        self.ps = psutil.Process(self.process.pid)
        self._reader = threading.Thread(target=self._read_log, name="server-log", daemon=True)
        self._reader.start()
        self._channels: list[grpc.Channel] = []
        try:
            wait_for(lambda: self._ports or self.process.poll() is not None, timeout=60,
                     message="the server's listening log line")
            if not self._ports:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.log}")
        except BaseException:
            self.kill()
            raise
        self.port = self._ports[0]
        self.target = f"127.0.0.1:{self.port}"

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.search(r"listening on \S+ \(port (\d+)\)", line)
            if found:
                self._ports.append(int(found.group(1)))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def channel(self, **options) -> grpc.Channel:
        opts = list(options.items())
        if self.credentials is None:
            channel = grpc.insecure_channel(self.target, options=opts)
        else:
            channel = grpc.secure_channel(self.target, self.credentials, options=opts)
        self._channels.append(channel)
        return channel

    def stub(self) -> pb_grpc.TokenFetcherStub:
        return pb_grpc.TokenFetcherStub(self.channel())

    def wait_serving(self, timeout: float = 60.0) -> None:
        channel = self.channel()
        wait_for(lambda: health(channel) == "SERVING" or self.process.poll() is not None,
                 timeout=timeout, interval=0.05, message="SERVING")
        assert self.process.poll() is None, f"serve exited: {self.log}"

    def listening(self) -> list[tuple[str, int]]:
        """(address, port) of the process's listening sockets; an IPv4 address an IPv6
        socket is bound to (::ffff:127.0.0.1, as the metrics server does) shown as IPv4."""
        found = []
        for connection in self.ps.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                address = ipaddress.ip_address(connection.laddr.ip)
                mapped = getattr(address, "ipv4_mapped", None)
                found.append((str(mapped or address), connection.laddr.port))
        return sorted(found)

    @property
    def metrics_port(self) -> int:
        (port,) = [port for _, port in self.listening() if port != self.port]
        return port

    def scrape(self):
        return scrape(self.metrics_port)

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def threads(self) -> int:
        return self.ps.num_threads()

    def workers(self) -> list[psutil.Process]:
        return parse_workers(self.ps)

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(10)


# --- certificates ---------------------------------------------------------------------------


class Authority:
    """A certificate authority made up for a test (the `cryptography` package)."""

    def __init__(self, folder: Path, name: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.folder = folder
        self.name = name
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.cert_file = self._write(f"{name}-ca.pem", self._pem(self.cert))

    @staticmethod
    def _pem(cert) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return cert.public_bytes(serialization.Encoding.PEM)

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path

    @property
    def pem(self) -> bytes:
        return self._pem(self.cert)

    def issue(self, common_name: str, server: bool) -> tuple[Path, Path]:
        """(certificate file, key file) for a server on 127.0.0.1 or a client."""
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return (self._write(f"{common_name}.pem", self._pem(cert)),
                self._write(f"{common_name}.key", key_pem))


def client_credentials(authority: Authority,
                       pair: tuple[Path, Path] | None = None) -> grpc.ChannelCredentials:
    """Trust ``authority``; present ``pair`` (certificate, key) when given."""
    if pair is None:
        return grpc.ssl_channel_credentials(root_certificates=authority.pem)
    cert, key = pair
    return grpc.ssl_channel_credentials(root_certificates=authority.pem,
                                        private_key=key.read_bytes(),
                                        certificate_chain=cert.read_bytes())


# --- consistency of answers -------------------------------------------------------------------


class Inconsistent(AssertionError):
    pass


class Consistency:
    """Checks that an answer agrees with the spec of the fingerprint it carries, fetched by
    that fingerprint (once per fingerprint: a version never changes)."""

    def __init__(self, stub: pb_grpc.TokenFetcherStub) -> None:
        self.stub = stub
        self._specs: dict[tuple[str, str, str], pb.WorkflowSpec] = {}
        self._lock = threading.Lock()
        self.checked = 0

    def spec(self, cluster: str, workflow: str, fingerprint: str) -> pb.WorkflowSpec:
        key = (cluster, workflow, fingerprint)
        with self._lock:
            found = self._specs.get(key)
        if found is not None:
            return found
        answer = self.stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
            cluster=cluster, workflow=workflow, fingerprint=fingerprint), timeout=10)
        self.expect(answer.fingerprint == fingerprint, "pinned spec", answer.fingerprint,
                    fingerprint)
        self.check_spec(answer.spec, fingerprint)
        with self._lock:
            self._specs[key] = answer.spec
        return answer.spec

    def expect(self, condition: bool, what: str, *details) -> None:
        if not condition:
            raise Inconsistent(f"{what}: {details}")

    def check_spec(self, spec: pb.WorkflowSpec, fingerprint: str) -> None:
        self.expect(recomputed_fingerprint(spec) == fingerprint, "spec bytes vs fingerprint",
                    spec.name, fingerprint)
        self.checked += 1

    def check_tokens(self, cluster: str, tokens: pb.GetJobTokensResponse) -> None:
        spec = self.spec(cluster, tokens.workflow, tokens.fingerprint)
        jobs = {job.name: job for job in spec.jobs}
        self.expect({t.job for t in tokens.jobs} <= set(jobs), "token jobs", tokens.workflow)
        for token in tokens.jobs:
            job = jobs[token.job]
            self.expect(token.command == tokens.end_date.join(job.command.segments),
                        "token command vs spec", token.job, token.command)
            self.expect((token.max_attempts, list(token.inputs), list(token.outputs))
                        == (job.max_attempts, list(job.inputs), list(job.outputs)),
                        "token fields vs spec", token.job)
        self.expect(tokens.schedule.recurrence_seconds == spec.schedule.recurrence_seconds,
                    "schedule token vs spec", tokens.workflow)
        self.checked += 1

    def check_summary(self, cluster: str, summary: pb.WorkflowSummary) -> None:
        if not summary.fingerprint:
            return
        spec = self.spec(cluster, summary.name, summary.fingerprint)
        self.expect(summary.job_count == len(spec.jobs), "summary job_count", summary.name)
        self.expect(summary.schedule.reference_time == spec.schedule.reference_time,
                    "summary schedule", summary.name)
        self.checked += 1

    def check_resolved(self, cluster: str, workflow: str,
                       answer: pb.ResolveMigrationResponse) -> None:
        if answer.not_modified:
            self.spec(cluster, workflow, answer.fingerprint)
            return
        self.check_spec(answer.spec, answer.fingerprint)
        grid = answer.spec.schedule
        first = answer.handover.first_new_run_time.seconds
        self.expect((first - grid.reference_time.seconds) % grid.recurrence_seconds == 0,
                    "handover on the grid", workflow)
        self.expect(first > answer.handover.migration_time.seconds, "first run after migration",
                    workflow)


def free_port_below_ephemeral_range() -> int:
    """A free loopback port under Linux's ephemeral range (32768-60999), for a server that
    must come back on the same port: a client reconnecting to a port in that range while
    nothing listens there can be given the very same port as its own local end (a TCP
    self-connect), which would then keep the restarted server from binding it."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port between 20000 and 32000")
