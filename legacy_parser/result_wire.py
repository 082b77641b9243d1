"""A parse result on its way from the worker to the server: one JSON line per workflow,
then one line with the rest of the result (errors, files read, duration).

A line per workflow lets the server rebuild and check each workflow as its line arrives,
so its memory never holds the whole result, as bytes or as plain data (which the
allocator keeps long after it is freed), and reuse a workflow whose line is byte for byte
the one it rebuilt in the cluster's previous parse, with the verdict of the result caps
on it: rebuilding equal bytes gives an equal, immutable value, which the same caps judge
the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from legacy_parser.limits import ResultCaps, caps_violation
from legacy_parser.model import (
    ParseResult,
    SourceFile,
    Workflow,
    WorkflowError,
    from_plain,
    to_plain,
)

# What a line that is not a result raises while it is rebuilt (RecursionError: JSON nested
# deeper than the decoder's stack; definition code can write to the result pipe).
MALFORMED = (ValueError, KeyError, TypeError, RecursionError)


def write_workflow(stream: TextIO, workflow: Workflow) -> None:
    """One workflow's line, in any order: the reader sorts them by name."""
    # dumps, not dump: dump streams through the pure-Python encoder (3.5x slower).
    stream.write(json.dumps(to_plain(workflow)))
    stream.write("\n")


def write_rest(stream: TextIO, result: ParseResult) -> None:
    """The last line: ``result`` but its workflows (each written on its own line)."""
    stream.write(json.dumps({"result": to_plain(dataclasses.replace(result, workflows=()))}))


class KnownWorkflows:
    """The workflows of a cluster's last result by a digest of their lines, each with what
    the caps it was read under said of it, and what ``prepare`` made of it.

    ``prepare`` (the service: a workflow's spec and fingerprint) runs as a workflow's line
    arrives, while the worker builds the next one, and its value is kept as long as the
    workflow is; it must not raise. Not thread-safe: one per cluster, used by one parse at
    a time.
    """

    def __init__(self, prepare: Callable[[Workflow], Any] = lambda workflow: None) -> None:
        self._prepare = prepare
        self._by_digest: dict[bytes, _Checked] = {}
        self._caps: ResultCaps | None = None
        self._files: dict[str, SourceFile] = {}  # by path
        self._prepared: dict[int, _Checked] = {}  # by the workflow's id

    def reader(self, caps: ResultCaps) -> ResultReader:
        """A reader of one result, which keeps each workflow within ``caps``."""
        return ResultReader(self, caps)

    def prepared(self, workflow: Workflow) -> Any:
        """What ``prepare`` made of ``workflow``, a workflow of the last result read (the
        entry holds it, so no other object has its id)."""
        return self._prepared[id(workflow)].prepared


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    workflow: Workflow
    violation: WorkflowError | None
    prepared: Any


class ResultReader:
    """Rebuilds one result from the chunks of the pipe, a workflow per complete line; a
    workflow that breaks the caps becomes its error."""

    def __init__(self, known: KnownWorkflows, caps: ResultCaps) -> None:
        self._known = known
        self._caps = caps
        # Verdicts of other caps do not hold (the catalog gives one sandbox's caps).
        self._reusable = known._by_digest if known._caps == caps else {}
        self._pending = bytearray()
        self._checked: list[_Checked] = []
        self._digests: dict[bytes, _Checked] = {}
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
                    self._checked.append(self._workflow(bytes(self._pending[start:end])))
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
            plain = json.loads(bytes(self._pending))["result"]
            rest = from_plain(ParseResult, {**plain, "files": []}, self._shared)
            files = tuple([self._file(item) for item in plain["files"]])
        if rest.workflows:
            raise ValueError("workflows in the last line, where the worker writes none")
        self._known._by_digest, self._known._caps = self._digests, self._caps
        self._known._files = {file.path: file for file in files}
        self._known._prepared = {id(c.workflow): c for c in self._checked}
        # A parse lists its workflows by name; the worker writes each as it is built.
        self._checked.sort(key=lambda checked: checked.workflow.name)
        return dataclasses.replace(
            rest, workflows=tuple(c.workflow for c in self._checked if c.violation is None),
            errors=(*rest.errors, *(c.violation for c in self._checked if c.violation)),
            files=files)

    def _file(self, item: dict) -> SourceFile:
        """The file as the last result had it when it is unchanged: a re-parse reads the
        same 170,000 files of a large JSON tree again, and new objects for them would
        survive into the collector's oldest generation and set off a full collection of
        the server's heap (0.3 s at 10,000 workflows) at each re-parse."""
        old = self._known._files.get(item["path"]) if type(item) is dict else None
        if old is not None and len(item) == 2 and item.get("sha256") == old.sha256:
            return old
        return from_plain(SourceFile, item, self._shared)

    def _workflow(self, line: bytes) -> _Checked:
        digest = hashlib.blake2b(line, digest_size=16).digest()
        checked = self._reusable.get(digest)
        if checked is None:
            workflow = from_plain(Workflow, json.loads(line), self._shared)
            violation = caps_violation(workflow, self._caps)
            checked = _Checked(workflow, violation,
                               None if violation else self._known._prepare(workflow))
        self._digests[digest] = checked
        return checked


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
