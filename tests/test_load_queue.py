"""The catalog's loads: a load with no other under way collects the heap while its parse
worker starts; loads that overlap leave the collector alone (token_fetcher.load_queue)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from token_fetcher.load_queue import LoadQueue


class Gate:
    """A load that asks for the collection, then waits to be let through."""

    def __init__(self, queue: LoadQueue) -> None:
        self.queue = queue
        self.asked = threading.Event()
        self.opened = threading.Event()

    def __call__(self) -> str:
        self.queue.collect_if_alone()
        self.asked.set()
        assert self.opened.wait(10)
        return "loaded"


@pytest.fixture
def collections() -> list[int]:
    return []


@pytest.fixture
def queue(collections: list[int]) -> Iterator[LoadQueue]:
    queue = LoadQueue(1, collect=lambda: collections.append(1))
    yield queue
    queue.shutdown()


def test_a_load_alone_collects(queue, collections) -> None:
    load = Gate(queue)
    load.opened.set()
    assert queue.submit(load).result(10) == "loaded"
    assert queue.run(load) == "loaded"
    assert collections == [1, 1]


def test_a_load_with_another_queued_does_not(queue, collections) -> None:
    holder = threading.Event()
    held = queue.submit(holder.wait, 10)  # one thread: the next two wait behind it
    first, second = Gate(queue), Gate(queue)
    futures = [queue.submit(first), queue.submit(second)]
    holder.set()
    held.result(10)
    assert first.asked.wait(10)
    assert collections == []  # the second is queued
    first.opened.set()
    futures[0].result(10)
    assert second.asked.wait(10)
    assert collections == [1]  # now alone
    second.opened.set()
    futures[1].result(10)


def test_a_cancelled_load_is_not_counted(collections) -> None:
    queue = LoadQueue(1, collect=lambda: collections.append(1))
    holder = threading.Event()
    held = queue.submit(holder.wait, 10)
    queued = queue.submit(lambda: None)
    assert queued.cancel()
    holder.set()
    held.result(10)
    queue.run(queue.collect_if_alone)
    assert collections == [1]
    queue.shutdown()


def test_a_load_in_the_callers_thread_counts(queue, collections) -> None:
    queued = Gate(queue)
    future = queue.submit(queued)
    assert queued.asked.wait(10)
    here = Gate(queue)
    here.opened.set()
    assert queue.run(here) == "loaded"
    assert collections == [1]  # the queued one's, which was alone when it asked
    queued.opened.set()
    future.result(10)


def test_a_load_refused_after_shutdown_is_not_counted(collections) -> None:
    queue = LoadQueue(1, collect=lambda: collections.append(1))
    queue.shutdown()
    with pytest.raises(RuntimeError):
        queue.submit(lambda: None)
    queue.run(queue.collect_if_alone)
    assert collections == [1]


def test_a_server_collects_while_a_reparse_worker_starts(start_server) -> None:
    full_collections: list[str] = []

    def record(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            full_collections.append(threading.current_thread().name)

    server = start_server()
    cluster = server.catalog.cluster_names()[0]
    here = threading.current_thread().name
    # Automatic collections off: only an explicit one is recorded.
    was_enabled = gc.isenabled()
    gc.disable()
    gc.callbacks.append(record)
    try:
        # The first loads may still be saving their history (SERVING comes first), and
        # a reload that overlaps them leaves the collector alone.
        def reload_collects() -> bool:
            assert server.catalog.reload(cluster).snapshot.state.name == "READY"
            return here in full_collections

        wait_for(reload_collects, timeout=20, message="a reload with no other load under way")
    finally:
        gc.callbacks.remove(record)
        if was_enabled:
            gc.enable()
    assert full_collections.count(here) == 1  # while it parsed


def test_a_server_collects_once_its_first_loads_have_ended(start_server) -> None:
    full_collections: list[str] = []

    def record(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            full_collections.append(threading.current_thread().name)

    was_enabled = gc.isenabled()
    gc.disable()
    gc.callbacks.append(record)
    try:
        start_server()
        wait_for(lambda: "catalog-poll" in full_collections,
                 message="the poller's collection after the first loads")
    finally:
        gc.callbacks.remove(record)
        if was_enabled:
            gc.enable()
