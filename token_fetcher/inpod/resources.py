"""Resources from history: what each migrated task used in its past runs, and the
requests and limits its pod gets from that.

The history is a folder (shared by the workers, e.g. a ReadWriteMany volume)::

    <root>/<cluster>/<workflow>/runs/<job>/<finished>-<run>.json   one file per run
    <root>/<cluster>/<workflow>/usage.json                          the workflow's summary

Each run is a file of its own, written whole and renamed into place, so concurrent
workers never need a lock; each job keeps its newest ``keep`` runs. After recording a
run the worker rewrites the workflow's summary (every job's recent peak memory and
average cores) from the run files, so that a DAG parse reads one file per workflow.
Two runs of one workflow that end at the same moment may leave a summary without one
of them; the next run of the workflow rewrites it.

``recommend`` turns a job's runs into requests and limits with a ``ResourcePolicy``:
the chosen percentile of the runs, plus headroom, within the floor and ceiling. Memory
request = limit (a batch job that is OOM-killed for exceeding a limit above its request
is no better than one that cannot be scheduled); CPU request from the runs, CPU limit =
the ceiling (a limit below what a job wants only makes it slower).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from token_fetcher.files import atomic_write_text

__all__ = [
    "Recommendation",
    "ResourceHistory",
    "ResourcePolicy",
    "RunUsage",
    "format_cpu",
    "format_memory",
    "parse_cpu",
    "parse_memory",
    "recommend",
]

RUNS_DIR = "runs"
SUMMARY_FILE = "usage.json"
MIB = 2**20
# Rounding keeps small run-to-run differences from changing the pod override (and so
# the serialized DAG) at every run.
CPU_STEP = 0.05
MEMORY_STEP = 16 * MIB

_MEMORY_UNITS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
}  # fmt: skip
_QUANTITY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)$")


def parse_memory(text: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``2G``, ``1048576``) in bytes."""
    match = _QUANTITY_RE.match(str(text).strip())
    if not match or match.group(2) not in ("", *_MEMORY_UNITS):
        raise ValueError(f"not a memory quantity: {text!r} (examples: 512Mi, 2Gi)")
    return int(float(match.group(1)) * _MEMORY_UNITS.get(match.group(2), 1))


def parse_cpu(text: str) -> float:
    """A Kubernetes CPU quantity (``500m``, ``2``, ``0.5``) in cores."""
    match = _QUANTITY_RE.match(str(text).strip())
    if not match or match.group(2) not in ("", "m"):
        raise ValueError(f"not a CPU quantity: {text!r} (examples: 250m, 2)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "m" else value


def format_memory(value: int) -> str:
    return f"{math.ceil(value / MIB)}Mi"


def format_cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


@dataclass(frozen=True)
class RunUsage:
    """What one run of a job used, as the legacy container measured it."""

    cluster: str
    workflow: str
    job: str
    run_id: str
    try_number: int
    finished: float  # epoch seconds
    outcome: str
    exit_code: int | None
    peak_memory_bytes: int
    cpu_seconds: float
    wall_seconds: float

    @property
    def cores(self) -> float:
        """Average cores over the run."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass(frozen=True)
class ResourcePolicy:
    """How recorded runs become requests and limits."""

    percentile: float = 95.0
    headroom: float = 0.2  # a fraction: 0.2 adds 20 %
    cpu_floor: float = 0.1  # cores
    cpu_ceiling: float = 4.0
    memory_floor: int = 256 * MIB  # bytes
    memory_ceiling: int = 8 * 2**30
    min_runs: int = 3  # fewer recorded runs: no recommendation (the configured defaults)

    def __post_init__(self) -> None:
        if not 0 < self.percentile <= 100:
            raise ValueError(f"resource percentile must be in (0, 100], got {self.percentile}")
        if self.headroom < 0:
            raise ValueError(f"resource headroom must be >= 0, got {self.headroom}")
        if not 0 < self.cpu_floor <= self.cpu_ceiling:
            raise ValueError(
                f"CPU floor {self.cpu_floor} and ceiling {self.cpu_ceiling}: "
                "need 0 < floor <= ceiling"
            )
        if not 0 < self.memory_floor <= self.memory_ceiling:
            raise ValueError(
                f"memory floor {format_memory(self.memory_floor)} and ceiling "
                f"{format_memory(self.memory_ceiling)}: need 0 < floor <= ceiling"
            )
        if self.min_runs < 1:
            raise ValueError(f"min_runs must be >= 1, got {self.min_runs}")


@dataclass(frozen=True)
class Recommendation:
    """A job's requests and limits, and what they came from."""

    runs: int
    memory_percentile_bytes: int
    cores_percentile: float
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)

    def resources(self) -> dict[str, dict[str, str]]:
        return {"requests": dict(self.requests), "limits": dict(self.limits)}


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile: the smallest value at least ``p`` % of the values
    are at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _step_up(value: float, step: float) -> float:
    return math.ceil(round(value / step, 6)) * step


