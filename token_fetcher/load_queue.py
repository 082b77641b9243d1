"""The catalog's loads on their threads, and when the server collects its heap.

A re-parse swaps a cluster's served models for new ones: the old become garbage and the
new join the heap. CPython's collector makes its full pass over the whole heap (0.25-0.40 s
at 10,000 workflows) once enough new objects have joined it, at the next burst of
allocations, which is the look at the next change and the start of its parse: one edit
in four waited for it at that size. So a load that has no other under way collects the
heap while its parse worker starts up: on a second CPU the pass then costs no time, and
the objects that the parse's result adds next stay too few to start another before the
load ends. Loads that overlap (the first loads of many clusters, a burst of re-parses)
leave the collector to its own schedule: a pass per load would cost more than it saves.
After the first loads, whose models are all new, the catalog collects once, when its
first look at what changed during them is done.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["LoadQueue"]

Result = TypeVar("Result")


class LoadQueue:
    """Loads run on ``workers`` threads (``submit``) or in the caller's (``run``); each
    calls ``collect_if_alone`` once its parse worker is running."""

    def __init__(self, workers: int, collect: Callable[[], object] = gc.collect) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="catalog-load")
        self._collect = collect
        self._lock = threading.Lock()
        self._unfinished = 0

    def submit(self, load: Callable[..., Result], *args: Any) -> Future[Result]:
        """Queue ``load(*args)``; RuntimeError after shutdown()."""
        self._begin()
        try:
            future = self._executor.submit(self._counted, load, *args)
        except BaseException:
            self._end()
            raise
        future.add_done_callback(self._end_if_cancelled)
        return future

    def run(self, load: Callable[..., Result], *args: Any) -> Result:
        """``load(*args)`` here and now, counted like a queued load."""
        self._begin()
        return self._counted(load, *args)

    def collect_if_alone(self) -> None:
        """From a load: collect the heap unless another load is queued or running."""
        with self._lock:
            alone = self._unfinished == 1
        if alone:
            self._collect()

    def collect(self) -> None:
        self._collect()

    def shutdown(self) -> None:
        """Waits for the running loads; the queued ones are cancelled."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _begin(self) -> None:
        with self._lock:
            self._unfinished += 1

    def _counted(self, load: Callable[..., Result], *args: Any) -> Result:
        # Ended before the caller hears of the result: whoever waits for it sees the
        # load finished.
        try:
            return load(*args)
        finally:
            self._end()

    def _end_if_cancelled(self, future: Future[Any]) -> None:
        if future.cancelled():  # it never ran
            self._end()

    def _end(self) -> None:
        with self._lock:
            self._unfinished -= 1
