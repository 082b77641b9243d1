"""The docs run as written: every shell and Python block of README.md and docs/client.md,
in order, as a reader of a fresh clone would type them, against the server the README's
own ``make run`` starts.

The reader's checkout is a scratch folder that links to this one (so nothing is written
here), with one difference: examples/token-fetcher.yaml listens on free ports, and the
docs' addresses (127.0.0.1:50051, metrics :9464) are rewritten to them, the client
commands' default address too ($TOKEN_FETCHER_TARGET). Nothing else is changed. The shell
starts without the virtualenv on PATH, as a new terminal does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, free_port, health_at, wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb

DOCS = ("README.md", "docs/client.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
# Development targets are not examples to run against a server: `make test` would run
# this test inside itself, the others install Airflow, rewrite files or delete .venv.
DEVELOPMENT_TARGETS = {"test", "test-airflow", "test-browser", "lint", "proto", "bench", "clean",
                       "docker"}
SECOND_TERMINAL = ". .venv/bin/activate\n"  # what the README asks of the second terminal


def code_blocks(document: str) -> list[tuple[str, str]]:
    """(language, text) of every fenced block, in order."""
    return [(match[1], match[2]) for match in FENCE.finditer((ROOT / document).read_text())]


def commands(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.splitlines()
            if line.split("#")[0].strip()]


def is_development(block: str) -> bool:
    words = [command.split() for command in commands(block)]
    return bool(words) and all(w[0] == "make" and set(w[1:]) <= DEVELOPMENT_TARGETS
                               for w in words)


def starts_server(block: str) -> bool:
    return any(re.search(r"(^|&& )make run\b", command) for command in commands(block))


class Checkout:
    """A scratch folder a reader's shell runs in, linked to this checkout."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port, self.metrics_port = free_port(), free_port()
        folder.mkdir()
        for entry in ROOT.iterdir():
            if entry.name not in {"examples", ".git", "migrations", ".state"}:
                (folder / entry.name).symlink_to(entry)
        examples = folder / "examples"
        examples.mkdir()
        for entry in (ROOT / "examples").iterdir():
            if entry.name != "token-fetcher.yaml":
                (examples / entry.name).symlink_to(entry)
        config = yaml.safe_load((ROOT / "examples" / "token-fetcher.yaml").read_text())
        config.update(listen=f"127.0.0.1:{self.port}", metrics=f"127.0.0.1:{self.metrics_port}",
                      state_dir=str(folder / "state"))
        (examples / "token-fetcher.yaml").write_text(yaml.safe_dump(config))
        venv_bin = str(ROOT / ".venv" / "bin")
        self.env = {key: value for key, value in os.environ.items()
                    if key not in {"VIRTUAL_ENV", "TOKEN_FETCHER_TARGET", "MAKEFLAGS",
                                   "MAKELEVEL", "MFLAGS"}}
        # The client commands' default address, rewritten like the docs' own.
        self.env["TOKEN_FETCHER_TARGET"] = f"127.0.0.1:{self.port}"
        self.env["PATH"] = os.pathsep.join(
            part for part in os.environ.get("PATH", "").split(os.pathsep)
            if part and Path(part) != Path(venv_bin))

    def rewrite(self, text: str) -> str:
        return (text.replace("127.0.0.1:50051", f"127.0.0.1:{self.port}")
                .replace(":9464", f":{self.metrics_port}"))

    def shell(self, block: str, **popen) -> subprocess.Popen:
        script = "set -euo pipefail\n" + self.rewrite(block)
        return subprocess.Popen(["bash", "-c", script], cwd=self.folder, env=self.env,
                                text=True, **popen)

    def start_server(self, block: str, log: Path) -> subprocess.Popen:
        """Run a block that ends in a server in the background, until it is SERVING."""
        with log.open("w") as sink:
            server = self.shell(block, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        wait_for(lambda: health_at(self.port, timeout=2) == "SERVING" or server.poll() is not None,
                 timeout=120, interval=0.2, message="the server the docs start")
        assert server.poll() is None, log.read_text()
        return server

    def run_shell(self, block: str) -> str:
        process = self.shell(SECOND_TERMINAL + block, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"exit {process.returncode}:\n{block}\n---\n{output}"
        return output

    def run_python(self, block: str) -> str:
        result = subprocess.run([sys.executable, "-"], input=self.rewrite(block),
                                cwd=self.folder, env=self.env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{block}\n---\n{result.stdout}{result.stderr}"
        return result.stdout


@pytest.mark.slow
def test_the_docs_run_as_written(tmp_path):
    installed = subprocess.run(["make", "-q", "install"], cwd=ROOT, capture_output=True)
    assert installed.returncode == 0, "the virtualenv is not up to date: run `make install`"
    checkout = Checkout(tmp_path / "clone")
    server, log = None, tmp_path / "server.log"
    skipped = []
    try:
        for document in DOCS:
            python = [text for language, text in code_blocks(document) if language == "python"]
            for language, text in code_blocks(document):
                if language == "sh" and is_development(text):
                    skipped.append(text)
                elif language == "sh" and starts_server(text):
                    assert server is None, "the docs start a second server"
                    server = checkout.start_server(text, log)
                elif language == "sh":
                    checkout.run_shell(text)
            # The Python blocks of a document are one session (later ones use earlier names).
            if python:
                checkout.run_python("\n".join(python))
        assert server is not None, "README.md never starts the server"
        assert [commands(text) for text in skipped] == [[
            "make test", "make test-airflow", "make test-browser", "make lint", "make proto",
            "make bench", "make clean"]], "only the README's Development block is not run"
        assert (checkout.folder / "migrations" / "example_python" /
                "daily_reporting.json").is_file()
    finally:
        if server is not None and server.poll() is None:
            # As Ctrl-C in that terminal does: the whole foreground group (make and the
            # server under it) gets the signal.
            os.killpg(server.pid, signal.SIGINT)
            server.wait(60)
    assert health_at(checkout.port, timeout=2) == "UNAVAILABLE"
    assert "shutting down" in log.read_text()


def test_the_readme_shows_a_grpcurl_call_for_every_rpc():
    shown = set()
    for language, text in code_blocks("README.md"):
        if language == "sh":
            # A command starts at column 0; its continuation lines are indented.
            for command in re.split(r"\n(?=\S)", text):
                if command.startswith("grpcurl "):
                    shown |= set(re.findall(r"token_fetcher\.v1\.TokenFetcher/(\w+)", command))
    rpcs = {method.name for method in pb.DESCRIPTOR.services_by_name["TokenFetcher"].methods}
    assert rpcs - shown == set(), "RPCs without a grpcurl example in README.md"
