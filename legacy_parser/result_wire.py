"""A parse result on its way from the worker to the server: one JSON line per workflow,
then one line with the rest of the result (errors, files read, duration).

A line per workflow lets the server rebuild each workflow as its line arrives, so its
memory never holds the whole result, as bytes or as plain data (which the allocator
keeps long after it is freed), and reuse a workflow whose line is byte for byte the one
it rebuilt in the cluster's previous parse: rebuilding equal bytes gives an equal,
immutable value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
from collections.abc import Iterator
from typing import TextIO

from legacy_parser.model import ParseResult, Workflow, from_plain, to_plain

# What a line that is not a result raises while it is rebuilt (RecursionError: JSON nested
# deeper than the decoder's stack; definition code can write to the result pipe).
MALFORMED = (ValueError, KeyError, TypeError, RecursionError)


def write_result(stream: TextIO, result: ParseResult) -> None:
    # dumps, not dump: dump streams through the pure-Python encoder (3.5x slower).
    for workflow in result.workflows:
        stream.write(json.dumps(to_plain(workflow)))
        stream.write("\n")
    rest = dataclasses.replace(result, workflows=())
    stream.write(json.dumps({"result": to_plain(rest)}))


class KnownWorkflows:
    """The workflows of a cluster's last result, by a digest of their lines.

    Not thread-safe: one per cluster, used by one parse at a time.
    """

    def __init__(self) -> None:
        self._by_digest: dict[bytes, Workflow] = {}

    def reader(self) -> ResultReader:
        return ResultReader(self)


class ResultReader:
    """Rebuilds one result from the chunks of the pipe, a workflow per complete line."""

    def __init__(self, known: KnownWorkflows) -> None:
        self._known = known
        self._pending = bytearray()
        self._workflows: list[Workflow] = []
        self._digests: dict[bytes, Workflow] = {}
        self._shared: dict = {}  # see from_plain
        self._error: BaseException | None = None
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self._error is not None:
            return
        self._pending += chunk
        start = 0
        with _collector_paused():
            try:
                while (end := self._pending.find(b"\n", start)) >= 0:
                    self._workflows.append(self._workflow(bytes(self._pending[start:end])))
                    start = end + 1
            except MALFORMED as error:
                self._error = error
            del self._pending[:start]

    def finish(self) -> ParseResult:
        """The result; raises what ``MALFORMED`` names when the output was not one. Only
        a whole result replaces what the cluster's known workflows are."""
        if self._error is not None:
            raise self._error
        with _collector_paused():
            rest = from_plain(ParseResult, json.loads(bytes(self._pending))["result"],
                              self._shared)
        self._known._by_digest = self._digests
        return dataclasses.replace(rest, workflows=(*self._workflows, *rest.workflows))

    def _workflow(self, line: bytes) -> Workflow:
        digest = hashlib.blake2b(line, digest_size=16).digest()
        workflow = self._known._by_digest.get(digest)
        if workflow is None:
            workflow = from_plain(Workflow, json.loads(line), self._shared)
        self._digests[digest] = workflow
        return workflow


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Rebuilding makes millions of objects; collections triggered on the way would
    traverse the growing heap again and again (1.4 s against 0.3 s at 3,000 workflows)
    and find nothing to free."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
