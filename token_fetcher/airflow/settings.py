"""Settings of the Airflow integration, from the ``[token_fetcher]`` config section.

Each key can be set in airflow.cfg or as an environment variable
``AIRFLOW__TOKEN_FETCHER__<KEY>`` (Airflow's usual rule); no Airflow Variable is read,
so parsing a DAG file never touches the metadata database.

==========================  =========================================================
key                         meaning (default)
==========================  =========================================================
target                      the token fetcher, HOST:PORT (127.0.0.1:50051)
migrations_dir              folder of migration metadata files (<dags folder>/migrations)
cache_dir                   on-disk cache of last good layouts
                            (<AIRFLOW_HOME>/token_fetcher/cache)
timeout                     deadline of one RPC attempt, seconds (5)
retries                     extra attempts after UNAVAILABLE (2)
cache_ttl                   client cache TTL, seconds (30)
max_stale                   serve the client's cached answer this long while the
                            server is unreachable, seconds (600)
mode                        ``local`` (bash -c on the worker), ``kubernetes`` (a pod per
                            job) or ``inpod`` (the legacy container of the worker pod;
                            its ``inpod_*`` keys: token_fetcher.airflow.inpod) (local)
job_cwd                     working directory of local commands: the legacy repo root
                            (the worker's current directory)
poke_mode                   conditions: ``auto`` (reschedule when the retry delay is at
                            least 60 s, else poke), ``poke`` or ``reschedule`` (auto)
warn_timeout_email          also email the job's addresses when its warn timeout passes
                            (False: a warning in the task log)
kube_image                  the legacy image (required in kubernetes mode)
kube_namespace              (default)
kube_service_account        (none)
kube_cpu_request ...        kube_cpu_request, kube_memory_request, kube_cpu_limit,
                            kube_memory_limit: container resources (none)
kube_working_dir            the container's working directory (the image's)
kube_image_pull_policy      (IfNotPresent)
kube_conn_id                Airflow connection of the cluster (the provider's default)
kube_in_cluster             True / False (the provider's default)
fast_task_setattr           build tasks through a faster ``BaseOperator.__setattr__``
                            (True; token_fetcher.airflow.fast_setattr)
fast_edges                  set a DAG's dependencies without hashing the DAG per task
                            (True; token_fetcher.airflow.fast_edges)
==========================  =========================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from token_fetcher.client import DEFAULT_TARGET

__all__ = ["KubernetesSettings", "Settings", "MODES", "POKE_MODES", "conf_flag"]

SECTION = "token_fetcher"
MODES = ("local", "kubernetes", "inpod")
POKE_MODES = ("auto", "poke", "reschedule")


@dataclass(frozen=True)
class KubernetesSettings:
    image: str = ""
    namespace: str = "default"
    service_account: str = ""
    cpu_request: str = ""
    memory_request: str = ""
    cpu_limit: str = ""
    memory_limit: str = ""
    working_dir: str = ""
    image_pull_policy: str = "IfNotPresent"
    conn_id: str = ""
    in_cluster: bool | None = None

    def resources(self) -> dict[str, dict[str, str]]:
        """``{"requests": {...}, "limits": {...}}`` with only the values that are set."""
        requests = {"cpu": self.cpu_request, "memory": self.memory_request}
        limits = {"cpu": self.cpu_limit, "memory": self.memory_limit}
        return {
            "requests": {k: v for k, v in requests.items() if v},
            "limits": {k: v for k, v in limits.items() if v},
        }


@dataclass(frozen=True)
class Settings:
    target: str = DEFAULT_TARGET
    migrations_dir: str = "migrations"
    cache_dir: str = ""
    timeout: float = 5.0
    retries: int = 2
    cache_ttl: float = 30.0
    max_stale: float = 600.0
    mode: str = "local"
    job_cwd: str = ""
    poke_mode: str = "auto"
    warn_timeout_email: bool = False
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"[{SECTION}] mode must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        if self.poke_mode not in POKE_MODES:
            raise ValueError(
                f"[{SECTION}] poke_mode must be one of {', '.join(POKE_MODES)}, "
                f"got {self.poke_mode!r}"
            )

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None values replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_airflow_conf(cls) -> Settings:
        """Read ``[token_fetcher]`` (and the env vars that override it) from Airflow's
        config; defaults follow the dags folder and AIRFLOW_HOME."""
        from airflow.configuration import AIRFLOW_HOME, conf

        def get(key: str, default: str = "") -> str:
            value = conf.get(SECTION, key, fallback=None)
            return default if value is None or value == "" else str(value)

        dags_folder = os.path.expanduser(conf.get("core", "dags_folder"))
        values: dict[str, Any] = {
            "target": get("target", DEFAULT_TARGET),
            "migrations_dir": get("migrations_dir", os.path.join(dags_folder, "migrations")),
            "cache_dir": get("cache_dir", os.path.join(AIRFLOW_HOME, "token_fetcher", "cache")),
            "timeout": float(get("timeout", "5")),
            "retries": int(get("retries", "2")),
            "cache_ttl": float(get("cache_ttl", "30")),
            "max_stale": float(get("max_stale", "600")),
            "mode": get("mode", "local").lower(),
            "job_cwd": get("job_cwd"),
            "poke_mode": get("poke_mode", "auto").lower(),
            "warn_timeout_email": _bool(get("warn_timeout_email", "false")),
        }
        kube: dict[str, Any] = {}
        for item in fields(KubernetesSettings):
            raw = get(f"kube_{item.name}")
            if not raw:
                continue
            kube[item.name] = _bool(raw) if item.name == "in_cluster" else raw
        return cls(**values, kubernetes=KubernetesSettings(**kube))


def conf_flag(key: str, *, default: bool) -> bool:
    """A boolean key of ``[token_fetcher]`` read on its own (empty or unset: ``default``),
    for code that runs outside the loader."""
    from airflow.configuration import conf

    value = conf.get(SECTION, key, fallback=None)
    return default if value is None or value == "" else _bool(str(value))


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"[{SECTION}] expected a boolean, got {text!r}")
