"""What the loader shares or skips across the DAGs of one parse, without changing them:
edges set once, one failure notifier per address list, DAG config defaults read once,
and the on-disk layout cache that only writes what changed."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import types
import weakref
from datetime import UTC, datetime

import pytest
from airflow.sdk import DAG
from airflow.sdk.bases import operator as operator_module
from airflow.serialization.serialized_objects import DagSerialization

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.airflow import fast_edges, fast_setattr, loader
from token_fetcher.airflow.dags import SharedArgs, build_dag
from token_fetcher.airflow.layout_cache import LayoutCache
from token_fetcher.airflow.layouts import Layout
from token_fetcher.airflow.operators import MigratedConditionSensor, MigratedJobOperator
from token_fetcher.airflow.settings import Settings
from token_fetcher.migration import MigrationMetadata

notifications = pytest.importorskip(
    "airflow.providers.smtp.notifications.smtp", reason="needs the SMTP provider"
)

ONCALL = "oncall@example.com"


def layout(workflow: str = "wf", fingerprint: str = "f" * 64, emails=(ONCALL,)) -> Layout:
    """extract -> load -> final; ``audit`` names ``final`` in its outputs only."""
    spec = pb.WorkflowSpec(cluster="core", name=workflow, final_job="final")
    spec.notify_emails.append(ONCALL)
    spec.schedule.reference_time.seconds = 1420092000
    spec.schedule.recurrence_seconds = 86400
    jobs = {
        # name: (inputs, parents, outputs)
        "extract": (["__WORKFLOW_START__"], [], ["load"]),
        "load": (["extract"], ["extract"], ["final"]),
        "audit": (["__WORKFLOW_START__"], [], ["final"]),
        "final": (["load"], ["load"], []),
    }
    for name, (inputs, parents, outputs) in jobs.items():
        job = spec.jobs.add(
            name=name,
            kind=pb.JOB_KIND_JOB,
            max_attempts=1,
            score=1,
            inputs=inputs,
            parents=parents,
            outputs=outputs,
            emails=list(emails),
        )
        job.command.segments.append(f"echo {name}")
    metadata = MigrationMetadata("core", workflow, datetime(2020, 1, 1, tzinfo=UTC))
    return Layout.from_spec(metadata, fingerprint, spec, stale=False, source="test")


def test_edges_come_from_inputs_and_parents_once():
    dag = build_dag(layout(), Settings())
    assert {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} == {
        "extract": [],
        "load": ["extract"],
        # An output no job waits for is no dependency (Pinball would post an event no
        # one reads): "audit" is not upstream of "final".
        "audit": [],
        "final": ["load"],
    }
    assert {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} == {
        "extract": ["load"],
        "load": ["final"],
        "audit": [],
        "final": [],
    }


def test_one_notifier_per_address_list_for_the_whole_parse():
    shared = SharedArgs()
    first = build_dag(layout("one"), Settings(), shared)
    second = build_dag(layout("two"), Settings(), shared)
    callbacks = [
        callback
        for dag in (first, second)
        for callback in [
            *dag.on_failure_callback,
            *(c for t in dag.tasks for c in t.on_failure_callback),
        ]
    ]
    assert len(callbacks) == 2 + 8
    assert len({id(callback) for callback in callbacks}) == 1
    assert callbacks[0].to == [ONCALL]
    assert isinstance(callbacks[0], notifications.SmtpNotifier)
    other = build_dag(layout("three", emails=("other@example.com",)), Settings(), shared)
    assert other.task_dict["load"].on_failure_callback[0].to == ["other@example.com"]
    assert other.on_failure_callback[0] is callbacks[0]  # notify_emails: the on-call


def test_a_shared_notifier_sends_each_failure_from_its_own_copy(monkeypatch):
    # SmtpNotifier renders its fields and fills in its default subject in place when it
    # sends; a shared one must not carry the first failure's text into the second.
    sent = []

    def notify(self, context):
        if self.subject is None:
            self.subject = f"{context['task']} failed"
        sent.append((self.subject, self.to))

    monkeypatch.setattr(notifications.SmtpNotifier, "notify", notify)
    notifier = SharedArgs().notifier([ONCALL])
    notifier({"task": "load"})
    notifier({"task": "final"})
    assert sent == [("load failed", [ONCALL]), ("final failed", [ONCALL])]
    assert notifier.subject is None


def test_dag_config_defaults_are_read_once_per_parse_with_the_same_values(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG", "7")
    monkeypatch.setenv("AIRFLOW__CORE__MAX_CONSECUTIVE_FAILED_DAG_RUNS_PER_DAG", "3")
    shared = SharedArgs()
    dag = build_dag(layout(), Settings(), shared)
    assert dag.max_active_tasks == 7
    assert dag.max_consecutive_failed_dag_runs == 3
    monkeypatch.setenv("AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG", "9")
    assert build_dag(layout(), Settings(), shared).max_active_tasks == 7  # same parse
    assert build_dag(layout(), Settings()).max_active_tasks == 9  # the next parse


def fan_in_layout() -> Layout:
    """``layout()`` with a condition, and ``final`` waiting for ``audit`` too."""
    item = layout()
    jobs = {job.name: job for job in item.spec.jobs}
    jobs["audit"].kind = pb.JOB_KIND_CONDITION
    jobs["audit"].retry_delay_seconds = 600
    jobs["final"].inputs.append("audit")
    return item


def edges(dag) -> dict:
    return {t.task_id: (sorted(t.upstream_task_ids), sorted(t.downstream_task_ids))
            for t in dag.tasks}


@contextlib.contextmanager
def airflow_changed(monkeypatch, owner, name, value):
    """Airflow's ``owner.name`` replaced by ``value`` within the block; fast_edges' answers
    (kept per class) are forgotten on the way in and on the way out."""
    try:
        with monkeypatch.context() as patched:
            patched.setattr(owner, name, value)
            fast_edges.direct_path_valid.cache_clear()
            yield
    finally:
        fast_edges.direct_path_valid.cache_clear()


def test_edges_set_directly_are_those_airflow_sets(monkeypatch):
    from airflow.sdk.definitions._internal.node import DAGNode

    fast_edges.direct_path_valid.cache_clear()
    # Airflow's _set_relatives is the one the direct path mirrors...
    assert fast_edges.direct_path_valid(MigratedJobOperator)
    assert fast_edges.direct_path_valid(MigratedConditionSensor)

    def not_called(*args, **kwargs):
        raise AssertionError("the edges went through Airflow's _set_relatives")

    # ...so the build does not call it (the answer above is kept per class).
    with monkeypatch.context() as patched:
        patched.setattr(DAGNode, "_set_relatives", not_called)
        direct = build_dag(fan_in_layout(), Settings())
    fast_edges.direct_path_valid.cache_clear()
    monkeypatch.setattr(fast_edges, "direct_path_valid", lambda cls: False)
    through_airflow = build_dag(fan_in_layout(), Settings())
    assert edges(direct) == edges(through_airflow)
    assert edges(direct)["final"] == (["audit", "load"], [])
    assert DagSerialization.to_dict(direct) == DagSerialization.to_dict(through_airflow)


def test_the_names_of_set_relatives_are_compared_in_any_order(monkeypatch):
    # Python 3.12 and later compile Airflow's _set_relatives with its names in another
    # order (the set comprehension is inlined): the direct path holds there too.
    from airflow.sdk.definitions._internal.node import DAGNode

    original = DAGNode._set_relatives
    reordered = types.FunctionType(
        original.__code__.replace(co_names=tuple(reversed(original.__code__.co_names))),
        original.__globals__, original.__name__, original.__defaults__, original.__closure__)
    with airflow_changed(monkeypatch, DAGNode, "_set_relatives", reordered):
        assert fast_edges.direct_path_valid(MigratedJobOperator)


def test_a_changed_set_relatives_is_called_not_bypassed(monkeypatch):
    from airflow.sdk.definitions._internal.node import DAGNode

    calls = []
    original = DAGNode._set_relatives

    def changed(self, *args, **kwargs):
        calls.append(self.task_id)
        return original(self, *args, **kwargs)

    with airflow_changed(monkeypatch, DAGNode, "_set_relatives", changed):
        dag = build_dag(fan_in_layout(), Settings())
    assert sorted(calls) == ["final", "load"]
    assert edges(dag)["final"] == (["audit", "load"], [])


@pytest.mark.parametrize("override", ["_set_relatives", "set_upstream", "update_relative",
                                      "roots", "leaves", "get_dag", "node_id"])
def test_a_task_class_overriding_any_of_it_takes_airflows_path(override):
    member = getattr(MigratedJobOperator, override)
    subclass = type("Overriding", (MigratedJobOperator,), {
        override: property(member.fget) if isinstance(member, property) else
        (lambda self, *args, **kwargs: member(self, *args, **kwargs))})
    assert fast_edges.direct_path_valid(MigratedJobOperator)
    assert not fast_edges.direct_path_valid(subclass)


def test_an_update_relative_that_does_something_takes_airflows_path(monkeypatch):
    from airflow.sdk.definitions._internal.mixins import DependencyMixin

    def update_relative(self, other, upstream=True, edge_modifier=None):
        other.calls = getattr(other, "calls", 0) + 1

    with airflow_changed(monkeypatch, DependencyMixin, "update_relative", update_relative):
        assert not fast_edges.direct_path_valid(MigratedJobOperator)


def test_the_fast_edges_setting_turns_the_direct_path_off(monkeypatch):
    from airflow.sdk.definitions._internal.node import DAGNode

    fast_edges.direct_path_valid.cache_clear()
    assert fast_edges.direct_path_valid(MigratedJobOperator)  # Airflow's code as it is
    monkeypatch.setenv("AIRFLOW__TOKEN_FETCHER__FAST_EDGES", "false")
    fast_edges.direct_path_valid.cache_clear()
    assert not fast_edges.direct_path_valid(MigratedJobOperator)
    assert not fast_edges.direct_path_valid(MigratedConditionSensor)

    calls = []
    original = DAGNode._set_relatives

    def counted(self, *args, **kwargs):
        calls.append(self.task_id)
        return original(self, *args, **kwargs)

    # Patched after the answer above is kept: only the setting turned the path off.
    with monkeypatch.context() as patched:
        patched.setattr(DAGNode, "_set_relatives", counted)
        dag = build_dag(fan_in_layout(), Settings())
    fast_edges.direct_path_valid.cache_clear()
    assert sorted(calls) == ["final", "load"]
    assert edges(dag)["final"] == (["audit", "load"], [])


def test_tasks_of_two_dags_are_refused_as_airflow_refuses_them():
    one, other = build_dag(layout("one"), Settings()), build_dag(layout("other"), Settings())
    with pytest.raises(RuntimeError, match="more than one Dag"):
        fast_edges.set_upstream(one.task_dict["final"], [other.task_dict["extract"]])
    assert "extract" not in one.task_dict["final"].upstream_task_ids


def task_state(task) -> dict:
    """A task's attributes, without those that point at its DAG."""
    state = {k: v for k, v in vars(task).items() if k not in ("_dag", "task_group")}
    state["_BaseOperator__init_kwargs"] = {
        k: v for k, v in state["_BaseOperator__init_kwargs"].items() if k != "dag"
    }
    return state


