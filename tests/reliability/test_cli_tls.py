"""The client commands against a mutual-TLS server: --ca-file, --cert-file, --key-file."""

from __future__ import annotations

import subprocess

from .reliability_helpers import BIN, Authority


def test_client_commands_speak_mutual_tls(start_server, tmp_path):
    pki = tmp_path / "pki"
    authority = Authority(pki, "good")
    cert, key = authority.issue("server", server=True)
    server = start_server(tls={"cert_file": str(cert), "key_file": str(key),
                               "client_ca_file": str(authority.cert_file)})
    client_cert, client_key = authority.issue("operator", server=False)
    tls = ["--target", f"127.0.0.1:{server.port}", "--ca-file", str(authority.cert_file),
           "--cert-file", str(client_cert), "--key-file", str(client_key), "--timeout", "5"]

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "token-fetcher"), *argv], capture_output=True,
                              text=True, timeout=60)

    for argv in (["health"], ["info"], ["list", "--cluster", "example_python"]):
        result = run(*argv, *tls)
        assert result.returncode == 0, (argv, result.stderr)
    assert "SERVING" in run("health", *tls).stdout
    # Without the client certificate the server refuses the handshake.
    refused = run("health", *tls[:4], "--timeout", "5")
    assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr
    # Half a key pair is a usage error.
    assert run("info", *tls[:6]).returncode == 2
