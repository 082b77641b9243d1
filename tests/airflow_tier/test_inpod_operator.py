"""The in-pod mode with real Airflow: the operators hand their command to a real runner
(``python -m token_fetcher.inpod.runner``, production intervals) through a shared
folder, and the task's pod override merges into the worker pod template the way the
KubernetesExecutor builds a worker pod. The protocol itself is tested in the main suite
(tests/test_inpod_handover.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import AirflowException, AirflowTaskTimeout
from airflow_helpers import killed_while_running

from tests.helpers import process_ended, validate_strict, wait_for
from token_fetcher.airflow.inpod import InPodSettings
from token_fetcher.airflow.operators import MigratedConditionSensor, MigratedJobOperator
from token_fetcher.inpod import runner
from token_fetcher.inpod.resources import ResourceHistory, ResourcePolicy

pytest.importorskip("kubernetes", reason="needs apache-airflow-providers-cncf-kubernetes")

RUN_TIME = datetime(2015, 2, 2, 0, 0, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "kubernetes" / "inpod" / "worker-pod-template.yaml"
IMAGE = "registry.example/legacy-jobs:2015.1"


@pytest.fixture
def handover_dir(tmp_path):
    root = tmp_path / "handover"
    root.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "token_fetcher.inpod.runner", "--root", str(root),
         "--cwd", str(tmp_path)],
        start_new_session=True,
    )
    wait_for(lambda: (root / runner.LEGACY_FILE).exists(), 20, message="the runner")
    yield root
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def options(tmp_path, handover_dir, **policy) -> dict:
    settings = InPodSettings(
        handover_dir=str(handover_dir),
        history_dir=str(tmp_path / "history"),
        policy=ResourcePolicy(**policy),
        ready_timeout=10,
    )
    return {"image": IMAGE, "resources": {"requests": {"memory": "1Gi"}}, "inpod": settings}


def job(tmp_path, handover_dir, segments, **kwargs) -> MigratedJobOperator:
    return MigratedJobOperator(
        task_id="load",
        cluster="core001",
        workflow="daily",
        job="load",
        fingerprint="f" * 64,
        command_segments=segments,
        runner="inpod",
        kubernetes=options(tmp_path, handover_dir, min_runs=1),
        **kwargs,
    )


def test_a_job_runs_in_the_legacy_container_and_is_recorded(tmp_path, handover_dir, capfd):
    op = job(tmp_path, handover_dir, ['echo "end_date=', '"; echo to-stderr >&2'])
    op.execute({"data_interval_end": RUN_TIME, "run_id": "scheduled__1"})
    # The task log (structlog, to this process's stdout here): one entry per line.
    logged = [line.split("] ", 1)[-1] for line in capfd.readouterr().out.splitlines()]
    assert any(entry.startswith("end_date=2015-02-01 ") for entry in logged), logged
    assert any(entry.startswith("to-stderr ") for entry in logged), logged
    [runs] = ResourceHistory(tmp_path / "history").runs("core001").values()
    assert [(r.run_id, r.exit_code) for r in runs] == [("scheduled__1", 0)]

    failing = job(tmp_path, handover_dir, ["exit 3"])
    with pytest.raises(AirflowException, match="daily/load: command exited 3"):
        failing.execute({"data_interval_end": RUN_TIME})


def test_the_warn_timeout_is_reported_and_the_job_goes_on(tmp_path, handover_dir):
    gate = tmp_path / "gate"
    op = job(tmp_path, handover_dir, [f"while [ ! -e {gate} ]; do sleep 0.05; done"],
             warn_timeout_seconds=1)
    warned = []

    def warn(context):
        warned.append(context["run_id"])
        gate.touch()  # the job ends only after the warning

    op._warn_timeout = warn
    op.execute({"data_interval_end": RUN_TIME, "run_id": "scheduled__1"})
    assert warned == ["scheduled__1"]


def test_the_execution_timeout_stops_the_legacy_command(tmp_path, handover_dir):
    op = job(
        tmp_path,
        handover_dir,
        [f"sleep 60 & echo $! > {tmp_path}/child.pid; wait"],
        execution_timeout=timedelta(seconds=1),
    )
    with pytest.raises(AirflowTaskTimeout, match="longer than 1 s"):
        op.execute({"data_interval_end": RUN_TIME})
    child = int((tmp_path / "child.pid").read_text())
    wait_for(lambda: process_ended(child), 30, message="the command's child to be stopped")


def test_a_condition_is_met_by_exit_zero_only(tmp_path, handover_dir):
    def sensor(command: str) -> MigratedConditionSensor:
        return MigratedConditionSensor(
            task_id="ready", cluster="core001", workflow="daily", job="ready",
            fingerprint="f" * 64, command_segments=[command], runner="inpod",
            kubernetes=options(tmp_path, handover_dir),
        )

    assert sensor("exit 0").poke({"data_interval_end": RUN_TIME}) is True
    assert sensor("exit 1").poke({"data_interval_end": RUN_TIME}) is False


def test_the_pod_override_merges_into_the_template_and_validates(tmp_path, handover_dir):
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from kubernetes.client import ApiClient

    op = job(tmp_path, handover_dir, ["echo ok"])
    op.execute({"data_interval_end": RUN_TIME, "run_id": "scheduled__1"})
    # The next parse sees the recorded run (min_runs=1): its own resources.
    op = job(tmp_path, handover_dir, ["echo ok"])
    override = op.executor_config["pod_override"]
    pod = PodGenerator.construct_pod(
        dag_id="core001__daily",
        task_id="load",
        pod_id="core001-daily-load",
        try_number=1,
        kube_image="apache/airflow:3.1.0",
        date=None,
        args=["airflow", "tasks", "run", "core001__daily", "load", "scheduled__1"],
        pod_override_object=override,
        base_worker_pod=PodGenerator.deserialize_model_file(str(TEMPLATE)),
        namespace="pinball",
        scheduler_job_id="1",
    )
    manifest = ApiClient().sanitize_for_serialization(pod)
    spec = manifest["spec"]
    [legacy] = [c for c in spec["initContainers"] if c["name"] == "legacy"]
    assert legacy["image"] == IMAGE
    assert legacy["resources"]["requests"]["memory"] == "256Mi"  # the floor: a tiny job
    assert legacy["command"][:2] == ["python3", "/handover/runner.py"]  # from the template
    assert [m["mountPath"] for m in legacy["volumeMounts"]] == ["/handover"]
    [base] = spec["containers"]
    assert base["args"][:3] == ["airflow", "tasks", "run"]
    assert len({m["mountPath"] for m in base["volumeMounts"]}) == len(base["volumeMounts"])
    assert manifest["metadata"]["labels"]["token-fetcher.io/job"] == "load"
    path = tmp_path / "worker-pod.yaml"
    path.write_text(yaml.safe_dump(manifest))
    validate_strict(path)


def test_on_kill_stops_the_legacy_command(tmp_path, handover_dir):
    op = job(tmp_path, handover_dir, [f"sleep 60 & echo $! > {tmp_path}/child.pid; wait"])
    pid_file = tmp_path / "child.pid"
    [error] = killed_while_running(op, {"data_interval_end": RUN_TIME}, pid_file)
    assert "cancelled: the task was killed" in str(error)
    child = int(pid_file.read_text())
    wait_for(lambda: process_ended(child), 30, message="the command's child to be stopped")


def test_an_inpod_dag_carries_a_pod_override_per_task_through_serialization():
    from airflow.serialization.serialized_objects import DagSerialization
    from test_pod_spec import layout

    from token_fetcher.airflow.dags import build_dag
    from token_fetcher.airflow.settings import KubernetesSettings, Settings

    settings = Settings(
        mode="inpod",
        kubernetes=KubernetesSettings(image=IMAGE, memory_request="1Gi", memory_limit="2Gi"),
    )
    dag = build_dag(layout(), settings)
    for task in dag.tasks:
        assert task.runner == "inpod"
        override = task.executor_config["pod_override"]
        assert override.metadata.labels["token-fetcher.io/job"] == task.task_id
        [legacy] = override.spec.init_containers
        # No history configured: the kube_* resources.
        assert (legacy.image, legacy.resources.limits) == (IMAGE, {"memory": "2Gi"})
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    for task in restored.tasks:
        pod = task.executor_config["pod_override"]
        assert pod.spec.init_containers[0].image == IMAGE
        assert pod.metadata.annotations["token-fetcher.io/job"] == task.task_id
