"""The in-pod mode (``mode = inpod``): the legacy image as a second container of the
KubernetesExecutor's worker pod, instead of a pod per task.

The worker pod comes from the pod template in deploy/kubernetes/inpod/ (the Airflow
worker container ``base`` and the legacy container ``legacy``, a native sidecar, sharing
the hand-over volume). Each task's ``executor_config`` carries a ``pod_override`` with
its labels, the legacy image and the legacy container's resources: recommended from the
job's recorded runs (``token_fetcher.inpod.resources``) when there are enough, else the
``kube_*`` resources. At run time the operator hands the command over
(``token_fetcher.inpod.handover``), logs its output, and records what it used.

The override is built as a plain manifest (``pod_override_manifest``), so it is
validated without Airflow; nothing here imports Airflow or the kubernetes package until
an operator needs it.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from token_fetcher.airflow.kubernetes import pod_annotations, pod_labels
from token_fetcher.inpod.handover import Handover, HandoverTimeout, LegacyUnavailable, Outcome
from token_fetcher.inpod.resources import (
    ResourceHistory,
    ResourcePolicy,
    RunUsage,
    parse_cpu,
    parse_memory,
    recommend_from_summary,
)

__all__ = [
    "InPodSettings",
    "cancel_in_pod",
    "executor_config",
    "pod_override_manifest",
    "run_in_pod",
]

WORKER_CONTAINER = "base"  # the KubernetesExecutor's name for the worker container
LEGACY_CONTAINER = "legacy"
HANDOVER_DIR = "/handover"

SECTION = "token_fetcher"
_TYPES = {"str": str, "int": int, "float": float}  # field annotations, as strings


@dataclass(frozen=True)
class InPodSettings:
    """The ``inpod_*`` keys of ``[token_fetcher]``."""

    handover_dir: str = HANDOVER_DIR
    history_dir: str = ""  # no history: no recording, the kube_* resources
    keep_runs: int = 30
    policy: ResourcePolicy = field(default_factory=ResourcePolicy)
    ready_timeout: float = 120.0  # waiting for the legacy container's runner
    stop_timeout: float = 30.0  # waiting for it to confirm a stop (> its kill grace)

    @classmethod
    def from_airflow_conf(cls) -> InPodSettings:
        from airflow.configuration import conf

        def get(key: str) -> str:
            value = conf.get(SECTION, f"inpod_{key}", fallback=None)
            return "" if value is None else str(value).strip()

        return cls.from_strings(get)

    @classmethod
    def from_strings(cls, get) -> InPodSettings:
        """From ``get(key) -> text`` ('' for unset); an error names the key."""
        policy_keys = {
            "percentile": float,
            "headroom": float,
            "cpu_floor": parse_cpu,
            "cpu_ceiling": parse_cpu,
            "memory_floor": parse_memory,
            "memory_ceiling": parse_memory,
            "min_runs": int,
        }
        own_keys = {item.name: _TYPES[item.type] for item in fields(cls) if item.name != "policy"}
        policy: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for keys, target in ((policy_keys, policy), (own_keys, values)):
            for key, convert in keys.items():
                text = get(key)
                if not text:
                    continue
                try:
                    target[key] = convert(text)
                except ValueError as exc:
                    raise ValueError(f"[{SECTION}] inpod_{key} = {text!r}: {exc}") from None
        try:
            return cls(**values, policy=ResourcePolicy(**policy))
        except ValueError as exc:
            raise ValueError(f"[{SECTION}] inpod_* settings: {exc}") from None


@functools.cache
def _conf_settings() -> InPodSettings:
    return InPodSettings.from_airflow_conf()


def _settings(options: Mapping[str, Any]) -> InPodSettings:
    """The operator's in-pod settings: given in its options, else Airflow's config."""
    given = options.get("inpod")
    return given if isinstance(given, InPodSettings) else _conf_settings()


@functools.lru_cache(maxsize=256)
def _summary(root: str, cluster: str, workflow: str, signature: tuple) -> dict:
    return ResourceHistory(root).summary(cluster, workflow)


def recorded_resources(
    settings: InPodSettings, cluster: str, workflow: str, job: str
) -> dict[str, dict[str, str]] | None:
    """The resources the job's recorded runs recommend, or None. The workflow's summary
    is read once per change (a parse builds all of a workflow's tasks)."""
    if not settings.history_dir:
        return None
    history = ResourceHistory(settings.history_dir)
    path = history.summary_path(cluster, workflow)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    summary = _summary(
        settings.history_dir, cluster, workflow, (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    )
    recommendation = recommend_from_summary(summary, job, settings.policy)
    return recommendation.resources() if recommendation else None


def pod_override_manifest(
    *,
    cluster: str,
    workflow: str,
    job: str,
    image: str,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    fingerprint: str = "",
    image_pull_policy: str = "",
) -> dict[str, Any]:
    """The task's pod override as a manifest: labels and annotations naming the job,
    and the legacy container's image and resources. The containers are matched by name
    (``base`` and ``legacy``) against the in-pod pod template."""
    if not image:
        raise ValueError("the inpod mode needs the legacy image ([token_fetcher] kube_image)")
    annotations = pod_annotations(cluster, workflow, job, fingerprint)
    legacy: dict[str, Any] = {"name": LEGACY_CONTAINER, "image": image}
    if image_pull_policy:
        legacy["imagePullPolicy"] = image_pull_policy
    resources = {kind: dict(values) for kind, values in (resources or {}).items() if values}
    if resources:
        legacy["resources"] = resources
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": pod_labels(cluster, workflow, job), "annotations": annotations},
        "spec": {"containers": [{"name": WORKER_CONTAINER}], "initContainers": [legacy]},
    }


def override_for(
    options: Mapping[str, Any], *, cluster: str, workflow: str, job: str, fingerprint: str
) -> dict[str, Any]:
    """``pod_override_manifest`` for an operator's options (its ``kubernetes`` dict):
    recorded resources when there are enough runs, else the configured ones."""
    settings = _settings(options)
    resources = recorded_resources(settings, cluster, workflow, job) or options.get("resources")
    return pod_override_manifest(
        cluster=cluster,
        workflow=workflow,
        job=job,
        image=options.get("image", ""),
        resources=resources,
        fingerprint=fingerprint,
        image_pull_policy=options.get("image_pull_policy", ""),
    )


def executor_config(options: Mapping[str, Any], **job: str) -> dict[str, Any]:
    """``{"pod_override": V1Pod}`` for the KubernetesExecutor (needs the cncf-kubernetes
    provider)."""
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    return {"pod_override": PodGenerator.deserialize_model_dict(override_for(options, **job))}


def run_in_pod(task: Any, command: str, context: Mapping[str, Any], **warn: Any) -> Outcome:
    """Hand ``command`` to the legacy container and follow it as ``task``: its output
    goes to the task log, ``execution_timeout`` stops it, the run's resources are
    recorded. ``warn``: ``warn_after`` and ``on_warn`` for Pinball's warn timeout.
    Raises AirflowException when the legacy container is unavailable and
    AirflowTaskTimeout past the timeout."""
    from airflow.sdk.exceptions import AirflowException, AirflowTaskTimeout

    settings = _settings(task.kubernetes)
    handover = Handover(
        settings.handover_dir,
        ready_timeout=settings.ready_timeout,
        stop_timeout=settings.stop_timeout,
    )
    task._handover = handover  # for cancel_in_pod
    timeout = task.execution_timeout.total_seconds() if task.execution_timeout else None
    task.log.info("Handing over to the legacy container (%s): %s", settings.handover_dir, command)
    try:
        outcome = handover.run(
            command,
            cwd=task.kubernetes.get("working_dir", ""),
            env=task.env,
            on_output=lambda line: task.log.info("%s", line),
            timeout=timeout,
            **warn,
        )
    except HandoverTimeout as exc:
        if exc.outcome is not None:
            _record(task, settings, exc.outcome, context)
        raise AirflowTaskTimeout(f"{task.workflow}/{task.job}: {exc}") from exc
    except LegacyUnavailable as exc:
        raise AirflowException(f"{task.workflow}/{task.job}: {exc}") from exc
    _record(task, settings, outcome, context)
    task.log.info(
        "%s/%s: %s (peak memory %.0f MiB, CPU %.1f s, wall %.1f s)",
        task.workflow,
        task.job,
        outcome.describe(),
        outcome.peak_memory_bytes / 2**20,
        outcome.cpu_seconds,
        outcome.wall_seconds,
    )
    return outcome


def cancel_in_pod(task: Any) -> None:
    """``on_kill``: ask the legacy container to stop the task's command now. (Airflow
    calls it from its SIGTERM handler and lets ``execute`` go on, which then gets the
    cancelled outcome.)"""
    handover = getattr(task, "_handover", None)
    if handover is not None:
        handover.cancel("the task was killed")


def _record(task: Any, settings: InPodSettings, outcome: Outcome, context: Mapping) -> None:
    if not (settings.history_dir and outcome.measured):
        return
    ti = context.get("ti")
    usage = RunUsage(
        cluster=task.cluster,
        workflow=task.workflow,
        job=task.job,
        run_id=str(context.get("run_id", "")),
        try_number=int(getattr(ti, "try_number", 0) or 0),
        finished=time.time(),
        outcome=outcome.outcome,
        exit_code=outcome.exit_code,
        peak_memory_bytes=outcome.peak_memory_bytes,
        cpu_seconds=outcome.cpu_seconds,
        wall_seconds=outcome.wall_seconds,
    )
    try:
        ResourceHistory(settings.history_dir, settings.keep_runs).record(usage)
    except Exception:  # the history must never fail the job
        task.log.exception("token-fetcher: could not record the run's resources")
