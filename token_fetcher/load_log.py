"""What an operator reads of each load in the server log: a summary, and what broke,
recovered or turned out to be dynamic, each once, when it happens.

Names and messages come from definition code, so their control characters are escaped.
"""

from __future__ import annotations

import logging

from legacy_parser import model
from legacy_parser.control_characters import escape_control_characters
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.snapshot import Change, ClusterSnapshot, Status

__all__ = ["log_load"]

# The catalog's logger: docs/operations.md tells operators to follow it.
log = logging.getLogger("token_fetcher.catalog")


def log_load(previous: ClusterSnapshot, snapshot: ClusterSnapshot, changes: list[Change],
             seconds: float) -> None:
    """Log the load that turned ``previous`` into ``snapshot`` in ``seconds``."""
    name = escape_control_characters(snapshot.name)
    if snapshot.cluster_errors != previous.cluster_errors:
        for error in snapshot.cluster_errors:
            log.warning("cluster %s: the parse failed: %s", name, _described(error))
        if previous.cluster_errors and not snapshot.cluster_errors:
            log.info("cluster %s: the parse succeeds again", name)
    event = pb.WorkflowEvent
    for change in changes:
        new, old = snapshot.entries.get(change.workflow), previous.entries.get(change.workflow)
        workflow = escape_control_characters(change.workflow)
        if change.type == event.TYPE_BROKEN and new is not None:
            served = (f"its last good version {change.new_fingerprint[:12]} is served"
                      if new.status is Status.STALE else "it has no good version to serve")
            more = f" (and {len(new.errors) - 1} more errors)" if len(new.errors) > 1 else ""
            log.warning("cluster %s: workflow %s is %s (%s): %s%s", name, workflow,
                        new.status.name, served, _described(new.errors[0]), more)
        elif change.type == event.TYPE_DYNAMIC and old is not None and not old.dynamic:
            log.warning("cluster %s: workflow %s has a dynamic layout: it changed (%s -> %s) "
                        "although no file its parse read changed (does it depend on the clock, "
                        "randomness or outside data?); the newest is served", name, workflow,
                        change.old_fingerprint[:12], change.new_fingerprint[:12])
        elif change.type == event.TYPE_DYNAMIC:
            log.info("cluster %s: dynamic workflow %s changed again (%s -> %s)", name, workflow,
                     change.old_fingerprint[:12], change.new_fingerprint[:12])
        elif change.type == event.TYPE_CHANGED and old is not None and new is not None:
            if old.status is not Status.OK:
                log.info("cluster %s: workflow %s recovered: OK, version %s", name, workflow,
                         change.new_fingerprint[:12])
            if old.dynamic and not new.dynamic:
                log.info("cluster %s: workflow %s no longer looks dynamic: a re-parse of the "
                         "same files gave the same layout", name, workflow)
    log.info("cluster %s: loaded in %.2f s: %d workflows (%d OK, %d stale, %d broken, "
             "%d dynamic)", name, seconds, len(snapshot.entries), snapshot.count(Status.OK),
             snapshot.count(Status.STALE), snapshot.count(Status.BROKEN), snapshot.dynamic_count)


def _described(error: model.WorkflowError) -> str:
    """``kind at file:line: message``, with control characters escaped (definition code
    chooses the message)."""
    where = f" at {error.file}:{error.line}" if error.file and error.line else (
        f" at {error.file}" if error.file else "")
    return escape_control_characters(f"{error.kind.value}{where}: {error.message}")