def recommend(
    memory: Sequence[int], cores: Sequence[float], policy: ResourcePolicy
) -> Recommendation | None:
    """Requests and limits from a job's recent peak memory and average cores (one
    value per run), or None with fewer than ``policy.min_runs`` runs."""
    if len(memory) < policy.min_runs:
        return None
    memory_p = int(percentile(memory, policy.percentile))
    cores_p = percentile(cores, policy.percentile)
    scale = 1 + policy.headroom
    memory_value = _step_up(memory_p * scale, MEMORY_STEP)
    memory_value = int(min(max(memory_value, policy.memory_floor), policy.memory_ceiling))
    cpu_value = min(max(_step_up(cores_p * scale, CPU_STEP), policy.cpu_floor), policy.cpu_ceiling)
    return Recommendation(
        runs=len(memory),
        memory_percentile_bytes=memory_p,
        cores_percentile=round(cores_p, 3),
        requests={"cpu": format_cpu(cpu_value), "memory": format_memory(memory_value)},
        limits={"cpu": format_cpu(policy.cpu_ceiling), "memory": format_memory(memory_value)},
    )


def _safe_name(name: str) -> str:
    """A folder name for a cluster, workflow or job name: kept when it is plain, else a
    readable part plus a hash (names may hold '/' or '..')."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", name) and ".." not in name:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60]
    return f"{cleaned}-{digest}" if cleaned else digest


class ResourceHistory:
    """The recorded runs under ``root``; ``keep`` newest runs per job."""

    def __init__(self, root: str | os.PathLike, keep: int = 30) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    def _workflow_dir(self, cluster: str, workflow: str) -> Path:
        return self.root / _safe_name(cluster) / _safe_name(workflow)

    def record(self, usage: RunUsage) -> None:
        """Add one run, drop the job's runs past ``keep``, rewrite the workflow summary."""
        folder = self._workflow_dir(usage.cluster, usage.workflow) / RUNS_DIR
        folder = folder / _safe_name(usage.job)
        folder.mkdir(parents=True, exist_ok=True)
        run = hashlib.sha256(f"{usage.run_id}\0{usage.try_number}".encode()).hexdigest()[:16]
        atomic_write_text(folder / f"{time.time_ns():020d}-{run}.json", json.dumps(asdict(usage)))
        for old in sorted(folder.glob("*.json"))[: -self.keep]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        self._write_summary(usage.cluster, usage.workflow)

    def runs(self, cluster: str, workflow: str | None = None) -> dict[tuple[str, str], list]:
        """The recorded runs of a cluster (or one of its workflows), oldest first, by
        (workflow, job). A file that cannot be read as a run is skipped."""
        base = self.root / _safe_name(cluster)
        folders = [self._workflow_dir(cluster, workflow)] if workflow else _subdirs(base)
        found: dict[tuple[str, str], list[RunUsage]] = {}
        for workflow_dir in folders:
            for job_dir in _subdirs(workflow_dir / RUNS_DIR):
                for path in sorted(job_dir.glob("*.json")):
                    usage = _read_run(path)
                    if usage is not None:
                        found.setdefault((usage.workflow, usage.job), []).append(usage)
        return found

    def summary_path(self, cluster: str, workflow: str) -> Path:
        return self._workflow_dir(cluster, workflow) / SUMMARY_FILE

    def _write_summary(self, cluster: str, workflow: str) -> None:
        jobs = {
            job: {
                "peak_memory_bytes": [run.peak_memory_bytes for run in runs],
                "cores": [round(run.cores, 4) for run in runs],
            }
            for (_, job), runs in self.runs(cluster, workflow).items()
        }
        path = self.summary_path(cluster, workflow)
        summary = {"cluster": cluster, "workflow": workflow, "jobs": jobs}
        atomic_write_text(path, json.dumps(summary, sort_keys=True))

    def summary(self, cluster: str, workflow: str) -> dict[str, dict[str, list]]:
        """The workflow's summary, by job: ``{"peak_memory_bytes": [...], "cores": [...]}``;
        empty when nothing was recorded or the file is damaged."""
        path = self.summary_path(cluster, workflow)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
            return dict(value["jobs"])
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError):
            return {}  # not ours or damaged: as if none; the next recorded run rewrites it

    def recommendations(
        self, cluster: str, policy: ResourcePolicy
    ) -> dict[tuple[str, str], tuple[list[RunUsage], Recommendation | None]]:
        """Every recorded job of ``cluster``: its runs and what they recommend."""
        return {
            key: (runs, recommend(*_series(runs), policy))
            for key, runs in sorted(self.runs(cluster).items())
        }


def recommend_from_summary(
    summary: Mapping[str, Mapping[str, list]], job: str, policy: ResourcePolicy
) -> Recommendation | None:
    """``recommend`` for one job of a workflow summary (see ``ResourceHistory.summary``)."""
    values = summary.get(job)
    if not values:
        return None
    try:
        return recommend(values["peak_memory_bytes"], values["cores"], policy)
    except (KeyError, TypeError, ValueError):
        return None  # a damaged summary: the configured resources, until it is rewritten


def _series(runs: Iterable[RunUsage]) -> tuple[list[int], list[float]]:
    runs = list(runs)
    return [run.peak_memory_bytes for run in runs], [run.cores for run in runs]


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(child for child in path.iterdir() if child.is_dir())
    except FileNotFoundError:
        return []


def _read_run(path: Path) -> RunUsage | None:
    try:
        return RunUsage(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