def built_with_fast_setattr(monkeypatch, enabled: bool, shared: SharedArgs):
    """The DAG of ``layout()`` with ``audit`` a condition, built with ``[token_fetcher]
    fast_task_setattr`` set to ``enabled``."""
    monkeypatch.setenv("AIRFLOW__TOKEN_FETCHER__FAST_TASK_SETATTR", str(enabled))
    # The setting is read once per task class: forget what earlier builds read.
    monkeypatch.setattr(fast_setattr, "_converted_names", {})
    item = layout()
    [audit] = [job for job in item.spec.jobs if job.name == "audit"]
    audit.kind = pb.JOB_KIND_CONDITION
    audit.retry_delay_seconds = 600
    dag = build_dag(item, Settings(), shared)
    # Each task class took the path asked for (a changed BaseOperator.__setattr__ turns
    # the fast path off: this test then says so).
    for cls in (MigratedJobOperator, MigratedConditionSensor):
        assert (fast_setattr._converted_names[cls] is not None) is enabled, cls
    return dag


def test_tasks_built_through_the_fast_attribute_path_are_the_same(monkeypatch):
    shared = SharedArgs()
    fast = built_with_fast_setattr(monkeypatch, True, shared)
    slow = built_with_fast_setattr(monkeypatch, False, shared)  # Airflow's own hook
    assert isinstance(fast.task_dict["audit"], MigratedConditionSensor)
    assert DagSerialization.to_dict(fast) == DagSerialization.to_dict(slow)
    for task in fast.tasks:
        assert task_state(task) == task_state(slow.task_dict[task.task_id]), task.task_id


