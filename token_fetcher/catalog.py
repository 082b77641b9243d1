"""Per-cluster versioned snapshots of parsed workflows: load, watch, refresh, last-known-good.

A snapshot (token_fetcher.snapshot) is immutable and swapped in whole, so requests read
a consistent view without locks. When a new parse breaks a workflow (or the whole
cluster), its last good version stays served, flagged stale, with the error
(token_fetcher.snapshot_merge). Watchers hear of every change
(token_fetcher.subscriptions). Requests never parse, import user code or walk the file
system: all of that happens here, in background threads and sandbox workers.
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import CancelledError

import cachetools

from legacy_parser import model
from legacy_parser.cluster import JSON_PARSER
from legacy_parser.result_wire import KnownWorkflows
from legacy_parser.sandbox import Sandbox, SandboxClosed
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.config import ClusterConfig, ConfigError, ServerConfig
from token_fetcher.history import VersionHistory
from token_fetcher.load_log import log_load
from token_fetcher.load_queue import LoadQueue
from token_fetcher.metrics import ServerMetrics
from token_fetcher.snapshot import (
    Change,
    ClusterSnapshot,
    LoadState,
    ReloadOutcome,
    Status,
    Version,
)
from token_fetcher.snapshot_merge import (
    merge,
    new_versions,
    servable,
    served_fingerprints,
    version_of,
    version_or_problem,
)
from token_fetcher.subscriptions import Subscribers, Subscription
from token_fetcher.watch import FileWatch
from token_fetcher.watch_scope import ParsedPaths, also_watched

log = logging.getLogger(__name__)


class Catalog:
    def __init__(self, config: ServerConfig, sandbox: Sandbox, history: VersionHistory,
                 metrics: ServerMetrics) -> None:
        self.config = config
        self.sandbox = sandbox
        self.history = history
        self.metrics = metrics
        # Known from the start when the state directory cannot be opened: SERVING comes
        # before the first load's history save.
        self._report_state_store()
        self._snapshots: dict[str, ClusterSnapshot] = {
            name: ClusterSnapshot(name, LoadState.LOADING, _format(cluster), {}, (), (), ())
            for name, cluster in config.clusters.items()
        }
        self._cluster_locks = {name: threading.Lock() for name in config.clusters}
        self._watches = {name: FileWatch() for name in config.clusters}
        self._parsed_paths = {name: ParsedPaths(cluster.repo)
                              for name, cluster in config.clusters.items()}
        self._known = {name: KnownWorkflows(version_or_problem) for name in config.clusters}
        self._last_good_files: dict[str, dict[str, str]] = {n: {} for n in config.clusters}
        # What the last parse read (its files and parser setup), to tell a layout that
        # changed by itself from one whose sources changed; None after a failed parse.
        self._inputs: dict[str, tuple | None] = {n: None for n in config.clusters}
        # When each cluster was last parsed or queued for parsing (time.monotonic).
        self._parsed_at = {n: 0.0 for n in config.clusters}
        self._versions: cachetools.LRUCache[tuple[str, str], Version] = cachetools.LRUCache(4096)
        self._versions_lock = threading.Lock()
        # Snapshots published so far: what the service made from them is true while this
        # has not moved (see kept_answers). Moved under a lock, so it never goes back.
        self.generation = 0
        self._publish_lock = threading.Lock()
        self._subscribers = Subscribers()
        self._stop = threading.Event()
        self._first_load_done = threading.Event()
        self._awaiting_first_load = set(config.clusters)
        self._awaiting_lock = threading.Lock()
        self._loads = LoadQueue(max(1, config.sandbox.workers))
        self._first_models_uncollected = True
        self._poller: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Begin the first load of every cluster, then poll for changes."""
        futures = [self._loads.submit(self._load, name) for name in self.config.clusters]
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
        self._loads.shutdown()
        if self._poller is not None:
            self._poller.join(timeout=10)
        for name, watch in self._watches.items():
            with self._cluster_locks[name]:  # not while a poll that timed out reads it
                watch.close()
        self._subscribers.end_all()

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
        version = version_of(workflow)
        if version.fingerprint != fingerprint:
            return None
        with self._versions_lock:
            self._versions[key] = version
        return version

    # --- watchers -------------------------------------------------------------------

    def subscribe(self, cluster: str) -> Subscription:
        subscription = self._subscribers.add(cluster)
        if self._stop.is_set():
            subscription.offer(None)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.remove(subscription)

    # --- loading --------------------------------------------------------------------

    def reload(self, cluster: str) -> ReloadOutcome | None:
        """Re-parse a cluster now; None when the catalog is shutting down."""
        return self._loads.run(self._load, cluster)

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
                    future = self._loads.submit(self._load, name, now if changed else None)
                except RuntimeError:  # stop() shut the loader down meanwhile
                    return
                future.add_done_callback(_log_failure)

    def _wait_for_due(self) -> set[str] | None:
        """The clusters to look at: all of them every ``poll_interval_seconds``, and at once
        those whose watched folders report an event or whose last parse saw a change
        while it ran; None when stopping."""
        deadline = time.monotonic() + self.config.poll_interval_seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return set(self.config.clusters)
            if self._first_models_uncollected and not any(
                    watch.suspects for watch in self._watches.values()):
                # The first loads' models are all new: collected once the first look at
                # what changed during them is done, rather than at the first change.
                self._first_models_uncollected = False
                self._loads.collect()
            woken = self._woken(min(left, _STOP_CHECK_SECONDS), left)
            if woken:
                # The change may be the start of a burst of writes (a checkout, a
                # deletion): let the rest of it land before the parse.
                return None if self._stop.wait(_SETTLE_SECONDS) else woken
        return None

    def _woken(self, wait: float, left: float) -> set[str]:
        """The clusters whose watch suspects a change, or else those whose folders report
        an event within ``wait`` seconds (``left`` when only polling); a cluster being
        loaded waits, since the load resets its watch when done."""
        unlocked = {name: watch for name, watch in self._watches.items()
                    if not self._cluster_locks[name].locked()}
        suspected = {name for name, watch in unlocked.items() if watch.suspects}
        if suspected:
            return suspected
        notifying = {fd: name for name, watch in unlocked.items()
                     if (fd := watch.fileno()) is not None}
        if not notifying:
            polling_only = all(watch.fileno() is None for watch in self._watches.values())
            self._stop.wait(left if polling_only else wait)
            return set()
        return {notifying[fd] for fd in select.select(list(notifying), [], [], wait)[0]}

    def _load(self, name: str, change_seen_at: float | None = None) -> ReloadOutcome | None:
        cluster = self.config.clusters[name]
        with self._cluster_locks[name]:
            if self._stop.is_set():
                return None
            started = time.monotonic()
            read_since_ns = time.time_ns()
            wall_started = read_since_ns / 1e9
            previous = self._snapshots[name]
            extra_watch = [cluster.pinball_config] if cluster.pinball_config else []
            setup = None
            before = self._watches[name].parse_begins()
            try:
                # Always the whole cluster, in a fresh worker: a module may change any other
                # workflow (by patching the shims, say), so only a full parse of the current
                # sources is sure to serve what they define.
                setup = cluster.parser_setup()
                result = self.sandbox.parse(cluster.name, cluster.repo, setup.parser,
                                            setup.parser_params, setup.default_email,
                                            python2_definitions=cluster.python2_definitions,
                                            stub_modules=cluster.stub_modules,
                                            known=self._known[name],
                                            worker_started=self._loads.collect_if_alone)
            except ConfigError as error:
                result = model.ParseResult(name, (), (model.WorkflowError(
                    model.ErrorKind.INVALID_CONFIG, str(error), name),), (), 0.0)
            except SandboxClosed:
                return None
            result, versions = servable(result, self._known[name])
            # Until a load succeeds, a workflow that fails has its last good version in the
            # history: what the cluster served before the restart.
            restored = self._restored(name) if previous.state is LoadState.LOADING \
                and result.errors else {}
            # A parse lists its files sorted, once each; the sandbox gives the same objects
            # for unchanged files, so comparing 170,000 of them costs little.
            inputs = (result.files, setup) if result.files and not any(
                not error.workflow for error in result.errors) else None
            same_inputs = inputs is not None and inputs == self._inputs[name]
            self._inputs[name] = inputs
            snapshot, changes = merge(previous, result, wall_started, versions, restored,
                                      same_inputs)
            added = {v.fingerprint: v.workflow for v in new_versions(previous, snapshot)}
            served = served_fingerprints(snapshot)
            with self._versions_lock:
                for entry in snapshot.entries.values():
                    if entry.version is not None:
                        self._versions[(name, entry.version.fingerprint)] = entry.version
            with self._publish_lock:
                # The snapshot first: the service reads the generation before the snapshot,
                # so an answer kept under a generation comes from that generation's
                # snapshot or a newer one, never an older (see kept_answers).
                self._snapshots[name] = snapshot
                self.generation += 1
            # Served from here on, so watchers hear of it now, before the watch is taken
            # up again (stat calls over every file of a large tree).
            self._subscribers.publish(changes)
            if change_seen_at is not None:
                self.metrics.refresh_lag.labels(name).observe(time.monotonic() - change_seen_at)
            _record_load(self.metrics, snapshot, result, changes)
            log_load(previous, snapshot, changes, time.monotonic() - started)
            # A change the watch misses while it is taken up was made after the parse
            # began, which the watch sees by the files' change times.
            self._first_load_swapped(name)
            self._reset_watch(cluster, result, extra_watch, before, read_since_ns)
            self._parsed_at[name] = time.monotonic()
        # After the swap: the history serves only pinned past versions (current ones are
        # in memory), so serving and watchers need not wait for the database.
        self.history.save(name, list(added.items()),
                          served if served != served_fingerprints(previous) or self.history.error
                          else None)
        self._report_state_store()
        return ReloadOutcome(snapshot, tuple(changes))

    def _report_state_store(self) -> None:
        self.metrics.state_store_healthy.set(0 if self.history.error else 1)

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
            version = version_of(workflow)
            if version.fingerprint == fingerprint:  # else saved by an incompatible release
                restored[workflow.name] = version
        return restored

    def _reset_watch(self, cluster: ClusterConfig, result: model.ParseResult,
                     extra: list[str], before: Mapping[str, tuple | None],
                     read_since_ns: int) -> None:
        parsed = self._parsed_paths[cluster.name].of(result.files)
        if not result.errors:
            self._last_good_files[cluster.name] = parsed
        also = also_watched(cluster.repo, cluster.name, parsed,
                            self._last_good_files[cluster.name], extra, bool(result.errors))
        self._watches[cluster.name].reset(parsed, also, before, read_since_ns)


# After a notification, the poller waits this long for the rest of a burst of writes;
# it also bounds how often a busy folder makes it look.
_SETTLE_SECONDS = 0.1
# How often the poller, waiting, sees stop() and a load that ended.
_STOP_CHECK_SECONDS = 0.1


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
