"""Per-cluster versioned snapshots of parsed workflows: load, watch, refresh, last-known-good.

A snapshot is immutable and swapped in whole, so requests read a consistent view
without locks. When a new parse breaks a workflow (or the whole cluster), its last
good version stays served, flagged stale, with the error. Watchers hear of every
change. Requests never parse, import user code or walk the file system: all of that
happens here, in background threads and sandbox workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass

import cachetools

from legacy_parser import model
from legacy_parser.cluster import JSON_PARSER
from legacy_parser.control_characters import escape_control_characters
from legacy_parser.result_wire import KnownWorkflows
from legacy_parser.sandbox import Sandbox, SandboxClosed
from token_fetcher import convert
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.config import ClusterConfig, ConfigError, ServerConfig
from token_fetcher.history import VersionHistory
from token_fetcher.metrics import ServerMetrics
from token_fetcher.watch import FileWatch

log = logging.getLogger(__name__)


class Status(enum.Enum):
    OK = pb.PARSE_STATUS_OK
    STALE = pb.PARSE_STATUS_STALE
    BROKEN = pb.PARSE_STATUS_BROKEN


class LoadState(enum.Enum):
    LOADING = pb.LOAD_STATE_LOADING
    READY = pb.LOAD_STATE_READY
    FAILED = pb.LOAD_STATE_FAILED


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a workflow: the parsed model and its spec, kept serialized (a third
    of the memory of the message; a served answer is cached by the service)."""

    workflow: model.Workflow
    fingerprint: str
    spec_bytes: bytes  # a WorkflowSpec without next_run_time

    def spec(self) -> pb.WorkflowSpec:
        return pb.WorkflowSpec.FromString(self.spec_bytes)


# Compared and hashed by identity: an unchanged workflow keeps its Entry across parses
# (see _merge), so the service can key the answers it builds from one on it.
@dataclass(frozen=True, eq=False, slots=True, weakref_slot=True)
class Entry:
    name: str
    status: Status
    version: Version | None
    errors: tuple[model.WorkflowError, ...]
    # The layout changed between two parses that read the same files (see _merge).
    dynamic: bool = False


@dataclass(frozen=True)
class ClusterSnapshot:
    name: str
    state: LoadState
    format: int
    entries: Mapping[str, Entry]
    names: tuple[str, ...]
    cluster_errors: tuple[model.WorkflowError, ...]
    errors: tuple[model.WorkflowError, ...]
    loaded_at: float | None = None
    load_duration: float = 0.0
    last_success: float | None = None
    files_watched: int = 0
    job_count: int = 0

    def count(self, status: Status) -> int:
        return sum(1 for entry in self.entries.values() if entry.status is status)

    @property
    def dynamic_count(self) -> int:
        return sum(1 for entry in self.entries.values() if entry.dynamic)


@dataclass(frozen=True)
class Change:
    type: int  # pb.WorkflowEvent.Type
    cluster: str
    workflow: str
    old_fingerprint: str
    new_fingerprint: str
    errors: tuple[model.WorkflowError, ...]
    time: float


@dataclass(frozen=True)
class ReloadOutcome:
    snapshot: ClusterSnapshot
    changes: tuple[Change, ...]


# How many changes a watcher may fall behind before its watch ends.
WATCH_QUEUE_CAPACITY = 10000


class Subscription:
    """A watcher's queue of changes; ``overflowed`` when it fell too far behind."""

    def __init__(self, cluster: str, capacity: int = WATCH_QUEUE_CAPACITY) -> None:
        self.cluster = cluster
        self.queue: queue.Queue[Change | None] = queue.Queue(capacity)
        self.overflowed = False

    def offer(self, change: Change | None) -> None:
        try:
            self.queue.put_nowait(change)
        except queue.Full:
            self.overflowed = True