def test_each_task_merges_airflow_defaults_once_per_constructor_airflow_wraps(monkeypatch):
    # Airflow wraps the __init__ of every operator class, and each wrapper merges the
    # DAG's default arguments and params again: a job's task passes its own and
    # BaseOperator's; a condition's, its own, BaseSensorOperator's and BaseOperator's.
    merges = []
    merged_defaults = operator_module.get_merged_defaults

    def counted(*args, **kwargs):
        merges.append(1)
        return merged_defaults(*args, **kwargs)

    monkeypatch.setattr(operator_module, "get_merged_defaults", counted)
    item = layout()
    [audit] = [job for job in item.spec.jobs if job.name == "audit"]
    audit.kind = pb.JOB_KIND_CONDITION
    dag = build_dag(item, Settings())
    assert len(dag.tasks) == 4
    assert len(merges) == 3 * 2 + 1 * 3


def test_airflow_sees_the_legacy_command_arguments_of_each_task_class():
    # Defaults from the DAG's default_args; partial() and expand() take every argument.
    command = {"cluster": "c", "workflow": "w", "fingerprint": "f" * 64, "runner": "local"}
    with DAG("sees_arguments", schedule=None, default_args={"cwd": "/legacy"}):
        job = MigratedJobOperator(
            task_id="job", job="job", command_segments=["true"], warn_timeout_seconds=5, **command
        )
        condition = MigratedConditionSensor(
            task_id="cond", job="cond", command_segments=["true"], **command
        )
        MigratedJobOperator.partial(
            task_id="jobs", job="jobs", job_emails=[ONCALL], warn_timeout_email=True, **command
        ).expand(command_segments=[["true"], ["false"]])
        MigratedConditionSensor.partial(task_id="conds", job="conds", env={}, **command).expand(
            command_segments=[["true"], ["false"]]
        )
    assert (job.cwd, condition.cwd) == ("/legacy", "/legacy")
    assert job._BaseOperator__init_kwargs["cwd"] == "/legacy"


