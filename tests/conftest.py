"""Shared fixtures: real servers on loopback, copies of the example repos, waiting helpers."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.config import parse_config
from token_fetcher.server import TokenFetcherServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


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


@pytest.fixture
def example_copy(tmp_path) -> Callable[[str], Path]:
    """Copy an example repo (python_repo, json_repo, broken/...) into a scratch folder."""

    def copy(name: str) -> Path:
        target = tmp_path / "repos" / name.replace("/", "_")
        shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        return target

    return copy


def example_clusters(python_repo: Path | None = None, json_repo: Path | None = None) -> dict:
    python_repo = python_repo or EXAMPLES / "python_repo"
    json_repo = json_repo or EXAMPLES / "json_repo"
    return {
        "example_python": {"repo": str(python_repo),
                           "pinball_config": str(python_repo / "pinball.yaml")},
        "example_json": {"repo": str(json_repo), "pinball_config": str(json_repo / "pinball.yaml")},
    }


@pytest.fixture
def start_server(tmp_path):
    """Start real servers on 127.0.0.1 (free ports); every one is stopped after the test."""
    servers: list[TokenFetcherServer] = []

    def start(clusters: dict | None = None, wait_ready: bool = True,
              state_dir: Path | None = None, **settings) -> TokenFetcherServer:
        data = {"listen": "127.0.0.1:0", "metrics": "127.0.0.1:0",
                "state_dir": str(state_dir or tmp_path / "state"),
                "poll_interval_seconds": 0.05,
                "clusters": clusters or example_clusters()}
        data.update(settings)
        server = TokenFetcherServer(parse_config(data, tmp_path), shutdown_notice_seconds=0)
        servers.append(server)
        server.start()
        if wait_ready:
            assert server.catalog.wait_ready(60), "first load did not finish"
        return server

    yield start
    for server in servers:
        server.stop(grace=1)


@pytest.fixture
def stub_for():
    """A TokenFetcher stub on a channel to a server's port; channels are closed afterwards."""
    channels: list[grpc.Channel] = []

    def make(server: TokenFetcherServer) -> pb_grpc.TokenFetcherStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        channels.append(channel)
        return pb_grpc.TokenFetcherStub(channel)

    yield make
    for channel in channels:
        channel.close()