class Catalog:
    def __init__(self, config: ServerConfig, sandbox: Sandbox, history: VersionHistory,
                 metrics: ServerMetrics) -> None:
        self.config = config
        self.sandbox = sandbox
        self.history = history
        self.metrics = metrics
        self._snapshots: dict[str, ClusterSnapshot] = {
            name: ClusterSnapshot(name, LoadState.LOADING, _format(cluster), {}, (), (), ())
            for name, cluster in config.clusters.items()
        }
        self._cluster_locks = {name: threading.Lock() for name in config.clusters}
        self._watches = {name: FileWatch() for name in config.clusters}
        self._known = {name: KnownWorkflows() for name in config.clusters}
        self._last_good_files: dict[str, dict[str, str]] = {n: {} for n in config.clusters}
        # What the last parse read (its files and parser setup), to tell a layout that
        # changed by itself from one whose sources changed; None after a failed parse.
        self._inputs: dict[str, tuple | None] = {n: None for n in config.clusters}
        # When each cluster was last parsed or queued for parsing (time.monotonic).
        self._parsed_at = {n: 0.0 for n in config.clusters}
        self._versions: cachetools.LRUCache[tuple[str, str], Version] = cachetools.LRUCache(4096)
        self._versions_lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self._subscribers_lock = threading.Lock()
        self._stop = threading.Event()
        self._first_load_done = threading.Event()
        self._awaiting_first_load = set(config.clusters)
        self._awaiting_lock = threading.Lock()
        self._loader = ThreadPoolExecutor(max_workers=max(1, config.sandbox.workers),
                                          thread_name_prefix="catalog-load")
        self._poller: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Begin the first load of every cluster, then poll for changes."""
        futures = [self._loader.submit(self._load, name) for name in self.config.clusters]
        for future in futures:
            future.add_done_callback(_log_failure)

        def first_load_then_poll() -> None:
            for future in futures:
                # stop() during the first load cancels the loads still queued.
                with contextlib.suppress(CancelledError):
                    future.exception()
            self._first_load_done.set()
            self._poll_forever()

        self._poller = threading.Thread(target=first_load_then_poll, name="catalog-poll",
                                        daemon=True)
        self._poller.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._first_load_done.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._first_load_done.is_set()

    def stop(self) -> None:
        """Stop loading and polling, kill parse workers and end watch streams. Reads keep
        working, pinned versions from the history included, for the calls still in flight."""
        self._stop.set()
        self.sandbox.close()
        self._loader.shutdown(wait=True, cancel_futures=True)
        if self._poller is not None:
            self._poller.join(timeout=10)
        for name, watch in self._watches.items():
            with self._cluster_locks[name]:  # not while a poll that timed out reads it
                watch.close()
        with self._subscribers_lock:
            for subscriber in self._subscribers:
                subscriber.offer(None)

    def close(self) -> None:
        self.stop()
        self.history.close()

    # --- reads (request path: memory only, except pinned versions from history) ---

    def cluster_names(self) -> list[str]:
        return list(self.config.clusters)

    def snapshot(self, cluster: str) -> ClusterSnapshot | None:
        return self._snapshots.get(cluster)

    def version(self, cluster: str, fingerprint: str) -> Version | None:
        """Any version this cluster has served, kept in memory or in the history."""
        key = (cluster, fingerprint)
        with self._versions_lock:
            found = self._versions.get(key)
        if found is not None:
            return found
        workflow = self.history.load(cluster, fingerprint)
        if workflow is None:
            return None
        version = _version(workflow)
        if version.fingerprint != fingerprint:
            return None
        with self._versions_lock:
            self._versions[key] = version
        return version

    # --- watchers -------------------------------------------------------------------

    def subscribe(self, cluster: str) -> Subscription:
        subscription = Subscription(cluster)
        with self._subscribers_lock:
            self._subscribers.append(subscription)
        if self._stop.is_set():
            subscription.offer(None)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._subscribers_lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def _publish(self, changes: Iterable[Change]) -> None:
        with self._subscribers_lock:
            subscribers = list(self._subscribers)
        for change in changes:
            for subscriber in subscribers:
                if not subscriber.cluster or subscriber.cluster == change.cluster:
                    subscriber.offer(change)

    # --- loading --------------------------------------------------------------------

    def reload(self, cluster: str) -> ReloadOutcome | None:
        """Re-parse a cluster now; None when the catalog is shutting down."""
        return self._load(cluster)

    def _poll_forever(self) -> None:
        while (due := self._wait_for_due()) is not None:
            for name, cluster in self.config.clusters.items():
                if self._stop.is_set():
                    return
                if name not in due:
                    continue
                lock = self._cluster_locks[name]
                if lock.locked():
                    continue  # a load is under way; it resets the watch when done
                with lock:
                    changed = self._watches[name].changed()
                now = time.monotonic()
                if changed:
                    log.info("cluster %s: %s changed; re-parsing", name, changed[0])
                elif not (cluster.reparse_interval_seconds and now - self._parsed_at[name]
                          >= cluster.reparse_interval_seconds):
                    continue
                self._parsed_at[name] = now
                try:
                    future = self._loader.submit(self._load, name, now if changed else None)
                except RuntimeError:  # stop() shut the loader down meanwhile
                    return
                future.add_done_callback(_log_failure)

    def _wait_for_due(self) -> set[str] | None:
        """The clusters to look at: all of them every ``poll_interval_seconds``, and at once
        those whose watched folders report an event; None when stopping."""
        deadline = time.monotonic() + self.config.poll_interval_seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return set(self.config.clusters)
            descriptors = {name: watch.fileno() for name, watch in self._watches.items()}
            # A cluster being loaded waits: the load resets its watch when done.
            notifying = {fd: name for name, fd in descriptors.items()
                         if fd is not None and not self._cluster_locks[name].locked()}
            if not notifying:
                polling_only = all(fd is None for fd in descriptors.values())
                self._stop.wait(left if polling_only else min(left, _STOP_CHECK_SECONDS))
                continue
            ready = select.select(list(notifying), [], [], min(left, _STOP_CHECK_SECONDS))[0]
            if ready:
                # Let the rest of a burst of writes (a checkout) land first.
                return None if self._stop.wait(_SETTLE_SECONDS) else \
                    {notifying[fd] for fd in ready}
        return None

    def _load(self, name: str, change_seen_at: float | None = None) -> ReloadOutcome | None:
        cluster = self.config.clusters[name]
        with self._cluster_locks[name]:
            if self._stop.is_set():
                return None
            started = time.monotonic()
            wall_started = time.time()
            previous = self._snapshots[name]
            extra_watch = [cluster.pinball_config] if cluster.pinball_config else []
            setup = None
            before = self._watches[name].signatures()
            try:
                # Always the whole cluster, in a fresh worker: a module may change any other
                # workflow (by patching the shims, say), so only a full parse of the current
                # sources is sure to serve what they define.
                setup = cluster.parser_setup()
                result = self.sandbox.parse(cluster.name, cluster.repo, setup.parser,
                                            setup.parser_params, setup.default_email,
                                            python2_definitions=cluster.python2_definitions,
                                            stub_modules=cluster.stub_modules,
                                            known=self._known[name])
            except ConfigError as error:
                result = model.ParseResult(name, (), (model.WorkflowError(
                    model.ErrorKind.INVALID_CONFIG, str(error), name),), (), 0.0)
            except SandboxClosed:
                return None
            result, versions = _servable(result, previous)
            # Until a load succeeds, a workflow that fails has its last good version in the
            # history: what the cluster served before the restart.
            restored = self._restored(name) if previous.state is LoadState.LOADING \
                and result.errors else {}
            inputs = (frozenset(result.files), setup) if result.files and not any(
                not error.workflow for error in result.errors) else None
            same_inputs = inputs is not None and inputs == self._inputs[name]
            self._inputs[name] = inputs
            snapshot, changes = self._merge(previous, result, wall_started, versions, restored,
                                            same_inputs)
            new_versions = {v.fingerprint: v.workflow for v in _new_versions(previous, snapshot)}
            served = _served(snapshot)
            with self._versions_lock:
                for entry in snapshot.entries.values():
                    if entry.version is not None:
                        self._versions[(name, entry.version.fingerprint)] = entry.version
            self._snapshots[name] = snapshot
            self._reset_watch(cluster, result, extra_watch, before)
            if change_seen_at is not None:
                self.metrics.refresh_lag.labels(name).observe(time.monotonic() - change_seen_at)
            _record_load(self.metrics, snapshot, result, changes)
            self._parsed_at[name] = time.monotonic()
        _log_load(previous, snapshot, changes, time.monotonic() - started)
        self._publish(changes)
        self._first_load_swapped(name)
        # After the swap: the history serves only pinned past versions (current ones are
        # in memory), so serving and watchers need not wait for the database.
        self.history.save(name, list(new_versions.items()),
                          served if served != _served(previous) or self.history.error
                          else None)
        self.metrics.state_store_healthy.set(0 if self.history.error else 1)
        return ReloadOutcome(snapshot, tuple(changes))

    def _first_load_swapped(self, cluster: str) -> None:
        """Ready once every cluster serves its first snapshot: the history save after it
        (seconds at 10,000 workflows) need not hold up SERVING."""
        with self._awaiting_lock:
            self._awaiting_first_load.discard(cluster)
            if not self._awaiting_first_load:
                self._first_load_done.set()

    def _restored(self, cluster: str) -> dict[str, Version]:
        """The versions the history says this cluster served last, by workflow name."""
        restored = {}
        for fingerprint, workflow in self.history.served(cluster).items():
            version = _version(workflow)
            if version.fingerprint == fingerprint:  # else saved by an incompatible release
                restored[workflow.name] = version
        return restored

    def _reset_watch(self, cluster: ClusterConfig, result: model.ParseResult,
                     extra: list[str], before: Mapping[str, tuple | None]) -> None:
        root = cluster.repo
        parsed = {os.path.join(root, f.path): f.sha256 for f in result.files}
        if not result.errors:
            self._last_good_files[cluster.name] = parsed
        # Files of the last good parse are watched too: a broken parse may have read
        # none (say, the repo folder vanished), yet their return must trigger a retry.
        also = [*self._last_good_files[cluster.name], *extra]
        if result.errors:
            # A broken parse may wait for a file it could not find (a module imported
            # before it is written, say): watch the listings of the folders it read from
            # and of the repo root, so that the file's arrival triggers a retry.
            folders = {os.path.dirname(path.rstrip(os.sep)) for path in parsed}
            folders.add(root.rstrip(os.sep))
            also.extend(folder + os.sep for folder in sorted(folders))
        if result.errors and not parsed:
            # The parse reports nothing it read (the worker crashed or timed out): the fix
            # may land in any file, so watch the whole repo until a parse reads something.
            also.extend(_repo_tree(root, cluster.name))
        self._watches[cluster.name].reset(parsed, also, before)

    def _merge(self, previous: ClusterSnapshot, result: model.ParseResult,
               wall_started: float, versions: Mapping[str, Version] | None = None,
               restored: Mapping[str, Version] | None = None, same_inputs: bool = False,
               ) -> tuple[ClusterSnapshot, list[Change]]:
        """The snapshot a parse gives; a workflow that fails keeps its last good version:
        the one ``previous`` serves, else the one ``restored`` from the history.

        ``same_inputs``: the parse read the same files with the same contents, and the same
        parser setup, as the one before. Then a workflow whose layout changed is dynamic
        (its definition depends on the clock, randomness or outside data), and one whose
        layout did not change is no longer. Otherwise the flag stays as it was.
        """
        restored = restored or {}
        name = previous.name
        entries: dict[str, Entry] = {}
        for workflow in result.workflows:
            old = previous.entries.get(workflow.name)
            version = versions[workflow.name] if versions else _version(workflow)
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


# After a notification, the poller waits this long for the rest of a burst of writes;
# it also bounds how often a busy folder makes it look.
_SETTLE_SECONDS = 0.1
# How often the poller, waiting, sees stop() and a load that ended.
_STOP_CHECK_SECONDS = 0.1

# Watching a whole repo is the fallback after a parse that read nothing: bounded, since
# every watched path is hashed once, and stat'ed at each poll where it is polled.
_MAX_TREE_WATCH = 20_000


def _repo_tree(root: str, cluster: str) -> list[str]:
    """The repo's visible folders (as listings, ending in a separator) and regular files,
    at most _MAX_TREE_WATCH of them."""
    found: list[str] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders
                               if not name.startswith(".") and name != "__pycache__")
        found.append(folder.rstrip(os.sep) + os.sep)
        found.extend(path for path in (os.path.join(folder, name) for name in sorted(files)
                                       if not name.startswith("."))
                     if os.path.isfile(path))
        if len(found) >= _MAX_TREE_WATCH:
            log.warning("cluster %s: the repo %s has more than %d files and folders; after "
                        "this failed parse only the first %d are watched (a fix elsewhere "
                        "needs a Reload)", cluster, root, _MAX_TREE_WATCH, _MAX_TREE_WATCH)
            return found[:_MAX_TREE_WATCH]
    return found


def _log_load(previous: ClusterSnapshot, snapshot: ClusterSnapshot, changes: list[Change],
              seconds: float) -> None:
    """What an operator needs from a load: a summary, and what broke, recovered or turned
    out to be dynamic (each once, when it happens)."""
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


def _log_failure(future) -> None:
    """Background loads have no caller to raise to: say when one fails unexpectedly."""
    if not future.cancelled() and future.exception() is not None:
        log.error("a background load failed", exc_info=future.exception())


def _format(cluster: ClusterConfig) -> int:
    try:
        parser = cluster.parser_setup().parser
    except ConfigError:
        return pb.DEFINITION_FORMAT_UNSPECIFIED
    return pb.DEFINITION_FORMAT_JSON if parser == JSON_PARSER else pb.DEFINITION_FORMAT_PYTHON


def _version(workflow: model.Workflow) -> Version:
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


def _servable(result: model.ParseResult, previous: ClusterSnapshot,
              ) -> tuple[model.ParseResult, dict[str, Version]]:
    """The parse with every workflow built into its spec, and the versions by name. A
    workflow the sandbox reused unchanged from the previous parse keeps its version.

    A workflow that the contract cannot carry (a number outside its int32 or int64 field,
    text that is not UTF-8) becomes an error of that workflow, so that one bad value
    never stops the whole cluster's load.
    """
    versions: dict[str, Version] = {}
    problems: list[model.WorkflowError] = []
    for workflow in result.workflows:
        old = previous.entries.get(workflow.name)
        if old is not None and old.version is not None and old.version.workflow is workflow:
            versions[workflow.name] = old.version
            continue
        try:
            versions[workflow.name] = _version(workflow)
        except ValueError as error:  # out of range; UnicodeEncodeError
            problems.append(model.WorkflowError(
                model.ErrorKind.INVALID_DEFINITION,
                f"workflow {_text(workflow.name)!r} has a value the service cannot carry "
                f"({_text(str(error))}): numbers must fit the contract's int32 and int64 "
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


def _failed_entry(previous: ClusterSnapshot, restored: Mapping[str, Version], name: str,
                  errors: tuple[model.WorkflowError, ...]) -> Entry:
    old = previous.entries.get(name)
    good = old.version if old is not None else restored.get(name)
    return Entry(name, Status.STALE if good else Status.BROKEN, good, errors,
                 old is not None and old.dynamic)


def _record_load(metrics: ServerMetrics, snapshot: ClusterSnapshot, result: model.ParseResult,
                 changes: Iterable[Change]) -> None:
    metrics.record_load(
        snapshot.name,
        parse_seconds=result.duration_seconds,
        error_kinds=[error.kind.value for error in result.errors],
        workflows={status.name.lower(): snapshot.count(status) for status in Status},
        dynamic_workflows=snapshot.dynamic_count,
        dynamic_changes=sum(1 for change in changes
                            if change.type == pb.WorkflowEvent.TYPE_DYNAMIC),
        last_success=snapshot.last_success,
        snapshot_bytes=sum(len(entry.version.spec_bytes) for entry in snapshot.entries.values()
                           if entry.version is not None),
    )


def _served(snapshot: ClusterSnapshot) -> dict[str, str]:
    return {name: entry.version.fingerprint for name, entry in snapshot.entries.items()
            if entry.version is not None}


def _new_versions(previous: ClusterSnapshot, snapshot: ClusterSnapshot) -> list[Version]:
    known = {e.version.fingerprint for e in previous.entries.values() if e.version}
    return [e.version for e in snapshot.entries.values()
            if e.version is not None and e.version.fingerprint not in known]


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