def test_the_build_pauses_the_cyclic_gc_and_restores_it():
    assert gc.isenabled()
    with pytest.raises(ValueError), loader._cyclic_gc_paused():
        assert not gc.isenabled()
        raise ValueError("a build that fails")
    assert gc.isenabled()
    gc.disable()
    try:
        with loader._cyclic_gc_paused():
            pass
        assert not gc.isenabled()  # the caller's choice stands
    finally:
        gc.enable()


class _Collections:
    """The collector's passes (their generations) while in the ``with`` block."""

    def __init__(self) -> None:
        self.generations: list[int] = []

    def _record(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.generations.append(info["generation"])

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._record)


class _Cycle:
    def __init__(self) -> None:
        self.itself = self


def _build_many_objects() -> list[list[int]]:
    return [[index] for index in range(50_000)]


def test_what_the_build_made_goes_to_the_oldest_generation_without_a_pass_over_it():
    assert gc.get_freeze_count() == 0
    with _Collections() as collections, loader._cyclic_gc_paused():
        built = _build_many_objects()
        cycle = _Cycle()
        cycle_alive = weakref.ref(cycle)
        del cycle
    assert collections.generations == []
    # Left in the youngest generation, the 50,000 lists would be gone over at its next
    # collection, then again at the next one of the middle generation.
    assert gc.get_count()[0] < 1_000
    assert gc.get_freeze_count() == 0  # moved, not frozen: a full collection still sees it
    assert cycle_alive() is not None
    gc.collect()
    assert cycle_alive() is None
    assert len(built) == 50_000


def test_a_heap_frozen_before_the_build_stays_frozen_and_the_build_is_gone_over_once():
    # Airflow's DAG processor freezes its heap before it forks a parse.
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with _Collections() as collections, loader._cyclic_gc_paused():
            built = _build_many_objects()
        assert collections.generations == [1]
        assert gc.get_freeze_count() == frozen
        assert gc.get_count()[0] < 1_000
        gc.disable()
        try:
            with _Collections() as collections, loader._cyclic_gc_paused():
                built += _build_many_objects()
            assert collections.generations == []  # the caller had the collector off
        finally:
            gc.enable()
    finally:
        gc.unfreeze()


