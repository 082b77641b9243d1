"""The Kubernetes mode: a pod that runs a job's legacy command in the legacy image.

``build_pod`` makes the pod spec (a ``kubernetes.client.V1Pod``) without talking to a
cluster; ``run_pod`` hands it to the cncf-kubernetes provider's KubernetesPodOperator.
Both need ``apache-airflow-providers-cncf-kubernetes`` (which brings the ``kubernetes``
package); without it they raise ImportError saying so.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["build_pod", "label_value", "pod_annotations", "pod_labels", "run_pod"]

_MISSING = (
    "the kubernetes mode needs apache-airflow-providers-cncf-kubernetes "
    "(pip install apache-airflow-providers-cncf-kubernetes)"
)
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_MAX = 63
LABEL_PREFIX = "token-fetcher.io"


def label_value(value: str) -> str:
    """``value`` as a valid label value: at most 63 characters of ``[A-Za-z0-9_.-]``,
    starting and ending with a letter or digit. A value that had to change gets a short
    hash of the original appended, so two names never collapse into one label."""
    if len(value) <= _LABEL_MAX and _LABEL_VALUE_RE.match(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")
    cleaned = cleaned[: _LABEL_MAX - len(digest) - 1].rstrip("-_.")
    return f"{cleaned}-{digest}" if cleaned else digest


def pod_labels(cluster: str, workflow: str, job: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "token-fetcher",
        f"{LABEL_PREFIX}/cluster": label_value(cluster),
        f"{LABEL_PREFIX}/workflow": label_value(workflow),
        f"{LABEL_PREFIX}/job": label_value(job),
    }


def pod_annotations(
    cluster: str, workflow: str, job: str, fingerprint: str = "", run_id: str = ""
) -> dict[str, str]:
    """The exact names (labels hold sanitized ones), the layout fingerprint, the run."""
    annotations = {
        f"{LABEL_PREFIX}/cluster": cluster,
        f"{LABEL_PREFIX}/workflow": workflow,
        f"{LABEL_PREFIX}/job": job,
    }
    if fingerprint:
        annotations[f"{LABEL_PREFIX}/fingerprint"] = fingerprint
    if run_id:
        annotations[f"{LABEL_PREFIX}/run-id"] = run_id
    return annotations


def _pod_name(workflow: str, job: str) -> str:
    # A DNS-1123 label; KubernetesPodOperator appends a random suffix.
    base = re.sub(r"[^a-z0-9-]+", "-", f"tf-{workflow}-{job}".lower()).strip("-")
    return base[:50].rstrip("-") or "tf-job"


def build_pod(
    *,
    cluster: str,
    workflow: str,
    job: str,
    command: str,
    image: str,
    namespace: str = "default",
    resources: Mapping[str, Mapping[str, str]] | None = None,
    working_dir: str = "",
    env: Mapping[str, str] | None = None,
    service_account: str = "",
    image_pull_policy: str = "IfNotPresent",
    fingerprint: str = "",
    run_id: str = "",
    extra_labels: Mapping[str, str] | None = None,
) -> Any:
    """The pod that runs ``command`` as ``["bash", "-c", command]`` in ``image``.

    Labels name the cluster, workflow and job (sanitized to label rules); annotations
    keep the exact names, the layout fingerprint and the run id.
    """
    if not image:
        raise ValueError("the kubernetes mode needs an image ([token_fetcher] kube_image)")
    try:
        from kubernetes.client import models as k8s
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(_MISSING) from exc

    labels = pod_labels(cluster, workflow, job)
    labels.update({key: label_value(value) for key, value in (extra_labels or {}).items()})
    annotations = pod_annotations(cluster, workflow, job, fingerprint, run_id)
    resources = resources or {}
    container = k8s.V1Container(
        # KubernetesPodOperator reads the exit code of the container named "base".
        name="base",
        image=image,
        image_pull_policy=image_pull_policy,
        command=["bash", "-c", command],
        working_dir=working_dir or None,
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in sorted((env or {}).items())] or None,
        resources=k8s.V1ResourceRequirements(
            requests=dict(resources.get("requests") or {}) or None,
            limits=dict(resources.get("limits") or {}) or None,
        ),
    )
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(
            name=_pod_name(workflow, job),
            namespace=namespace,
            labels=labels,
            annotations=annotations,
        ),
        spec=k8s.V1PodSpec(
            containers=[container],
            restart_policy="Never",
            service_account_name=service_account or None,
        ),
    )


def run_pod(
    pod: Any,
    context: Any,
    *,
    task_id: str,
    conn_id: str = "",
    in_cluster: bool | None = None,
) -> None:
    """Run ``pod`` with the provider's KubernetesPodOperator and wait for it; a non-zero
    exit of the container fails the task (the provider raises)."""
    try:
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(_MISSING) from exc
    kwargs: dict[str, Any] = {
        "task_id": task_id,
        "full_pod_spec": pod,
        "namespace": pod.metadata.namespace,
        "get_logs": True,
        "on_finish_action": "delete_pod",
    }
    if conn_id:
        kwargs["kubernetes_conn_id"] = conn_id
    if in_cluster is not None:
        kwargs["in_cluster"] = in_cluster
    KubernetesPodOperator(**kwargs).execute(context)
