"""Resources from history: recorded runs, the recommendations derived from them, the
`token-fetcher resources` table, and the pod override that uses them.

The end-to-end test measures real commands through the real hand-over (the runner as
a process of its own), records them and checks what they recommend.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from inpod_sides import HEARTBEAT, POLL, STALE_AFTER

from tests.helpers import wait_for
from token_fetcher.airflow.inpod import InPodSettings, override_for
from token_fetcher.cli import main as cli_main
from token_fetcher.inpod import runner
from token_fetcher.inpod.handover import Handover
from token_fetcher.inpod.resources import (
    MIB,
    ResourceHistory,
    ResourcePolicy,
    RunUsage,
    parse_cpu,
    parse_memory,
    percentile,
    recommend,
)

GIB = 2**30
SIDES = Path(__file__).with_name("inpod_sides.py")


def usage(job: str, memory: int, cpu: float, wall: float = 10.0, workflow: str = "wf",
          run: int = 0) -> RunUsage:
    return RunUsage(
        cluster="core001",
        workflow=workflow,
        job=job,
        run_id=f"scheduled__{run}",
        try_number=1,
        finished=1_700_000_000.0 + run,
        outcome=runner.EXITED,
        exit_code=0,
        peak_memory_bytes=memory,
        cpu_seconds=cpu,
        wall_seconds=wall,
    )


# ------------------------------------------------------------------- the arithmetic


def test_percentile_is_nearest_rank():
    values = list(range(1, 21))  # 1..20
    assert percentile(values, 95) == 19
    assert percentile(values, 50) == 10
    assert percentile(values, 100) == 20
    assert percentile([7], 95) == 7


def test_recommendation_is_the_percentile_plus_headroom_rounded_up():
    policy = ResourcePolicy(percentile=90, headroom=0.25, min_runs=3)
    memory = [i * 100 * MIB for i in range(1, 11)]  # p90 = 900 MiB
    cores = [i / 10 for i in range(1, 11)]  # p90 = 0.9 cores
    result = recommend(memory, cores, policy)
    assert result.runs == 10
    assert result.memory_percentile_bytes == 900 * MIB
    # 900 MiB x 1.25 = 1125 MiB, up to a multiple of 16 MiB; memory request = limit.
    assert result.requests["memory"] == result.limits["memory"] == "1136Mi"
    # 0.9 x 1.25 = 1.125 cores, up to a multiple of 0.05; the CPU limit is the ceiling.
    assert result.requests["cpu"] == "1150m"
    assert result.limits["cpu"] == "4000m"


def test_floor_and_ceiling_bound_the_recommendation():
    policy = ResourcePolicy(cpu_floor=0.25, cpu_ceiling=2, memory_floor=512 * MIB,
                            memory_ceiling=4 * GIB, min_runs=1)
    small = recommend([10 * MIB], [0.01], policy)
    assert small.requests == {"cpu": "250m", "memory": "512Mi"}
    large = recommend([64 * GIB], [16.0], policy)
    assert large.requests == {"cpu": "2000m", "memory": "4096Mi"}
    assert large.limits == {"cpu": "2000m", "memory": "4096Mi"}


def test_too_few_runs_give_no_recommendation():
    assert recommend([GIB, GIB], [1.0, 1.0], ResourcePolicy(min_runs=3)) is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"percentile": 0}, "percentile"),
        ({"headroom": -0.1}, "headroom"),
        ({"cpu_floor": 4, "cpu_ceiling": 1}, "CPU floor"),
        ({"memory_floor": 2 * GIB, "memory_ceiling": GIB}, "memory floor"),
        ({"min_runs": 0}, "min_runs"),
    ],
)
def test_a_bad_policy_is_refused_with_what_is_wrong(arguments, message):
    with pytest.raises(ValueError, match=message):
        ResourcePolicy(**arguments)


def test_quantities():
    assert parse_memory("512Mi") == 512 * MIB
    assert parse_memory("2G") == 2 * 10**9
    assert parse_memory("1048576") == MIB
    assert parse_cpu("250m") == 0.25
    assert parse_cpu("2") == 2.0
    with pytest.raises(ValueError, match="not a memory quantity: '1 GB'"):
        parse_memory("1 GB")
    with pytest.raises(ValueError, match="not a CPU quantity"):
        parse_cpu("1Gi")


# ------------------------------------------------------------------------ the store


def test_runs_are_recorded_per_job_and_trimmed(tmp_path):
    history = ResourceHistory(tmp_path, keep=3)
    for run in range(5):
        history.record(usage("load", memory=(run + 1) * MIB, cpu=1.0, run=run))
    history.record(usage("report", memory=7 * MIB, cpu=2.0))
    runs = history.runs("core001")
    assert sorted(runs) == [("wf", "load"), ("wf", "report")]
    # The newest three, oldest first.
    assert [r.peak_memory_bytes for r in runs["wf", "load"]] == [3 * MIB, 4 * MIB, 5 * MIB]
    summary = history.summary("core001", "wf")
    assert summary["load"] == {"peak_memory_bytes": [3 * MIB, 4 * MIB, 5 * MIB],
                               "cores": [0.1, 0.1, 0.1]}
    assert summary["report"]["cores"] == [0.2]
    assert history.summary("core001", "other") == {}


def test_names_cannot_leave_the_history_folder(tmp_path):
    root = tmp_path / "history"
    history = ResourceHistory(root)
    history.record(usage("../../escape", memory=MIB, cpu=1.0, workflow="a/../../b"))
    written = list(tmp_path.rglob("*.json"))
    assert written and all(root in p.parents for p in written)
    assert list(history.runs("core001")) == [("a/../../b", "../../escape")]


def test_an_unreadable_run_file_is_skipped(tmp_path):
    history = ResourceHistory(tmp_path)
    history.record(usage("load", memory=MIB, cpu=1.0))
    job_dir = next((tmp_path / "core001" / "wf" / "runs").iterdir())
    (job_dir / "00000000000000000000-torn.json").write_text('{"cluster": ')
    assert len(history.runs("core001")["wf", "load"]) == 1


# --------------------------------------------------------------- the pod override


def test_the_override_takes_recorded_resources_once_there_are_enough_runs(tmp_path):
    settings = InPodSettings(history_dir=str(tmp_path), policy=ResourcePolicy(min_runs=2))
    options = {
        "image": "legacy-jobs:2015.1",
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {}},
        "inpod": settings,
    }
    names = {"cluster": "core001", "workflow": "wf", "job": "load", "fingerprint": "f" * 64}
    history = ResourceHistory(tmp_path)
    history.record(usage("load", memory=1000 * MIB, cpu=5.0, wall=10.0, run=1))
    [legacy] = override_for(options, **names)["spec"]["initContainers"]
    assert legacy["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}}  # configured

    history.record(usage("load", memory=1000 * MIB, cpu=5.0, wall=10.0, run=2))
    override = override_for(options, **names)
    [legacy] = override["spec"]["initContainers"]
    assert legacy["name"] == "legacy"
    assert legacy["image"] == "legacy-jobs:2015.1"
    # 1000 MiB x 1.2 = 1200 MiB -> 1200Mi; 0.5 cores x 1.2 = 0.6.
    assert legacy["resources"] == {
        "requests": {"cpu": "600m", "memory": "1200Mi"},
        "limits": {"cpu": "4000m", "memory": "1200Mi"},
    }
    assert override["spec"]["containers"] == [{"name": "base"}]
    assert override["metadata"]["labels"]["token-fetcher.io/job"] == "load"
    assert override["metadata"]["annotations"]["token-fetcher.io/fingerprint"] == "f" * 64


def test_the_override_needs_the_legacy_image(tmp_path):
    with pytest.raises(ValueError, match="kube_image"):
        override_for({"inpod": InPodSettings()}, cluster="c", workflow="w", job="j",
                     fingerprint="")


def test_in_pod_settings_from_config_strings():
    given = {"history_dir": "/h", "percentile": "90", "memory_floor": "128Mi",
             "cpu_ceiling": "1500m", "keep_runs": "10", "ready_timeout": "5"}
    settings = InPodSettings.from_strings(lambda key: given.get(key, ""))
    assert settings.history_dir == "/h"
    assert settings.keep_runs == 10
    assert settings.ready_timeout == 5.0
    assert settings.policy == ResourcePolicy(percentile=90, memory_floor=128 * MIB,
                                             cpu_ceiling=1.5)
    with pytest.raises(ValueError, match=r"inpod_cpu_floor = 'lots': not a CPU quantity"):
        InPodSettings.from_strings(lambda key: "lots" if key == "cpu_floor" else "")
    with pytest.raises(ValueError, match=r"inpod_keep_runs = 'ten'"):
        InPodSettings.from_strings(lambda key: "ten" if key == "keep_runs" else "")
    with pytest.raises(ValueError, match=r"inpod_\* settings: resource percentile must be"):
        InPodSettings.from_strings(lambda key: "101" if key == "percentile" else "")


# ------------------------------------------------------------------------- the CLI


def test_the_cli_prints_the_table_for_a_cluster(tmp_path, capsys):
    history = ResourceHistory(tmp_path)
    for run in range(3):
        history.record(usage("load", memory=(run + 1) * 300 * MIB, cpu=10.0, run=run))
    history.record(usage("report", memory=MIB, cpu=0.1))
    history.record(dataclasses.replace(usage("other", MIB, 1.0), cluster="core002"))
    code = cli_main(["resources", "--history-dir", str(tmp_path), "--cluster", "core001"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["WORKFLOW", "JOB", "RUNS", "MEMORY", "p95", "CORES", "p95",
                                "CPU", "REQUEST", "CPU", "LIMIT", "MEMORY", "REQUEST",
                                "MEMORY", "LIMIT"]
    # 900 MiB x 1.2 = 1080 MiB -> 1088Mi; 1 core x 1.2.
    assert lines[1].split() == ["wf", "load", "3", "900Mi", "1000m", "1200m", "4000m",
                                "1088Mi", "1088Mi"]
    assert lines[2].split() == ["wf", "report", "1", "-", "-", "too", "few", "runs"]
    assert len(lines) == 3

    code = cli_main(["resources", "--history-dir", str(tmp_path), "--cluster", "core001",
                     "--json", "--min-runs", "1", "--percentile", "50"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["job"], r["resources"]["requests"]["memory"]) for r in rows] == [
        ("load", "720Mi"), ("report", "256Mi")]


def test_the_cli_says_when_nothing_was_recorded_or_the_policy_is_bad(tmp_path, capsys):
    assert cli_main(["resources", "--history-dir", str(tmp_path), "--cluster", "none"]) == 1
    assert "no runs recorded for cluster 'none'" in capsys.readouterr().err
    code = cli_main(["resources", "--history-dir", str(tmp_path), "--cluster", "c",
                     "--percentile", "120"])
    assert code == 2
    assert "percentile must be in (0, 100]" in capsys.readouterr().err


# ------------------------------------------------- measured by the real hand-over


@pytest.fixture
def legacy_runner(tmp_path):
    root = tmp_path / "handover"
    root.mkdir()
    process = subprocess.Popen([sys.executable, str(SIDES), "legacy", str(root)],
                               start_new_session=True)
    wait_for(lambda: (root / runner.LEGACY_FILE).exists(), 20, message="the runner")
    yield root
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=20)


def test_recommendations_come_from_measured_runs(tmp_path, legacy_runner):
    handover = Handover(str(legacy_runner), heartbeat=HEARTBEAT, stale_after=STALE_AFTER,
                        poll=POLL)
    history = ResourceHistory(tmp_path / "history")
    # The job holds 40, 80 and 120 MiB on three runs (in a child of the shell).
    for run, mib in enumerate((40, 80, 120)):
        outcome = handover.run(
            f"python3 -c 'import time; b = bytearray({mib} << 20); time.sleep(0.3)'"
        )
        assert outcome.succeeded and outcome.measured
        assert mib * MIB <= outcome.peak_memory_bytes < (mib + 64) * MIB
        history.record(usage("load", outcome.peak_memory_bytes, outcome.cpu_seconds,
                             outcome.wall_seconds, run=run))
    policy = ResourcePolicy(memory_floor=16 * MIB, min_runs=3)
    [(runs, recommendation)] = history.recommendations("core001", policy).values()
    peaks = sorted(run.peak_memory_bytes for run in runs)
    assert recommendation.memory_percentile_bytes == peaks[-1]
    assert parse_memory(recommendation.requests["memory"]) >= peaks[-1] * 1.2
    assert parse_memory(recommendation.requests["memory"]) < peaks[-1] * 1.2 + 16 * MIB


def test_a_damaged_summary_means_the_configured_resources(tmp_path):
    history = ResourceHistory(tmp_path)
    history.record(usage("load", memory=GIB, cpu=1.0))
    options = {"image": "legacy:1", "resources": {"requests": {"memory": "1Gi"}},
               "inpod": InPodSettings(history_dir=str(tmp_path),
                                      policy=ResourcePolicy(min_runs=1))}
    names = {"cluster": "core001", "workflow": "wf", "job": "load", "fingerprint": ""}
    path = history.summary_path("core001", "wf")
    for damaged in ('{"jobs": ', '{"jobs": {"load": {"cores": "x"}}}', "[]"):
        path.write_text(damaged)
        os.utime(path, ns=(1, len(damaged)))  # a new signature for the parse cache
        [legacy] = override_for(options, **names)["spec"]["initContainers"]
        assert legacy["resources"] == {"requests": {"memory": "1Gi"}}, damaged
