"""The TokenFetcher servicer: answers from the catalog's current snapshot.

A request costs a lookup and a send: specs are built once per version, and serialized
answers are kept per version (specs until the next run time moves, tokens per run),
so handlers may return ready bytes. Errors are raised as ``Failure`` and turned into
status codes at the edge (see ``server``).
"""

from __future__ import annotations

import bisect
import threading
import time
import weakref

import cachetools
import grpc

from legacy_parser.isolation import Isolation
from legacy_parser.schedule import next_run_after
from token_fetcher import __version__, convert
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.catalog import Catalog
from token_fetcher.handovers import handover
from token_fetcher.kept_answers import KeptAnswers
from token_fetcher.request_checks import (
    Failure,
    after_token,
    check_name,
    check_scheduled,
    check_time,
    decode,
    invalid,
    page_token,
)
from token_fetcher.snapshot import ClusterSnapshot, Entry, LoadState, Status, Version
from token_fetcher.subscriptions import WATCH_QUEUE_CAPACITY

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_BATCH = 10000
_RESULT_RESPONSE_FIELD = pb.ResolveMigrationResult.DESCRIPTOR.fields_by_name["response"].number
_BATCH_RESULTS_FIELD = pb.BatchResolveMigrationsResponse.DESCRIPTOR.fields_by_name["results"].number


def _next_run(version: Version, now: int) -> int:
    """The version's first scheduled run after ``now`` (epoch seconds)."""
    schedule = version.workflow.schedule
    return next_run_after(schedule.reference_epoch, schedule.recurrence_seconds, now)


def _with_spec(answer, spec: bytes) -> bytes:
    """``answer`` serialized, with the kept serialized ``spec`` as its ``spec`` field as it
    is: parsing it into the answer and serializing it again would cost most of the call."""
    return answer.SerializeToString() + convert.message_field(
        answer.DESCRIPTOR.fields_by_name["spec"].number, spec)


