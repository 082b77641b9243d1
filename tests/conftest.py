"""Shared fixtures: real servers on loopback, copies of the example repos, the parser's
sandbox. Helpers that are not fixtures are in tests/helpers.py."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from legacy_parser.isolation import SandboxLimits
from legacy_parser.sandbox import Sandbox
from tests.helpers import EXAMPLES, EventWatch, example_clusters
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.config import parse_config
from token_fetcher.server import TokenFetcherServer

_private_mktemp = pytest.TempPathFactory.mktemp


def _shared_mktemp(self, basename: str, numbered: bool = True) -> Path:
    """pytest makes its temporary folders private (0700). Run as root, the sandbox parses
    as uid 65534, which must read the repos the tests lay out in them, as it must read a
    real checkout (SECURITY.md); so they are opened up like a checkout's folders."""
    path = _private_mktemp(self, basename, numbered)
    path.chmod(0o755)
    return path


pytest.TempPathFactory.mktemp = _shared_mktemp


@pytest.fixture
def example_copy(tmp_path) -> Callable[[str], Path]:
    """Copy an example repo (python_repo, json_repo, broken/...) into a scratch folder."""

    def copy(name: str) -> Path:
        target = tmp_path / "repos" / name.replace("/", "_")
        shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        return target

    return copy


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


@pytest.fixture
def watch_events():
    """Open WatchWorkflows streams (``watch_events(stub, cluster)``); cancelled afterwards."""
    watches: list[EventWatch] = []

    def open_watch(stub: pb_grpc.TokenFetcherStub, cluster: str = "") -> EventWatch:
        watch = EventWatch(stub, cluster)
        watches.append(watch)
        return watch

    yield open_watch
    for watch in watches:
        watch.close()


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    """The parser's sandbox, one per test module, closed after it."""
    box = Sandbox(SandboxLimits(timeout_seconds=30, memory_bytes=1024**3, workers=2))
    yield box
    box.close()
