"""The next snapshot of a cluster from a parse, and the changes watchers hear of.

A workflow that fails keeps its last good version, flagged stale; a workflow whose
layout changes although the parse read the same files as the one before is dynamic.
Pure functions of the snapshot before and the parse (and of a workflow, its version):
token_fetcher.catalog does the parsing, the swap and the publishing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from legacy_parser import model
from legacy_parser.result_wire import KnownWorkflows
from token_fetcher import convert
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.snapshot import Change, ClusterSnapshot, Entry, LoadState, Status, Version

__all__ = ["merge", "new_versions", "servable", "served_fingerprints", "version_of",
           "version_or_problem"]


def merge(previous: ClusterSnapshot, result: model.ParseResult, wall_started: float,
          versions: Mapping[str, Version], restored: Mapping[str, Version],
          same_inputs: bool) -> tuple[ClusterSnapshot, list[Change]]:
    """The snapshot a parse gives; a workflow that fails keeps its last good version:
    the one ``previous`` serves, else the one ``restored`` from the history. ``versions``:
    the version of each workflow of ``result``, by name.

    ``same_inputs``: the parse read the same files with the same contents, and the same
    parser setup, as the one before. Then a workflow whose layout changed is dynamic
    (its definition depends on the clock, randomness or outside data), and one whose
    layout did not change is no longer. Otherwise the flag stays as it was.
    """
    name = previous.name
    entries: dict[str, Entry] = {}
    for workflow in result.workflows:
        old = previous.entries.get(workflow.name)
        version = versions[workflow.name]
        was_ok = old is not None and old.version is not None and old.status is Status.OK
        if was_ok and old.version.fingerprint == version.fingerprint:
            # Unchanged: keep its ready-made answers, unless a re-parse of the same
            # files just showed that its layout is stable again.
            entries[workflow.name] = old if not (same_inputs and old.dynamic) \
                else Entry(workflow.name, Status.OK, version, ())
        else:
            dynamic = (was_ok and same_inputs) or (old is not None and old.dynamic)
            entries[workflow.name] = Entry(workflow.name, Status.OK, version, (), dynamic)
    by_workflow: dict[str, list[model.WorkflowError]] = {}
    cluster_errors = []
    for error in result.errors:
        if error.workflow:
            by_workflow.setdefault(error.workflow, []).append(error)
        else:
            cluster_errors.append(error)
    for workflow_name, errors in by_workflow.items():
        entries[workflow_name] = _failed_entry(previous, restored, workflow_name,
                                               tuple(errors))
    if cluster_errors:
        # The parse as a whole failed: keep every workflow it could not see.
        for workflow_name in [*previous.entries, *restored]:
            if workflow_name not in entries:
                entries[workflow_name] = _failed_entry(previous, restored, workflow_name,
                                                       tuple(cluster_errors))
    succeeded = bool(result.workflows) or not cluster_errors
    if not succeeded and (previous.state is LoadState.FAILED
                          or (previous.state is LoadState.LOADING and not entries)):
        state = LoadState.FAILED
    else:
        state = LoadState.READY
    snapshot = ClusterSnapshot(
        name=name,
        state=state,
        format=previous.format,
        entries=entries,
        names=tuple(sorted(entries)),
        cluster_errors=tuple(cluster_errors),
        # The cluster's errors and those of every workflow (stale entries carry the
        # cluster's errors too: listed once).
        errors=tuple(dict.fromkeys([*cluster_errors, *(
            error for workflow in sorted(entries) for error in entries[workflow].errors)])),
        loaded_at=wall_started,
        load_duration=result.duration_seconds,
        last_success=(wall_started if not any(e.errors for e in entries.values())
                      and not cluster_errors else previous.last_success),
        files_watched=len(result.files),
        job_count=sum(len(e.version.workflow.jobs) for e in entries.values() if e.version),
    )
    return snapshot, _changes(previous, snapshot, wall_started, same_inputs)


def served_fingerprints(snapshot: ClusterSnapshot) -> dict[str, str]:
    return {name: entry.version.fingerprint for name, entry in snapshot.entries.items()
            if entry.version is not None}


def new_versions(previous: ClusterSnapshot, snapshot: ClusterSnapshot) -> list[Version]:
    known = {e.version.fingerprint for e in previous.entries.values() if e.version}
    return [e.version for e in snapshot.entries.values()
            if e.version is not None and e.version.fingerprint not in known]


def _failed_entry(previous: ClusterSnapshot, restored: Mapping[str, Version], name: str,
                  errors: tuple[model.WorkflowError, ...]) -> Entry:
    old = previous.entries.get(name)
    good = old.version if old is not None else restored.get(name)
    return Entry(name, Status.STALE if good else Status.BROKEN, good, errors,
                 old is not None and old.dynamic)


def _fingerprint(entry: Entry | None) -> str:
    return entry.version.fingerprint if entry is not None and entry.version else ""


def _changes(previous: ClusterSnapshot, snapshot: ClusterSnapshot, now: float,
             same_inputs: bool) -> list[Change]:
    event = pb.WorkflowEvent
    changes = []
    for name in snapshot.names:
        new, old = snapshot.entries[name], previous.entries.get(name)
        old_fp, new_fp = _fingerprint(old), _fingerprint(new)
        if new.status is not Status.OK:
            if old is None or old.status is Status.OK or old.errors != new.errors:
                changes.append(Change(event.TYPE_BROKEN, snapshot.name, name, old_fp, new_fp,
                                      new.errors, now))
        elif old is None:
            changes.append(Change(event.TYPE_ADDED, snapshot.name, name, "", new_fp, (), now))
        elif old_fp != new_fp and same_inputs and old.status is Status.OK:
            changes.append(Change(event.TYPE_DYNAMIC, snapshot.name, name, old_fp, new_fp, (),
                                  now))
        elif old_fp != new_fp or old.status is not Status.OK or old.dynamic != new.dynamic:
            changes.append(Change(event.TYPE_CHANGED, snapshot.name, name, old_fp, new_fp, (),
                                  now))
    for name in previous.names:
        if name not in snapshot.entries:
            changes.append(Change(event.TYPE_REMOVED, snapshot.name, name,
                                  _fingerprint(previous.entries[name]), "", (), now))
    return changes


def version_of(workflow: model.Workflow) -> Version:
    spec = convert.workflow_spec(workflow)
    return Version(workflow, convert.fingerprint(spec), spec.SerializeToString())


def _text(value: str) -> str:
    """``value`` as valid UTF-8: lone surrogates (say, from an undecodable file name) are
    escaped, since protobuf refuses them when a message is built."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def version_or_problem(workflow: model.Workflow) -> Version | ValueError:
    """The workflow's version; the ValueError of a value the contract cannot carry (a
    number outside its int32 or int64 field, text that is not UTF-8)."""
    try:
        return version_of(workflow)
    except ValueError as error:  # out of range; UnicodeEncodeError
        return error


