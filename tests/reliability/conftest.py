"""The reliability tier: faults, bad requests, bad definitions, load, limits and security.

Every test in this folder is marked ``reliability`` and runs in the normal ``make test``
(``pytest -m reliability`` runs only this tier, ``-m "not reliability"`` skips it). It talks
to 127.0.0.1 only, bounds every request loop in count and time, and waits on conditions
with deadlines rather than fixed sleeps. docs/reliability.md records what each test tried
and what the server did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .reliability_helpers import ServerProcess

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def serve_process(tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `token-fetcher serve` processes (``serve_process(config, name=...)``); each is
    stopped (SIGTERM, then SIGKILL) after the test."""
    started: list[ServerProcess] = []

    def start(config: dict, name: str = "server", credentials=None,
              args: tuple[str, ...] = ()) -> ServerProcess:
        server = ServerProcess(tmp_path / name, config, credentials=credentials, args=args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
