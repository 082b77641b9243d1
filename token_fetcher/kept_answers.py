"""Serialized answers kept by the bytes of the request they answer, while they stay true.

A scheduler fleet asks for the same spec over and over, with the same request bytes.
Answering from here skips decoding the request and the service's lookups: under load
that Python work, not gRPC's, was most of what the server cost above a server that only
returns ready bytes (benchmarks/ANALYSIS.md, "RPC answers kept by request").

An answer is true while no snapshot has been published since it was made (the
catalog's ``generation``: a load replaces its cluster's snapshot whole) and the clock
stays between the second it was made and the next run time it carries. A load makes
every kept answer unusable at once, and the first request after it drops them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["KeptAnswers"]

# Requests kept at most (about 250 bytes each, the answers being shared with the
# service's own caches). Past it the store starts over rather than track use: a request
# that falls out is answered the long way, and kept again.
DEFAULT_CAPACITY = 16384
# Longer requests are answered but not kept, so that the keys stay within about 16 MiB
# whatever the requests: the server takes messages of up to 64 MiB, and a request is
# two names and two fingerprints (a request for a workflow named in more than about
# 800 bytes of UTF-8 is answered the long way each time).
MAX_REQUEST_BYTES = 1024


class _Store(NamedTuple):
    generation: int
    answers: dict[bytes, tuple[int, int, bytes]]  # request: (since, until, answer)


# Never written to: keep() replaces a store of another generation before it writes.
_EMPTY = _Store(-1, {})


class KeptAnswers:
    def __init__(self, generation_of: Callable[[], int],
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self.generation_of = generation_of
        self._capacity = capacity
        self._lock = threading.Lock()
        self._store = _EMPTY

    def get(self, request: bytes, now: int) -> bytes | None:
        """The answer kept for exactly these bytes, if it is still true at ``now``."""
        store = self._store
        if store.generation != self.generation_of():
            if store is not _EMPTY:
                # Dropped now, not at the next keep(), which may never come. A keep()
                # racing with this may lose its answer: it is made again, never stale.
                self._store = _EMPTY
            return None
        kept = store.answers.get(request)
        if kept is None or not kept[0] <= now < kept[1]:
            return None
        return kept[2]

    def keep(self, request: bytes, answer: bytes, *, generation: int, since: int,
             until: int) -> None:
        """Keep ``answer``, made at ``since`` from the snapshots of ``generation`` (read
        before the answer was made), for requests up to the second before ``until``."""
        if len(request) > MAX_REQUEST_BYTES:
            return
        with self._lock:  # keep()s one at a time: no answer lands in a newer store
            if generation != self.generation_of():
                return  # a load came in between
            store = self._store  # get() may swap in _EMPTY meanwhile: this one is written
            if store.generation != generation or len(store.answers) >= self._capacity:
                store = self._store = _Store(generation, {})
            store.answers[request] = (since, until, answer)

    def __len__(self) -> int:
        return len(self._store.answers)