def servable(result: model.ParseResult, known: KnownWorkflows,
             ) -> tuple[model.ParseResult, dict[str, Version]]:
    """The parse with every workflow built into its spec, and the versions by name. The
    sandbox built each version as the workflow's line arrived; a workflow it reused
    unchanged from the previous parse keeps its version.

    A workflow that the contract cannot carry becomes an error of that workflow, so
    that one bad value never stops the whole cluster's load.
    """
    versions: dict[str, Version] = {}
    problems: list[model.WorkflowError] = []
    for workflow in result.workflows:
        version = known.prepared(workflow)
        if isinstance(version, Version):
            versions[workflow.name] = version
            continue
        problems.append(model.WorkflowError(
            model.ErrorKind.INVALID_DEFINITION,
            f"workflow {_text(workflow.name)!r} has a value the service cannot carry "
            f"({_text(str(version))}): numbers must fit the contract's int32 and int64 "
            "fields and text must be valid UTF-8",
            result.cluster, _text(workflow.name), file=_text(workflow.file),
            line=workflow.line))
    errors = tuple(dataclasses.replace(
        error, message=_text(error.message), cluster=_text(error.cluster),
        workflow=_text(error.workflow), job=_text(error.job), file=_text(error.file))
        for error in result.errors) + tuple(problems)
    if not problems and errors == result.errors:
        return result, versions
    workflows = tuple(w for w in result.workflows if w.name in versions)
    return dataclasses.replace(result, workflows=workflows, errors=errors), versions
