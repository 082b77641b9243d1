"""The Kubernetes mode's pod spec, built (not run): no cluster needed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.airflow.dags import build_dag
from token_fetcher.airflow.kubernetes import build_pod, label_value
from token_fetcher.airflow.layouts import Layout
from token_fetcher.airflow.settings import KubernetesSettings, Settings
from token_fetcher.migration import MigrationMetadata

pytest.importorskip("kubernetes", reason="needs apache-airflow-providers-cncf-kubernetes")

LABEL_RE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


def layout(cluster: str = "core001", workflow: str = "daily_reporting") -> Layout:
    spec = pb.WorkflowSpec(cluster=cluster, name=workflow, final_job="final")
    spec.schedule.reference_time.seconds = 1420092000  # 2015-01-01 06:00
    spec.schedule.recurrence_seconds = 86400
    spec.schedule.overrun_policy = pb.OVERRUN_POLICY_DELAY
    job = spec.jobs.add(
        name="load_events",
        kind=pb.JOB_KIND_JOB,
        max_attempts=2,
        score=3,
        inputs=["__WORKFLOW_START__"],
        outputs=["final"],
        children=["final"],
    )
    job.command.segments.extend(['run --job_params="end_date=', '" '])
    final = spec.jobs.add(
        name="final",
        kind=pb.JOB_KIND_JOB,
        max_attempts=1,
        score=1,
        inputs=["load_events"],
        parents=["load_events"],
    )
    final.command.segments.append("echo done")
    metadata = MigrationMetadata(cluster, workflow, datetime(2020, 1, 1, tzinfo=UTC))
    return Layout.from_spec(metadata, "f" * 64, spec, stale=False, source="test")


def kube_settings() -> Settings:
    return Settings(
        mode="kubernetes",
        kubernetes=KubernetesSettings(
            image="registry.example/legacy-jobs:2015.1",
            namespace="pinball",
            service_account="legacy-runner",
            cpu_request="500m",
            memory_request="1Gi",
            memory_limit="2Gi",
            working_dir="/mnt/repo",
        ),
    )


def test_the_pod_of_a_job_for_a_run():
    dag = build_dag(layout(), kube_settings())
    task = dag.task_dict["load_events"]
    assert task.runner == "kubernetes"
    run_time = datetime(2020, 1, 2, 6, tzinfo=UTC)
    command = task.command_for({"data_interval_end": run_time})
    assert command == 'run --job_params="end_date=2020-01-01" '
    pod = task.build_pod(command, run_id="scheduled__2020-01-02T06:00:00+00:00")

    assert pod.metadata.namespace == "pinball"
    assert pod.metadata.labels == {
        "app.kubernetes.io/managed-by": "token-fetcher",
        "token-fetcher.io/cluster": "core001",
        "token-fetcher.io/workflow": "daily_reporting",
        "token-fetcher.io/job": "load_events",
    }
    assert pod.metadata.annotations["token-fetcher.io/fingerprint"] == "f" * 64
    assert pod.metadata.annotations["token-fetcher.io/run-id"] == (
        "scheduled__2020-01-02T06:00:00+00:00"
    )
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.service_account_name == "legacy-runner"
    [container] = pod.spec.containers
    assert container.name == "base"
    assert container.image == "registry.example/legacy-jobs:2015.1"
    assert container.command == ["bash", "-c", 'run --job_params="end_date=2020-01-01" ']
    assert container.working_dir == "/mnt/repo"
    assert container.resources.requests == {"cpu": "500m", "memory": "1Gi"}
    assert container.resources.limits == {"memory": "2Gi"}
    # It is a valid Kubernetes object: the API client serializes it.
    from kubernetes.client import ApiClient

    body = ApiClient().sanitize_for_serialization(pod)
    assert body["spec"]["containers"][0]["command"][0] == "bash"


def test_names_are_sanitized_to_label_rules():
    import re

    pod = build_pod(
        cluster="Core 001!",
        workflow="_weird/workflow_",
        job="x" * 80,
        command="true",
        image="img",
    )
    labels = pod.metadata.labels
    for value in labels.values():
        assert len(value) <= 63
        assert re.match(LABEL_RE, value), value
    assert labels["token-fetcher.io/cluster"].startswith("Core-001-")
    # Different names never collapse into one label value.
    assert label_value("a b") != label_value("a-b")
    assert label_value("x" * 80) != label_value("x" * 81)
    # The exact names stay in the annotations.
    assert pod.metadata.annotations["token-fetcher.io/workflow"] == "_weird/workflow_"
    assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", pod.metadata.name)


def test_the_kubernetes_mode_needs_an_image():
    with pytest.raises(ValueError, match="kube_image"):
        build_pod(cluster="c", workflow="w", job="j", command="true", image="")
