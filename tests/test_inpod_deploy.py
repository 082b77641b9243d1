"""The in-pod mode's manifests: the worker pod template, the resource-history claim and
the per-task pod override, validated with kubernetes-validate --strict (offline, against
the schemas it ships) and checked for the facts the hand-over relies on. No cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import validate_strict
from token_fetcher.airflow.inpod import (
    HANDOVER_DIR,
    LEGACY_CONTAINER,
    WORKER_CONTAINER,
    InPodSettings,
    override_for,
    pod_override_manifest,
)
from token_fetcher.inpod.resources import ResourceHistory, ResourcePolicy, RunUsage

ROOT = Path(__file__).resolve().parents[1]
INPOD_DIR = ROOT / "deploy" / "kubernetes" / "inpod"
TEMPLATE = INPOD_DIR / "worker-pod-template.yaml"


def as_validated(override: dict) -> dict:
    """The override as kubernetes-validate takes it: the tool needs a metadata.name to
    identify a resource; the override has none because the executor names each pod
    (a name in the override would give every try of the task the same pod name)."""
    assert "name" not in override["metadata"]
    return {**override, "metadata": {**override["metadata"], "name": "airflow-worker"}}


def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def container(spec: dict, name: str, kind: str = "containers") -> dict:
    [found] = [c for c in spec.get(kind, []) if c["name"] == name]
    return found


def mount_of(container: dict, path: str) -> dict:
    [found] = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    return found


@pytest.mark.parametrize("manifest", sorted(INPOD_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_in_pod_manifests_pass_kubernetes_validate_strict(manifest):
    validate_strict(manifest)


def test_the_pod_override_passes_kubernetes_validate_strict(tmp_path):
    history = tmp_path / "history"
    for run in range(3):
        ResourceHistory(history).record(
            RunUsage("core001", "daily reporting", "load/events", f"run{run}", 1, 0.0,
                     "exited", 0, 700 * 2**20, 30.0, 60.0)
        )
    options = {
        "image": "registry.example/legacy-jobs:2015.1",
        "image_pull_policy": "Always",
        "inpod": InPodSettings(history_dir=str(history), policy=ResourcePolicy()),
    }
    override = override_for(options, cluster="core001", workflow="daily reporting",
                            job="load/events", fingerprint="f" * 64)
    assert override["spec"]["initContainers"][0]["resources"]["requests"]["memory"] == "848Mi"
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(as_validated(override)))
    validate_strict(path)
    # And one without recorded or configured resources.
    bare = pod_override_manifest(cluster="c", workflow="w", job="j", image="legacy:1")
    path.write_text(yaml.safe_dump(as_validated(bare)))
    validate_strict(path)


def test_the_override_matches_the_template_by_container_name():
    spec = template()["spec"]
    # The executor merges containers by position (the worker first) and init
    # containers by name.
    assert spec["containers"][0]["name"] == WORKER_CONTAINER
    override = pod_override_manifest(cluster="c", workflow="w", job="j", image="legacy:1")
    assert [c["name"] for c in override["spec"]["containers"]] == [WORKER_CONTAINER]
    [legacy] = override["spec"]["initContainers"]
    assert container(spec, legacy["name"], "initContainers")


def test_both_containers_share_the_handover_volume_and_the_runner():
    spec = template()["spec"]
    worker = container(spec, WORKER_CONTAINER)
    legacy = container(spec, LEGACY_CONTAINER, "initContainers")
    install = container(spec, "install-runner", "initContainers")
    names = {mount_of(c, HANDOVER_DIR)["name"] for c in (worker, legacy, install)}
    assert len(names) == 1
    [volume] = [v for v in spec["volumes"] if v["name"] in names]
    assert "emptyDir" in volume
    # The legacy container is a native sidecar started after the runner was copied.
    init_names = [c["name"] for c in spec["initContainers"]]
    assert init_names.index("install-runner") < init_names.index(LEGACY_CONTAINER)
    assert legacy.get("restartPolicy") == "Always"
    assert legacy["command"][:4] == ["python3", f"{HANDOVER_DIR}/runner.py", "--root", HANDOVER_DIR]
    assert "/handover/runner.py" in " ".join(install["command"])
    assert legacy["livenessProbe"]["exec"]["command"][-1] == "--check"
    assert spec["restartPolicy"] == "Never"


def test_the_worker_container_is_configured_for_the_inpod_mode():
    spec = template()["spec"]
    worker = container(spec, WORKER_CONTAINER)
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["AIRFLOW__TOKEN_FETCHER__MODE"] == "inpod"
    assert env["AIRFLOW__TOKEN_FETCHER__INPOD_HANDOVER_DIR"] == HANDOVER_DIR
    # The worker parses the DAG to run a task: building it needs the legacy image.
    legacy = container(spec, LEGACY_CONTAINER, "initContainers")
    assert env["AIRFLOW__TOKEN_FETCHER__KUBE_IMAGE"] == legacy["image"]
    history = env["AIRFLOW__TOKEN_FETCHER__INPOD_HISTORY_DIR"]
    claim = next(v for v in spec["volumes"] if v["name"] == mount_of(worker, history)["name"])
    claims = yaml.safe_load((INPOD_DIR / "resource-history-pvc.yaml").read_text())
    assert claim["persistentVolumeClaim"]["claimName"] == claims["metadata"]["name"]
    assert "ReadWriteMany" in claims["spec"]["accessModes"]  # written by every worker pod


def test_every_container_is_non_root_and_has_resources():
    spec = template()["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for item in spec["initContainers"] + spec["containers"]:
        security = item["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, item["name"]
        assert security["allowPrivilegeEscalation"] is False, item["name"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(item["resources"][kind]), item["name"]