class TokenFetcherService:
    # The methods given the request's bytes rather than the decoded message.
    TAKES_REQUEST_BYTES = frozenset({"GetWorkflowSpec"})

    def __init__(self, catalog: Catalog, reload_enabled: bool, clock=time.time,
                 max_watches: int = 32) -> None:
        self.catalog = catalog
        # Watches are capped so that open streams can never take the threads unary calls
        # (and health probes) need.
        self._watch_slots = threading.BoundedSemaphore(max_watches)
        self.max_watches = max_watches
        self.reload_enabled = reload_enabled
        self.clock = clock
        self.started_at = int(clock())
        self._tokens = cachetools.LRUCache(maxsize=4096)
        self._tokens_lock = threading.Lock()
        # The answers built from a catalog entry ("spec", "spec_response"), kept while the
        # catalog serves that entry: an unchanged workflow keeps its entry across parses.
        self._answers: weakref.WeakKeyDictionary[Entry, dict] = weakref.WeakKeyDictionary()
        self._kept = KeptAnswers(lambda: self.catalog.generation)

    # --- lookups ----------------------------------------------------------------------

    def _snapshot(self, cluster: str) -> ClusterSnapshot:
        check_name(cluster, "cluster")
        snapshot = self.catalog.snapshot(cluster)
        if snapshot is None:
            raise Failure(grpc.StatusCode.NOT_FOUND,
                          f"no cluster {cluster!r}; clusters: "
                          + ", ".join(self.catalog.cluster_names()))
        if snapshot.state is LoadState.LOADING:
            raise Failure(grpc.StatusCode.UNAVAILABLE,
                          f"cluster {cluster!r} is still loading; retry shortly")
        return snapshot

    def _entry(self, snapshot: ClusterSnapshot, workflow: str) -> Entry:
        check_name(workflow, "workflow")
        entry = snapshot.entries.get(workflow)
        if entry is not None:
            return entry
        if snapshot.cluster_errors:
            raise Failure(grpc.StatusCode.FAILED_PRECONDITION,
                          f"no workflow {workflow!r} is known in cluster {snapshot.name!r}, "
                          f"whose definitions fail to load: {snapshot.cluster_errors[0]}")
        raise Failure(grpc.StatusCode.NOT_FOUND,
                      f"no workflow {workflow!r} in cluster {snapshot.name!r}")

    def _resolve(self, cluster: str, workflow: str,
                 fingerprint: str) -> tuple[Version, Entry | None, Status]:
        """The version asked for, the current entry (if any) and the status to report."""
        snapshot = self._snapshot(cluster)
        if fingerprint:
            check_name(workflow, "workflow")
            check_name(fingerprint, "fingerprint")
            version = self.catalog.version(cluster, fingerprint)
            if version is None or version.workflow.name != workflow:
                raise Failure(grpc.StatusCode.NOT_FOUND,
                              f"no version {fingerprint!r} of workflow {workflow!r} in cluster "
                              f"{cluster!r} (past versions are kept for a bounded time)")
            entry = snapshot.entries.get(workflow)
            # By fingerprint: the version read back from the history is another object.
            if entry is not None and entry.version is not None \
                    and entry.version.fingerprint == version.fingerprint:
                return entry.version, entry, entry.status
            return version, None, Status.OK
        entry = self._entry(snapshot, workflow)
        if entry.version is None:
            raise Failure(grpc.StatusCode.FAILED_PRECONDITION,
                          f"workflow {workflow!r} in cluster {cluster!r} fails to parse and has "
                          f"no good version: {entry.errors[0] if entry.errors else 'unknown'}")
        return entry.version, entry, entry.status

    def _schedule(self, version: Version, now: int) -> pb.Schedule:
        schedule = convert.schedule(version.workflow.schedule)
        schedule.next_run_time.seconds = _next_run(version, now)
        return schedule

    def _answers_for(self, entry: Entry | None) -> dict:
        """The answers kept for ``entry`` (a throwaway dict for a past version)."""
        if entry is None:
            return {}
        answers = self._answers.get(entry)  # unlike setdefault, makes no weakref on a hit
        return answers if answers is not None else self._answers.setdefault(entry, {})

    @staticmethod
    def _spec(version: Version, answers: dict, next_run: int) -> bytes:
        """The serialized spec with ``next_run`` as its next_run_time, kept in the entry's
        ``answers`` until that run passes (serialized: a third of the memory of the
        message)."""
        cached = answers.get("spec")
        if cached is not None and cached[0] == next_run:
            return cached[1]
        spec = version.spec()
        spec.schedule.next_run_time.seconds = next_run
        data = spec.SerializeToString()
        answers["spec"] = (next_run, data)
        return data

    # --- RPCs -------------------------------------------------------------------------

    def ListWorkflows(self, request: pb.ListWorkflowsRequest, context) -> pb.ListWorkflowsResponse:
        snapshot = self._snapshot(request.cluster)
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if not 0 < page_size <= MAX_PAGE_SIZE:
            raise invalid(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got "
                           f"{request.page_size}")
        start = 0
        if request.page_token:
            start = bisect.bisect_right(snapshot.names, after_token(request.page_token))
        names = snapshot.names[start:start + page_size]
        now = int(self.clock())
        response = pb.ListWorkflowsResponse(
            total_size=len(snapshot.names),
            cluster_errors=[convert.parse_error(e) for e in snapshot.cluster_errors])
        for name in names:
            entry = snapshot.entries[name]
            summary = response.workflows.add(name=name, status=entry.status.value,
                                              errors=[convert.parse_error(e)
                                                      for e in entry.errors],
                                              dynamic=entry.dynamic)
            if entry.version is not None:
                summary.fingerprint = entry.version.fingerprint
                summary.job_count = len(entry.version.workflow.jobs)
                summary.schedule.CopyFrom(self._schedule(entry.version, now))
        if start + page_size < len(snapshot.names):
            response.next_page_token = page_token(names[-1])
        return response

    def GetWorkflowSpec(self, data: bytes, context) -> bytes:
        """Takes the request's bytes (TAKES_REQUEST_BYTES): a request asked before is
        answered from them, while its answer stays true (see kept_answers)."""
        now = int(self.clock())
        kept = self._kept.get(data, now)
        if kept is not None:
            return kept
        generation = self._kept.generation_of()
        request = decode(pb.GetWorkflowSpecRequest, data)
        version, entry, status = self._resolve(request.cluster, request.workflow,
                                               request.fingerprint)
        next_run = _next_run(version, now)
        answer = self._spec_answer(request, version, entry, status, next_run)
        if entry is not None:  # not a past version, which may leave the history
            self._kept.keep(data, answer, generation=generation, since=now, until=next_run)
        return answer

    def _spec_answer(self, request: pb.GetWorkflowSpecRequest, version: Version,
                     entry: Entry | None, status: Status, next_run: int) -> bytes:
        errors = [convert.parse_error(e) for e in entry.errors] if entry is not None else []
        dynamic = entry is not None and entry.dynamic
        if request.if_none_match and request.if_none_match == version.fingerprint:
            return pb.GetWorkflowSpecResponse(
                not_modified=True, fingerprint=version.fingerprint, status=status.value,
                errors=errors, dynamic=dynamic).SerializeToString()
        answers = self._answers_for(entry)
        spec = self._spec(version, answers, next_run)
        if entry is None:
            return _with_spec(pb.GetWorkflowSpecResponse(fingerprint=version.fingerprint,
                                                         status=status.value), spec)
        cached = answers.get("spec_response")
        if cached is not None and cached[0] is spec:
            return cached[1]
        data = _with_spec(pb.GetWorkflowSpecResponse(
            fingerprint=version.fingerprint, status=status.value, errors=errors,
            dynamic=dynamic), spec)
        answers["spec_response"] = (spec, data)
        return data

    def _job_tokens(self, cluster: str, workflow: str, fingerprint: str, run_time,
                    has_run_time: bool, jobs: list[str], manual: bool) -> bytes:
        """The serialized GetJobTokensResponse, from an LRU of serialized answers (a few
        times smaller than the messages, and nothing left to serialize on a hit)."""
        version, _, status = self._resolve(cluster, workflow, fingerprint)
        run_epoch = check_time(run_time, "run_time", has_run_time)
        if not manual:
            check_scheduled(version, run_epoch, f"{cluster}/{workflow}")
        wanted = None
        if jobs:
            known = {job.name for job in version.workflow.jobs}
            for job in jobs:
                check_name(job, "job")
                if job not in known:
                    raise Failure(grpc.StatusCode.NOT_FOUND,
                                  f"no job {job!r} in workflow {workflow!r} of cluster "
                                  f"{cluster!r}")
            wanted = frozenset(jobs)
        key = (cluster, version.fingerprint, run_epoch, wanted, status)
        with self._tokens_lock:
            cached = self._tokens.get(key)
        if cached is not None:
            return cached
        response = convert.job_tokens_response(version.workflow, version.fingerprint, run_epoch,
                                               wanted)
        response.status = status.value
        data = response.SerializeToString()
        with self._tokens_lock:
            self._tokens[key] = data
        return data

    def GetJobTokens(self, request: pb.GetJobTokensRequest, context) -> bytes:
        return self._job_tokens(request.cluster, request.workflow, request.fingerprint,
                                request.run_time, request.HasField("run_time"),
                                list(request.jobs), request.manual)

    def GetJobToken(self, request: pb.GetJobTokenRequest, context) -> pb.GetJobTokenResponse:
        check_name(request.job, "job")
        # The run's tokens, rendered and cached once for every job of the run: a cache entry
        # per job would multiply the cache's memory by the job count.
        tokens = pb.GetJobTokensResponse.FromString(self._job_tokens(
            request.cluster, request.workflow, request.fingerprint, request.run_time,
            request.HasField("run_time"), [], request.manual))
        token = next((t for t in tokens.jobs if t.job == request.job), None)
        if token is None:
            raise Failure(grpc.StatusCode.NOT_FOUND,
                          f"no job {request.job!r} in workflow {request.workflow!r} of cluster "
                          f"{request.cluster!r}")
        version, _, _ = self._resolve(request.cluster, request.workflow, tokens.fingerprint)
        job = version.workflow.job(request.job)
        return pb.GetJobTokenResponse(fingerprint=tokens.fingerprint, token=token,
                                      spec=convert.job_spec(job), status=tokens.status)

    def ResolveMigration(self, request: pb.ResolveMigrationRequest, context) -> bytes:
        version, entry, status = self._resolve(request.cluster, request.workflow, "")
        migration_epoch = check_time(request.migration_time, "migration_time",
                                     request.HasField("migration_time"))
        schedule = version.workflow.schedule
        runs = handover(schedule.reference_epoch, schedule.recurrence_seconds, migration_epoch)
        response = pb.ResolveMigrationResponse(
            fingerprint=version.fingerprint, status=status.value,
            errors=[convert.parse_error(e) for e in entry.errors] if entry else [],
            dynamic=entry is not None and entry.dynamic,
            handover=pb.Handover(migration_time=convert.timestamp(migration_epoch),
                                 first_new_run_time=convert.timestamp(runs.first_new_run)))
        if runs.last_legacy_run is not None:
            response.handover.last_legacy_run_time.seconds = runs.last_legacy_run
        if request.if_none_match and request.if_none_match == version.fingerprint:
            response.not_modified = True
            return response.SerializeToString()
        return _with_spec(response, self._spec(version, self._answers_for(entry),
                                               _next_run(version, int(self.clock()))))

    def BatchResolveMigrations(self, request: pb.BatchResolveMigrationsRequest,
                               context) -> bytes:
        if len(request.migrations) > MAX_BATCH:
            raise invalid(f"at most {MAX_BATCH} migrations per batch, got "
                           f"{len(request.migrations)}")
        results = []
        for item in request.migrations:
            try:
                result = convert.message_field(_RESULT_RESPONSE_FIELD,
                                               self.ResolveMigration(item, context))
            except Failure as failure:
                result = pb.ResolveMigrationResult(error=pb.ErrorStatus(
                    code=failure.code.value[0], message=failure.message)).SerializeToString()
            results.append(convert.message_field(_BATCH_RESULTS_FIELD, result))
        return b"".join(results)

    def WatchWorkflows(self, request: pb.WatchWorkflowsRequest, context):
        if request.cluster:
            self._snapshot(request.cluster)
        if not self._watch_slots.acquire(blocking=False):
            raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"this server already has {self.max_watches} open watches "
                          "(max_watches); close one or raise the limit")
        try:
            yield from self._watch(request, context)
        finally:
            self._watch_slots.release()

    def _watch(self, request: pb.WatchWorkflowsRequest, context):
        subscription = self.catalog.subscribe(request.cluster)
        context.add_callback(lambda: subscription.offer(None))
        try:
            yield pb.WorkflowEvent(type=pb.WorkflowEvent.TYPE_SUBSCRIBED,
                                   cluster=request.cluster,
                                   event_time=convert.timestamp(int(self.clock())))
            while context.is_active():
                change = subscription.queue.get()
                if subscription.overflowed:
                    raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"this watcher fell more than {WATCH_QUEUE_CAPACITY} changes "
                                  "behind; re-list and watch again")
                if change is None:
                    return
                event = pb.WorkflowEvent(
                    type=change.type, cluster=change.cluster, workflow=change.workflow,
                    old_fingerprint=change.old_fingerprint,
                    new_fingerprint=change.new_fingerprint,
                    errors=[convert.parse_error(e) for e in change.errors])
                event.event_time.FromNanoseconds(int(change.time * 1e9))
                yield event
        finally:
            self.catalog.unsubscribe(subscription)

    def Reload(self, request: pb.ReloadRequest, context) -> pb.ReloadResponse:
        if not self.reload_enabled:
            raise Failure(grpc.StatusCode.PERMISSION_DENIED,
                          "Reload is disabled on this server (reload_enabled: false)")
        check_name(request.cluster, "cluster")
        if self.catalog.snapshot(request.cluster) is None:
            self._snapshot(request.cluster)
        outcome = self.catalog.reload(request.cluster)
        if outcome is None:
            raise Failure(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        counts = {kind: 0 for kind in ("added", "changed", "removed", "broken")}
        names = {pb.WorkflowEvent.TYPE_ADDED: "added", pb.WorkflowEvent.TYPE_CHANGED: "changed",
                 pb.WorkflowEvent.TYPE_DYNAMIC: "changed",
                 pb.WorkflowEvent.TYPE_REMOVED: "removed", pb.WorkflowEvent.TYPE_BROKEN: "broken"}
        for change in outcome.changes:
            counts[names[change.type]] += 1
        return pb.ReloadResponse(cluster=self._cluster_info(outcome.snapshot), **counts)

    def GetServerInfo(self, request: pb.GetServerInfoRequest, context) -> pb.ServerInfo:
        clusters = [self._cluster_info(self.catalog.snapshot(name))
                    for name in self.catalog.cluster_names()]
        for info in clusters:
            info.stub_modules.extend(self.catalog.config.clusters[info.name].stub_modules)
        return pb.ServerInfo(version=__version__, start_time=convert.timestamp(self.started_at),
                             clusters=clusters, reload_enabled=self.reload_enabled,
                             state_error=self.catalog.history.error,
                             isolation=_isolation(self.catalog.sandbox.isolation))

    @staticmethod
    def _cluster_info(snapshot: ClusterSnapshot) -> pb.ClusterInfo:
        info = pb.ClusterInfo(
            name=snapshot.name, state=snapshot.state.value, format=snapshot.format,
            workflow_count=len(snapshot.entries), ok_count=snapshot.count(Status.OK),
            stale_count=snapshot.count(Status.STALE), broken_count=snapshot.count(Status.BROKEN),
            dynamic_count=snapshot.dynamic_count,
            job_count=snapshot.job_count, last_load_duration_seconds=snapshot.load_duration,
            errors=[convert.parse_error(e) for e in snapshot.errors],
            files_watched=snapshot.files_watched)
        if snapshot.loaded_at is not None:
            info.last_load_time.FromNanoseconds(int(snapshot.loaded_at * 1e9))
        if snapshot.last_success is not None:
            info.last_success_time.FromNanoseconds(int(snapshot.last_success * 1e9))
        return info


def _isolation(isolation: Isolation) -> pb.SandboxIsolation:
    return pb.SandboxIsolation(
        mode=isolation.mode, active_layers=isolation.active,
        missing_layers=[f"{layer}: {why}" for layer, why in isolation.missing])