# --- the on-disk layout cache ---------------------------------------------------------


def inode(path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns


def shard_path(cache_dir, workflow: str = "wf"):
    folder = cache_dir / "core" / f"shards-{LayoutCache.SHARDS}"
    return folder / f"{LayoutCache.shard_of(workflow)}.json"


def index_path(cache_dir):
    return cache_dir / "core" / f"shards-{LayoutCache.SHARDS}" / LayoutCache.INDEX_NAME


def stored(cache_dir, *layouts: Layout) -> None:
    """What one parse does: store what the server confirmed, then flush."""
    cache = LayoutCache(cache_dir)
    for item in layouts:
        cache.store(item)
    cache.flush()


def test_the_cache_writes_a_layout_once_and_then_only_when_it_changes(tmp_path):
    stored(tmp_path, layout())
    written = inode(shard_path(tmp_path))
    index = json.loads(index_path(tmp_path).read_text())
    assert index["shards"][LayoutCache.shard_of("wf")]["fingerprints"] == {"wf": "f" * 64}

    stored(tmp_path, layout())  # the next parse: nothing to write
    assert inode(shard_path(tmp_path)) == written

    # ... and nothing to read back but the index: a shard that still looks as written
    # (same size, mtime and inode) is trusted without being read.
    path = shard_path(tmp_path)
    before = os.stat(path)
    with open(path, "r+b") as handle:
        handle.write(b"#" * before.st_size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    stored(tmp_path, layout())
    assert path.read_bytes() == b"#" * before.st_size
    path.unlink()

    stored(tmp_path, layout(fingerprint="e" * 64))
    loaded = LayoutCache(tmp_path).load(layout().metadata)
    assert loaded is not None and loaded.fingerprint == "e" * 64 and loaded.stale


def test_a_cold_parse_writes_a_few_files_and_keeps_every_layout(tmp_path):
    layouts = [layout(f"wf{number:03d}") for number in range(300)]
    stored(tmp_path, *layouts)
    files = list((tmp_path / "core").rglob("*.json"))
    assert len(files) <= LayoutCache.SHARDS + 1  # the shards and the index
    # A shard rewritten for one workflow keeps the others it holds.
    neighbour = next(
        item
        for item in layouts[1:]
        if LayoutCache.shard_of(item.workflow) == LayoutCache.shard_of("wf000")
    )
    stored(tmp_path, layout("wf000", fingerprint="e" * 64))
    cache = LayoutCache(tmp_path)
    assert cache.load(layouts[0].metadata).fingerprint == "e" * 64
    assert cache.load(neighbour.metadata).fingerprint == "f" * 64
    assert all(cache.load(item.metadata) is not None for item in layouts)


def test_the_index_is_only_a_hint(tmp_path):
    stored(tmp_path, layout())
    # Another process rewrote the shard with another layout: the index no longer
    # matches the file, so the shard is read back and rewritten.
    stored(tmp_path / "elsewhere", layout(fingerprint="e" * 64))
    os.replace(shard_path(tmp_path / "elsewhere"), shard_path(tmp_path))
    stored(tmp_path, layout())
    assert LayoutCache(tmp_path).load(layout().metadata).fingerprint == "f" * 64

    # A lost or unreadable index: the shard holds the fingerprint already, so it is
    # kept as it is and the index is written again.
    written = inode(shard_path(tmp_path))
    damages = (index_path(tmp_path).unlink, lambda: index_path(tmp_path).write_text("{no"))
    for damage in damages:
        damage()
        stored(tmp_path, layout())
        assert inode(shard_path(tmp_path)) == written
        index = json.loads(index_path(tmp_path).read_text())
        assert index["shards"][LayoutCache.shard_of("wf")]["fingerprints"] == {"wf": "f" * 64}


def test_layouts_cached_by_an_earlier_version_are_still_read(tmp_path):
    legacy = tmp_path / "core" / "wf.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps(layout().to_dict()))
    loaded = LayoutCache(tmp_path).load(layout().metadata)
    assert loaded is not None and loaded.fingerprint == "f" * 64


def test_a_cache_that_stores_nothing_writes_nothing(tmp_path):
    cache = LayoutCache(tmp_path / "cache")
    cache.flush()
    assert cache.load(layout().metadata) is None
    assert not (tmp_path / "cache").exists()
