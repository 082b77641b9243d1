"""The benchmarks `make bench` runs: writes BENCHMARKS.md and benchmarks/results.json.

    python -m benchmarks.run                 # the full run (3,000 workflows; ~10 minutes)
    python -m benchmarks.run --quick         # a small corpus, for iterating (~2 minutes)
    python -m benchmarks.run --only cold,rpc # some sections (cold refresh rpc client scale airflow
                                             # watch)

Every figure is measured against a baseline taken in the same run, and reported with
the ratio and its target. See BENCHMARKS.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path

import grpc
import psutil

from benchmarks import corpus as corpus_mod
from benchmarks import watch_cost
from benchmarks.procs import (
    ROOT,
    RssSampler,
    ServerProcess,
    cpu_plan,
    free_port,
    pinned_command,
    python_cluster,
    run_python,
)
from token_fetcher.airflow import loader_file_count, loader_file_names

SECTIONS = ("cold", "refresh", "rpc", "client", "scale", "airflow", "watch")
SERVICE = "/token_fetcher.v1.TokenFetcher/"
RUN_EPOCH = 1704153600  # 2024-01-02T00:00:00Z: the run GetJobTokens renders
MB = 1024 * 1024
QUICK_TEXT = "**quick mode** (small corpus: not the scale the targets are set for)"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class LoadWatch:
    """The machine's 1-minute load average over the run: other work skews every figure."""

    def __init__(self) -> None:
        self.start_load = os.getloadavg()[0]
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="loadavg")

    def start(self) -> LoadWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(10):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict:
        self._stop.set()
        samples = self.samples or [os.getloadavg()[0]]
        return {"start": self.start_load, "mean": statistics.fmean(samples),
                "max": max(samples)}


class Results:
    def __init__(self) -> None:
        self.figures: list[dict] = []
        self.sections: dict[str, dict] = {}
        self.notes: dict[str, list[str]] = {}

    def figure(self, section: str, key: str, label: str, value: float, unit: str, *,
               baseline: float | None = None, baseline_label: str = "",
               target: str = "", met: bool | None = None, ratio: float | None = None) -> dict:
        if ratio is None and baseline:
            ratio = value / baseline
        item = {"section": section, "key": key, "label": label, "value": value, "unit": unit,
                "baseline": baseline, "baseline_label": baseline_label, "ratio": ratio,
                "target": target, "met": met}
        self.figures.append(item)
        shown = f"{value:.4g} {unit}"
        if baseline is not None:
            shown += f" (baseline {baseline:.4g}, ratio {ratio:.3g})"
        if target:
            shown += f" target {target}: {'met' if met else 'MISSED' if met is False else '-'}"
        log(f"{section}/{key}: {shown}")
        return item

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)


# --- corpora ------------------------------------------------------------------------------


def make_corpus(workdir: Path, workflows: int, fmt: str, seed: int) -> tuple[Path, dict]:
    out = workdir / f"corpus-{fmt}-{workflows}"
    started = time.monotonic()
    manifest = corpus_mod.generate(out, workflows, fmt, seed)
    log(f"corpus {fmt} {workflows}: {manifest['jobs']} jobs in "
        f"{time.monotonic() - started:.1f} s -> {out}")
    return out, manifest


# --- 1. cold load ---------------------------------------------------------------------------


def baseline_import(corpus: Path, manifest: dict, cpus) -> dict:
    """A fresh interpreter that only loads the definitions: the floor of any parse."""
    if manifest["format"] == "python":
        code = (
            "import sys, time\n"
            "from benchmarks.peak_rss import peak_rss_bytes, unshared_bytes\n"
            "t = time.perf_counter()\n"
            "from legacy_parser import compat\n"
            "compat.install()\n"
            f"sys.path.insert(0, {str(corpus)!r})\n"
            f"import {corpus_mod.PACKAGE}.workflows as w\n"
            "n = len(w.WORKFLOWS)\n"
            "print(n, time.perf_counter() - t, peak_rss_bytes(), unshared_bytes())\n"
        )
    else:
        code = (
            "import json, os, time\n"
            "from benchmarks.peak_rss import peak_rss_bytes, unshared_bytes\n"
            "t = time.perf_counter()\n"
            "n = 0\n"
            f"for folder, _, names in os.walk({str(corpus / 'repo')!r}):\n"
            "    for name in names:\n"
            "        with open(os.path.join(folder, name), 'rb') as f:\n"
            "            json.loads(f.read())\n"
            "        n += 1\n"
            "print(n, time.perf_counter() - t, peak_rss_bytes(), unshared_bytes())\n"
        )
    wall, out = run_python(code, cpus)
    count, inner, rss, unshared = out.split()
    return {"wall": wall, "inner": float(inner), "rss": int(rss), "uss": int(unshared),
            "count": int(count)}


def cold_start(workdir: Path, corpus: Path, name: str, cpus, poll_interval: float = 1.0,
               sandbox: dict | None = None) -> tuple[ServerProcess, dict]:
    """Start a server on the corpus; measure time to SERVING and RSS. Leaves it running."""
    server = ServerProcess(workdir, {"bench": python_cluster(corpus)}, name, cpus,
                           poll_interval=poll_interval, sandbox=sandbox)
    server.start()
    assert server.process is not None
    sampler = RssSampler(server.process.pid).start()
    try:
        wall = server.wait_serving()
    except Exception:
        sampler.stop()
        server.stop()
        raise
    sampler.sample()
    # SERVING comes before the version history is written: wait until the server is idle,
    # then the steady-state RSS of the serving process alone.
    wait_idle(server.process.pid)
    sampler.stop()
    info = server_info(server.target)
    return server, {
        "wall": wall, "peak_tree_rss": sampler.peak_tree, "peak_server_rss": sampler.peak_self,
        "steady_rss": sampler.current_self(), "rss_samples": sampler.samples, **info}


def wait_idle(pid: int, timeout: float = 300.0) -> None:
    """Until the process used under 5% of a CPU in each of two consecutive half seconds."""
    process = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    quiet, last = 0, sum(process.cpu_times()[:2])
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(process.cpu_times()[:2])
        quiet = quiet + 1 if now - last < 0.025 else 0
        last = now


def server_info(target: str) -> dict:
    from token_fetcher._proto import token_fetcher_pb2 as pb
    from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        info = pb_grpc.TokenFetcherStub(channel).GetServerInfo(pb.GetServerInfoRequest(),
                                                               timeout=10)
    cluster = info.clusters[0]
    return {"load_duration": cluster.last_load_duration_seconds,
            "workflow_count": cluster.workflow_count, "job_count": cluster.job_count,
            "broken": cluster.broken_count, "files_watched": cluster.files_watched}


def stages(corpus: Path, cpus) -> dict:
    command = pinned_command([sys.executable, "-m", "benchmarks.stages", str(corpus)], cpus)
    done = subprocess.run(command, cwd=str(ROOT), capture_output=True, text=True, check=False,
                          timeout=600, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if done.returncode != 0:
        return {"error": done.stderr[-1000:]}
    return json.loads(done.stdout)


def record_cold(results: Results, fmt: str, size: int, cold: dict, base: dict,
                section: str = "cold") -> None:
    results.figure(section, f"{fmt}.wall", f"cold load to SERVING, {fmt}, {size} workflows",
                   cold["wall"], "s", baseline=base["wall"],
                   baseline_label="fresh interpreter only loading the definitions",
                   target="<= 10 s" if size >= 3000 else "", met=cold["wall"] <= 10.0
                   if size >= 3000 else None)
    results.figure(section, f"{fmt}.peak_rss", f"peak RSS, server + workers, {fmt}, {size}",
                   cold["peak_tree_rss"] / MB, "MB", baseline=base["rss"] / MB,
                   baseline_label="max RSS of that interpreter",
                   target="<= 400 MB" if size >= 3000 else "",
                   met=cold["peak_tree_rss"] <= 400 * MB if size >= 3000 else None)
    results.figure(section, f"{fmt}.steady_rss", f"server RSS once serving, {fmt}, {size}",
                   cold["steady_rss"] / MB, "MB")


# The same parse without namespaces: what the cold load cost before parses were isolated
# (a host without bubblewrap; the rest of the sandbox is the same).
WITHOUT_NAMESPACES = {"isolation": "best_effort", "bwrap": "/nonexistent/bwrap"}


def isolation_share(results: Results, workdir: Path, corpus: Path, fmt: str, size: int,
                    isolated: dict, cpus, poll: float) -> None:
    """Cold loads with and without namespaces, alternated, each side's best of two: the
    share of the cold load that isolation costs."""
    walls: dict[bool, list[float]] = {True: [isolated["wall"]], False: []}
    for run, strict in enumerate((False, True, False)):
        server, cold = cold_start(workdir, corpus, f"{fmt}-{size}-isolation-{run}", cpus, poll,
                                  None if strict else WITHOUT_NAMESPACES)
        server.stop()
        walls[strict].append(cold["wall"])
    best, plain = min(walls[True]), min(walls[False])
    results.figure("cold", f"{fmt}.isolation", f"cold load to SERVING, strict isolation, "
                   f"{fmt}, {size} workflows (best of two)", best, "s", baseline=plain,
                   baseline_label="the same parse without namespaces (best of two)",
                   target="<= 1.10x", met=best <= 1.10 * plain)


# --- 2. refresh -----------------------------------------------------------------------------


class Watcher:
    """Follows WatchWorkflows and records when each (workflow, fingerprint) arrives."""

    def __init__(self, target: str) -> None:
        from token_fetcher._proto import token_fetcher_pb2 as pb
        from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc

        self.pb = pb
        self.channel = grpc.insecure_channel(target)
        self.call = pb_grpc.TokenFetcherStub(self.channel).WatchWorkflows(
            pb.WatchWorkflowsRequest(cluster="bench"))
        self.arrived: dict[tuple[str, str], float] = {}
        self.subscribed = threading.Event()
        self.lock = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True, name="watch")
        self.thread.start()
        if not self.subscribed.wait(30):
            raise TimeoutError("WatchWorkflows did not subscribe")

    def _run(self) -> None:
        try:
            for event in self.call:
                now = time.monotonic()
                if event.type == self.pb.WorkflowEvent.TYPE_SUBSCRIBED:
                    self.subscribed.set()
                    continue
                with self.lock:
                    self.arrived[(event.workflow, event.new_fingerprint)] = now
                    self.lock.notify_all()
        except grpc.RpcError:
            pass

    def wait(self, workflow: str, fingerprint: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while (workflow, fingerprint) not in self.arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(left)
            return self.arrived[(workflow, fingerprint)]

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


def refresh(server: ServerProcess, corpus: Path, manifest: dict, edits: int, seed: int,
            poll_interval: float) -> dict:
    from token_fetcher._proto import token_fetcher_pb2 as pb
    from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc

    rng = random.Random(seed)
    names = sorted(n for n in manifest["edit_files"] if n not in manifest["fixed"])
    step = max(1, len(names) // edits)
    targets = [names[(i * step) % len(names)] for i in range(edits)]
    channel = grpc.insecure_channel(server.target)
    stub = pb_grpc.TokenFetcherStub(channel)
    watcher = Watcher(server.target)
    # parses[i] is the parse behind visible[i], pushed_parses[i] the one behind pushed[i]
    # (an edit whose watch event never came has no pushed sample).
    visible, pushed, parses, pushed_parses, failures = [], [], [], [], 0
    assert server.process is not None
    sampler = RssSampler(server.process.pid).start()
    try:
        for revision, workflow in enumerate(targets, start=1):
            request = pb.GetWorkflowSpecRequest(cluster="bench", workflow=workflow)
            old = stub.GetWorkflowSpec(request, timeout=10).fingerprint
            # Edits land at a random phase of the server's poll cycle.
            time.sleep(rng.uniform(0, poll_interval))
            edited_at = time.monotonic()
            corpus_mod.edit_workflow(corpus, manifest, workflow, revision)
            request.if_none_match = old
            new, seen_at = "", None
            deadline = edited_at + 120
            while time.monotonic() < deadline:
                answer = stub.GetWorkflowSpec(request, timeout=10)
                if not answer.not_modified and answer.fingerprint != old:
                    new, seen_at = answer.fingerprint, time.monotonic()
                    break
                time.sleep(0.01)
            if seen_at is None:
                failures += 1
                continue
            arrived = watcher.wait(workflow, new, 60)
            visible.append(seen_at - edited_at)
            # The parse that made the edit visible is the cluster's latest.
            parses.append(server_info(server.target)["load_duration"])
            if arrived is None:
                failures += 1
            else:
                pushed.append(arrived - edited_at)
                pushed_parses.append(parses[-1])
            log(f"refresh {revision}/{edits} {workflow}: visible {visible[-1]:.2f} s, "
                f"pushed {(arrived - edited_at) if arrived else float('nan'):.2f} s")
    finally:
        sampler.stop()
        watcher.close()
        channel.close()
    return {"visible": visible, "pushed": pushed, "parses": parses,
            "pushed_parses": pushed_parses, "failures": failures,
            "peak_tree_rss": sampler.peak_tree, "peak_server_rss": sampler.peak_self}


def run_refresh(results: Results, data: dict, servers: dict[str, ServerProcess],
                corpora: dict, cold_points: dict, edits: int, seed: int, poll: float,
                cpus, size: int) -> None:
    """Below 10,000 workflows, both formats at once when there are two CPUs: each server
    (and its parse workers) then gets a CPU of its own, which halves the longest part of
    the run. From 10,000 on, one after the other, each server alone on its CPU: sharing a
    CPU with the pollers there added up to half a second to the JSON edits."""
    server_cpus, client_cpus = cpus
    fmts = list(servers)
    outcomes: dict[str, dict] = {}
    errors: list[BaseException] = []
    at_once = len(fmts) > 1 and bool(client_cpus) and size < 10_000
    if at_once:
        from benchmarks.procs import pin_tree

        pin_tree(servers[fmts[1]].process.pid, client_cpus)  # type: ignore[union-attr]
        placement = (f"{fmts[0]} server on CPU {sorted(server_cpus)}, {fmts[1]} server on "
                     f"CPU {sorted(client_cpus)} (shared with this process's pollers and "
                     "watchers), both edited at the same time to keep `make bench` within "
                     "its time budget; sequentially, the JSON figures came out about 10% "
                     "lower in trial runs")
    else:
        placement = "one format after the other" + (
            f", each server on CPU {sorted(server_cpus)}, the pollers and watchers on CPU "
            f"{sorted(client_cpus)}" if client_cpus else "")

    def one(fmt: str) -> None:
        try:
            corpus, manifest = corpora[fmt]
            log(f"refresh: {edits} edits ({fmt})")
            outcomes[fmt] = refresh(servers[fmt], corpus, manifest, edits, seed, poll)
            outcomes[fmt]["parse_seconds"] = server_info(servers[fmt].target)["load_duration"]
        except BaseException as error:  # noqa: BLE001 - re-raised below
            errors.append(error)

    if at_once:
        threads = [threading.Thread(target=one, args=(fmt,)) for fmt in fmts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for fmt in fmts:
            one(fmt)
    if errors:
        raise errors[0]
    if at_once:
        from benchmarks.procs import pin_tree

        pin_tree(servers[fmts[1]].process.pid, server_cpus)  # type: ignore[union-attr]
    results.note("refresh", f"Placement at {size:,} workflows: {placement}.")
    for fmt in fmts:
        fresh = outcomes[fmt]
        data["sections"].setdefault("refresh", {})[f"{fmt}-{size}"] = fresh
        parse = statistics.median(fresh["parses"]) if fresh["parses"] else fresh["parse_seconds"]
        for kind in ("visible", "pushed"):
            samples = fresh[kind]
            if not samples:
                continue
            what = "GetWorkflowSpec returns it" if kind == "visible" else "watch event"
            for q in (50, 99):
                results.figure("refresh", f"{fmt}.{size}.{kind}.p{q}",
                               f"edit -> {what}, {fmt}, {size:,} workflows, p{q} of "
                               f"{len(samples)}", pct(samples, q), "s", baseline=parse,
                               baseline_label="median of the server's parses of the cluster")
            # What the service adds to its own parse, edit by edit (issue N: at most 0.5 s).
            their_parses = fresh["parses" if kind == "visible" else "pushed_parses"]
            added = [seen - parsed for seen, parsed in zip(samples, their_parses, strict=True)]
            value = pct(added, 99)
            results.figure("refresh", f"{fmt}.{size}.{kind}.added.p99",
                           f"edit -> {what} minus that edit's parse, {fmt}, {size:,} "
                           f"workflows, p99 of {len(added)}", value, "s",
                           target="<= 0.5 s", met=value <= 0.5)
        results.figure("refresh", f"{fmt}.{size}.peak_rss", f"peak RSS, server + worker, "
                       f"during the {fmt} re-parses, {size:,} workflows",
                       fresh["peak_tree_rss"] / MB, "MB",
                       baseline=cold_points[fmt]["steady_rss"] / MB,
                       baseline_label="server RSS serving, before the edits")
        if fresh["failures"]:
            results.note("refresh", f"{fmt}: {fresh['failures']} edits were not seen within "
                         "the time limit")


# --- 3. RPC latency and throughput vs the floor ----------------------------------------------


class FloorProcess:
    def __init__(self, workdir: Path, answers: dict[str, dict[bytes, bytes]], cpus) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        path = workdir / "floor-answers.json"
        path.write_text(json.dumps({m: {k.hex(): v.hex() for k, v in t.items()}
                                    for m, t in answers.items()}))
        command = pinned_command([sys.executable, "-m", "benchmarks.floor", "--port",
                                  str(self.port), "--answers", str(path)], cpus)
        self.process = subprocess.Popen(command, cwd=str(ROOT), stdout=subprocess.PIPE,
                                        text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError("the floor server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def loadgen(args: list[str], cpus) -> subprocess.Popen:
    command = pinned_command([sys.executable, "-m", "benchmarks.loadgen", *args], cpus)
    return subprocess.Popen(command, cwd=str(ROOT), stdout=subprocess.PIPE, text=True)


def measure_latency(target: str, method: str, request: bytes, calls: int, cpus) -> list[float]:
    process = loadgen(["latency", "--target", target, "--method", method, "--request",
                       request.hex(), "--calls", str(calls), "--warmup", "300"], cpus)
    out, _ = process.communicate(timeout=600)
    if process.returncode != 0:
        raise RuntimeError(f"loadgen latency failed on {target} {method}")
    return json.loads(out)["samples"]


def measure_throughput(target: str, pid: int, method: str, request: bytes, in_flight: int,
                       processes: int, duration: float, cpus) -> dict:
    threads = max(1, in_flight // processes)
    start = time.time() + 1.2
    procs = [loadgen(["throughput", "--target", target, "--method", method, "--request",
                      request.hex(), "--threads", str(threads), "--start", f"{start:.6f}",
                      "--duration", str(duration)], cpus) for _ in range(processes)]
    server = psutil.Process(pid)
    time.sleep(max(0.0, start - time.time()))
    cpu0 = sum(server.cpu_times()[:2])
    time.sleep(duration)
    cpu1 = sum(server.cpu_times()[:2])
    calls = errors = 0
    for process in procs:
        out, _ = process.communicate(timeout=600)
        data = json.loads(out)
        calls += data["calls"]
        errors += data["errors"]
    return {"calls_per_s": calls / duration, "errors": errors,
            "server_cpu": (cpu1 - cpu0) / duration,
            "server_cpu_us_per_call": (cpu1 - cpu0) / calls * 1e6 if calls else float("nan")}


def capture_answers(target: str, requests: dict[str, list[bytes]]) -> dict[str, dict]:
    answers: dict[str, dict[bytes, bytes]] = {}
    with grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", 64 * MB)]) as channel:
        for method, items in requests.items():
            call = channel.unary_unary(method)
            answers[method] = {item: call(item, timeout=30) for item in items}
    return answers


def rpc(results: Results, workdir: Path, server: ServerProcess, manifest: dict, cpus, quick: bool
        ) -> dict:
    from google.protobuf.timestamp_pb2 import Timestamp

    from token_fetcher._proto import token_fetcher_pb2 as pb

    server_cpus, client_cpus = cpus
    spec_method, tokens_method = SERVICE + "GetWorkflowSpec", SERVICE + "GetJobTokens"
    cases = []
    for workflow in sorted(manifest["fixed"], key=lambda n: manifest["fixed"][n]):
        spec = pb.GetWorkflowSpecRequest(cluster="bench", workflow=workflow).SerializeToString()
        # manual: RUN_EPOCH is off most generated schedules, which the server refuses
        # for a scheduled run.
        tokens = pb.GetJobTokensRequest(cluster="bench", workflow=workflow,
                                        run_time=Timestamp(seconds=RUN_EPOCH), manual=True
                                        ).SerializeToString()
        jobs = manifest["fixed"][workflow]
        cases.append(("GetWorkflowSpec", jobs, spec_method, spec))
        cases.append(("GetJobTokens", jobs, tokens_method, tokens))
    requests: dict[str, list[bytes]] = {}
    for _, _, method, request in cases:
        requests.setdefault(method, []).append(request)
    answers = capture_answers(server.target, requests)
    floor = FloorProcess(workdir, answers, server_cpus)
    calls = 600 if quick else 1500
    duration = 2.0 if quick else 3.0
    rounds = 1 if quick else 2
    out: dict = {}
    assert server.process is not None
    try:
        for name, jobs, method, request in cases:
            size = len(answers[method][request])
            lat = {"real": [], "floor": []}
            thr: dict[str, list[dict]] = {"real": [], "floor": []}
            for _ in range(rounds):
                # Interleaved, so drift on the machine hits both alike.
                for kind, target in (("real", server.target), ("floor", floor.target)):
                    lat[kind] += measure_latency(target, method, request, calls, client_cpus)
                for kind, target, pid in (("real", server.target, server.process.pid),
                                          ("floor", floor.target, floor.process.pid)):
                    thr[kind].append(measure_throughput(target, pid, method, request, 16, 2,
                                                        duration, client_cpus))
            case = f"{name}.{jobs}jobs"
            p50 = {k: pct(v, 50) * 1e3 for k, v in lat.items()}
            p99 = {k: pct(v, 99) * 1e3 for k, v in lat.items()}
            best = {k: max(v, key=lambda r: r["calls_per_s"]) for k, v in thr.items()}
            limit = 1.15 if name == "GetWorkflowSpec" else 1.5
            results.figure("rpc", f"{case}.p50", f"{name}, {jobs}-job workflow "
                           f"({size} B answer), p50 at 1 in flight", p50["real"], "ms",
                           baseline=p50["floor"], baseline_label="floor server, same bytes",
                           target=f"<= {limit}x floor",
                           met=p50["real"] <= limit * p50["floor"])
            results.figure("rpc", f"{case}.p99", f"{name}, {jobs}-job workflow, p99 at 1 in "
                           "flight", p99["real"], "ms", baseline=p99["floor"],
                           baseline_label="floor server, same bytes")
            spec_case = name == "GetWorkflowSpec"
            results.figure("rpc", f"{case}.throughput", f"{name}, {jobs}-job workflow, "
                           "calls/s at 16 in flight", best["real"]["calls_per_s"], "calls/s",
                           baseline=best["floor"]["calls_per_s"],
                           baseline_label="floor server, same bytes",
                           target=">= 0.85x floor" if spec_case else "",
                           met=best["real"]["calls_per_s"] >= 0.85 * best["floor"]["calls_per_s"]
                           if spec_case else None)
            results.figure("rpc", f"{case}.cpu_per_call", f"{name}, {jobs}-job workflow, "
                           "server CPU per call at 16 in flight",
                           best["real"]["server_cpu_us_per_call"], "us",
                           baseline=best["floor"]["server_cpu_us_per_call"],
                           baseline_label="floor server CPU per call")
            out[case] = {"response_bytes": size, "p50_ms": p50, "p99_ms": p99,
                         "throughput": best, "latency_samples": {k: len(v) for k, v in
                                                                 lat.items()}}
    finally:
        floor.stop()
    return out


# --- 4. client ----------------------------------------------------------------------------


def client_bench(results: Results, server: ServerProcess, manifest: dict, quick: bool) -> dict:
    from token_fetcher.client import TokenFetcherClient
    from token_fetcher.migration import MigrationMetadata

    date = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    names = sorted(manifest["edit_files"])
    metadata = [MigrationMetadata("bench", name, date) for name in names]
    out: dict = {}

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    with TokenFetcherClient(server.target, timeout=60.0, cache_ttl=30.0) as client:
        client.get_spec("bench", "bench_w20")
        client.migrated_workflow(metadata[0])
        number = 20000 if quick else 200000
        for key, call in (("get_spec", lambda: client.get_spec("bench", "bench_w20")),
                          ("migrated_workflow", lambda: client.migrated_workflow(metadata[0]))):
            best = min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6
            out[f"hit_{key}_us"] = best
            results.figure("client", f"cache_hit.{key}", f"cache hit, {key}()", best, "us",
                           baseline=_baseline_cache_hit(),
                           baseline_label="bare cachetools.LRUCache lookup under a lock",
                           target="<= 5 us", met=best <= 5.0)

    def timed(fn) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    def check(items) -> None:
        bad = [item for item in items if not hasattr(item, "spec")]
        if bad:
            raise RuntimeError(f"{len(bad)} workflows failed, first: {bad[0]!r}")

    runs: dict[str, float] = {}
    for style in ("batch", "single"):
        clock = Clock()
        with TokenFetcherClient(server.target, timeout=120.0, cache_ttl=30.0,
                                clock=clock) as client:
            def build(client=client, style=style) -> None:
                if style == "batch":
                    check(client.migrated_workflows(metadata))
                else:
                    check([client.migrated_workflow(m) for m in metadata])
            runs[f"{style}.cold"] = timed(build)
            runs[f"{style}.warm"] = timed(build)
            clock.now += 31.0  # every entry expired: revalidated by fingerprint
            runs[f"{style}.revalidate"] = timed(build)
    count = len(metadata)
    for style in ("batch", "single"):
        label = ("migrated_workflows() batch" if style == "batch"
                 else "migrated_workflow() per workflow")
        results.figure("client", f"all.{style}.cold", f"all {count} DAG specs, {label}, "
                       "cold cache", runs[f"{style}.cold"], "s",
                       baseline=runs["batch.cold"] if style == "single" else None,
                       baseline_label="batch, cold" if style == "single" else "")
        results.figure("client", f"all.{style}.warm", f"all {count} DAG specs, {label}, "
                       "warm cache", runs[f"{style}.warm"] * 1e3, "ms",
                       baseline=runs[f"{style}.cold"] * 1e3, baseline_label="same, cold")
        results.figure("client", f"all.{style}.revalidate", f"all {count} DAG specs, {label}, "
                       "TTL expired (not_modified)", runs[f"{style}.revalidate"], "s",
                       baseline=runs[f"{style}.cold"], baseline_label="same, cold")
    out["all"] = runs
    out["count"] = count
    return out


def _baseline_cache_hit() -> float:
    import cachetools

    cache = cachetools.LRUCache(10000)
    cache[("bench", "bench_w20")] = object()
    lock = threading.Lock()

    def hit():
        with lock:
            return cache.get(("bench", "bench_w20"))

    number = 200000
    return min(timeit.repeat(hit, number=number, repeat=5)) / number * 1e6


# --- 5. Airflow -------------------------------------------------------------------------------


# Steady-state parses of each side, alternating: the figures are their medians.
AIRFLOW_ROUNDS = 3


def _median_run(runs: list[dict]) -> dict:
    """The run whose DagBag time is the median (an odd count of runs)."""
    return sorted(runs, key=lambda run: run["dagbag_seconds"])[len(runs) // 2]


def airflow_bench(results: Results, workdir: Path, server: ServerProcess, manifest: dict,
                  python: str, cpus) -> dict:
    """DagBag over the loader file (a metadata file per workflow of the corpus) vs as many
    native DAG files, and the loader's DAGs split across files."""
    probe = subprocess.run([python, "-c", "import airflow, token_fetcher.airflow.loader"],
                           capture_output=True, text=True, check=False, cwd=str(ROOT))
    if probe.returncode != 0:
        reason = (f"skipped: `import airflow, token_fetcher.airflow.loader` fails under "
                  f"{python} ({(probe.stderr.strip().splitlines() or ['?'])[-1]}). Install "
                  "the airflow extra into the venv, or pass --airflow-python with an "
                  "interpreter that has Airflow and this package.")
        results.note("airflow", reason)
        return {"skipped": reason}
    base = workdir / "airflow"
    home, native_dir, loader_dir = base / "home", base / "native", base / "loader"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           # The loader file builds every DAG in one import: lift the 30 s default.
           "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
           "AIRFLOW__TOKEN_FETCHER__TARGET": server.target,
           "AIRFLOW__TOKEN_FETCHER__TIMEOUT": "120",
           "AIRFLOW__TOKEN_FETCHER__CACHE_DIR": str(base / "layout-cache"),
           "AIRFLOW__TOKEN_FETCHER__MIGRATIONS_DIR": str(loader_dir / "migrations")}
    # Bytecode caching on, as in a real dags folder: the second parse of a native file
    # reads its .pyc.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPATH", None)

    def tool(*args: str, dags: Path | None = None, extra_env: dict | None = None) -> dict:
        run_env = {**env, **(extra_env or {})}
        if dags is not None:
            run_env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
        command = pinned_command([python, "-m", "benchmarks.airflow_dagbag", *args], cpus)
        started = time.monotonic()
        done = subprocess.run(command, cwd=str(ROOT), env=run_env, capture_output=True,
                              text=True, check=False, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"airflow_dagbag {args[0]} failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["process_seconds"] = time.monotonic() - started
        return result

    names = sorted(manifest["edit_files"])
    names_file = base / "workflows.json"
    names_file.write_text(json.dumps(names))
    tool("write-native", "--target", server.target, "--cluster", "bench", "--out",
         str(native_dir))
    tool("write-loader", "--cluster", "bench", "--workflows-file", str(names_file), "--out",
         str(loader_dir))
    # Each side first once, each time in a fresh process: the first parse compiles the
    # native files (and writes their .pyc) and fills the loader's layout cache on disk.
    # Then AIRFLOW_ROUNDS rounds of the steady state of a scheduler re-parsing its dags
    # folder, the sides alternating so that the machine's load falls on both alike;
    # medians are compared (one pair of parses differed by up to 20% between runs).
    out = {"native_first": tool("dagbag", "--dags", str(native_dir), dags=native_dir),
           "loader_first": tool("dagbag", "--dags", str(loader_dir), dags=loader_dir),
           "native_rounds": [], "loader_rounds": [], "split_rounds": []}
    # The same DAGs split across loader files, each file parsed by itself, as the DAG
    # processor does: the largest file's parse is what dagbag_import_timeout limits.
    # As many files as write-loader makes by default for this many workflows (at least
    # 2, to compare): each builds at most DAGS_PER_LOADER_FILE DAGs at any corpus size, so
    # the largest file's parse time holds at 30,000 workflows too.
    split_dir, shares = base / "loader-split", max(2, loader_file_count(len(names)))
    tool("write-loader", "--cluster", "bench", "--workflows-file", str(names_file), "--out",
         str(split_dir), "--files", str(shares))
    split_env = {"AIRFLOW__TOKEN_FETCHER__MIGRATIONS_DIR": str(split_dir / "migrations")}
    for _ in range(AIRFLOW_ROUNDS):
        out["native_rounds"].append(tool("dagbag", "--dags", str(native_dir), dags=native_dir))
        out["loader_rounds"].append(tool("dagbag", "--dags", str(loader_dir), dags=loader_dir))
        out["split_rounds"].append([tool("dagbag", "--dags", str(split_dir), "--file", name,
                                         dags=split_dir, extra_env=split_env)
                                    for name in loader_file_names(shares)])
    out["native"] = _median_run(out["native_rounds"])
    out["loader"] = _median_run(out["loader_rounds"])
    for split in out["split_rounds"]:
        if sum(part["dags"] for part in split) != len(names):
            results.note("airflow", f"split: the {shares} loader files built "
                         f"{[part['dags'] for part in split]} DAGs, not {len(names)} in all")
    for key in ("native_first", "loader_first", "native", "loader"):
        if out[key]["dags"] != len(names):
            results.note("airflow", f"{key}: DagBag found {out[key]['dags']} DAGs of "
                         f"{len(names)}; import errors: {out[key]['import_errors']}")
    native, loader = out["native"]["dagbag_seconds"], out["loader"]["dagbag_seconds"]
    results.figure("airflow", "loader_first.dagbag", f"DagBag, {len(names)} DAGs through the "
                   "loader file, first parse", out["loader_first"]["dagbag_seconds"], "s",
                   baseline=out["native_first"]["dagbag_seconds"],
                   baseline_label=f"{len(names)} native DAG files, first parse (compiling)")
    results.figure("airflow", "loader.dagbag", f"DagBag, {len(names)} DAGs through the "
                   f"loader file, next parse (median of {AIRFLOW_ROUNDS})", loader, "s",
                   baseline=native, baseline_label=f"{len(names)} native DAG files, next "
                   f"parse (.pyc; median of {AIRFLOW_ROUNDS})")
    results.figure("airflow", "loader.speedup", "loader speed-up over native files "
                   "(native time / loader time, medians)", native / loader, "x",
                   ratio=native / loader, target=">= 1.5x", met=native >= 1.5 * loader)
    split_total = statistics.median(sum(part["dagbag_seconds"] for part in split)
                                    for split in out["split_rounds"])
    results.figure("airflow", "split.speedup", f"loader speed-up over native files, the DAGs "
                   f"split across {shares} loader files (native time / the total of their "
                   "parses, medians)", native / split_total, "x", ratio=native / split_total,
                   target=">= 1.5x", met=native >= 1.5 * split_total)
    largest = max(statistics.median(split[index]["dagbag_seconds"]
                                    for split in out["split_rounds"])
                  for index in range(shares))
    results.figure("airflow", "split.largest", f"the largest of {shares} loader files "
                   f"({max(part['dags'] for part in out['split_rounds'][0])} DAGs), next "
                   f"parse (median of {AIRFLOW_ROUNDS})", largest,
                   "s", baseline=loader, baseline_label="one loader file building every DAG",
                   target="< 15 s (half of dagbag_import_timeout)", met=largest < 15.0)
    results.note("airflow", "Next parses, round by round (native / loader / split total): "
                 + "; ".join(f"{n['dagbag_seconds']:.1f} / {m['dagbag_seconds']:.1f} / "
                             f"{sum(part['dagbag_seconds'] for part in split):.1f} s"
                             for n, m, split in zip(out["native_rounds"], out["loader_rounds"],
                                                    out["split_rounds"], strict=True)) + ".")
    results.figure("airflow", "loader.rss", "max RSS of the DagBag process, loader",
                   out["loader"]["max_rss"] / MB, "MB", baseline=out["native"]["max_rss"] / MB,
                   baseline_label="native files")
    results.note("airflow", f"Airflow ran under {python}; DagBag(safe_mode=False) in a fresh "
                 "process each time, timed from the DagBag call (importing Airflow excluded: "
                 f"{out['native']['import_airflow_seconds']:.1f} s). The loader builds every DAG "
                 "in one file import, so that file must parse within "
                 "[core] dagbag_import_timeout (30 s by default; raised to 600 s here) and "
                 "the DagFileProcessor's dag_file_processor_timeout (50 s by default).")
    return out


# --- 6. growth -------------------------------------------------------------------------------


def watch_bench(results: Results, corpus: Path, manifest: dict) -> dict:
    """Change detection over the JSON corpus's files: notifications against polling."""
    outcome = watch_cost.compare(corpus)
    poll, notify = outcome["poll"], outcome["notify"]
    paths = f"{notify['paths']:,} files and folders"
    results.figure("watch", "steady_poll", f"change detection, {paths}, CPU per 1 s poll "
                   "(notifications)", notify["steady_poll_cpu_s"] * 1e3, "ms",
                   baseline=poll["steady_poll_cpu_s"] * 1e3,
                   baseline_label="polling every path's stat signature",
                   target="< 10 ms (1% of a core)",
                   met=notify["steady_poll_cpu_s"] < 0.01)
    results.figure("watch", "reparse", f"after a re-parse, {paths}: taking the files up "
                   "and the first poll (notifications)",
                   (notify["reparse_reset_cpu_s"] + notify["reparse_first_poll_cpu_s"]) * 1e3,
                   "ms", baseline=(poll["reparse_reset_cpu_s"]
                                   + poll["reparse_first_poll_cpu_s"]) * 1e3,
                   baseline_label="polling, which re-hashes every file")
    results.note("watch", f"{manifest['workflows']:,} workflows in the JSON format; first "
                 f"load with notifications: {notify['reset_cpu_s']:.2f} s to watch "
                 f"{notify['notified']:,} paths and {notify['first_poll_cpu_s']:.2f} s to "
                 "confirm them once (polling: "
                 f"{poll['reset_cpu_s'] + poll['first_poll_cpu_s']:.2f} s).")
    return outcome


# Fewer edits on the larger corpora of --refresh-at: each one is a parse of the whole corpus.
REFRESH_EDITS_AT_SIZE = 10


def growth(points: list[dict]) -> dict:
    """Least-squares slope per workflow and per job served, for wall time and RSS."""
    xs = [p["workflows"] for p in points]
    out = {}
    for key in ("wall", "peak_tree_rss", "steady_rss"):
        ys = [p[key] for p in points]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / \
            sum((x - mean_x) ** 2 for x in xs)
        out[key] = {"per_workflow": slope, "intercept": mean_y - slope * mean_x}
    return out


def sandbox_for(workflows: int) -> dict | None:
    """The sandbox settings docs/operations.md gives for a cluster of this size; the
    defaults (60 s, 2 GiB, a 256 MiB result) hold up to 10,000 workflows."""
    if workflows <= 10_000:
        return None
    return {"timeout_seconds": 300, "max_result_mb": 1024}


# Cold loads of 10,000 workflows with both CPUs, for the median.
COLD_RUNS_BOTH_CPUS = 3


def cold_wall_every_cpu(workdir: Path, corpus: Path, name: str, cpus: set[int] | None) -> float:
    """Seconds to SERVING with the server and its worker free to use every CPU
    (``cpus``), as a deployment with that CPU limit gives them. Nothing is sampled
    meanwhile and health is asked every 0.1 s: this process shares the CPUs here."""
    server = ServerProcess(workdir, {"bench": python_cluster(corpus)}, name, cpus,
                           sandbox=sandbox_for(10_000))
    server.start()
    try:
        return server.wait_serving(interval=0.1)
    finally:
        server.stop()


def full_reparse(server: ServerProcess) -> dict:
    """A Reload (a full parse in a fresh worker, no definition changed) with the RSS of the
    server and of its worker sampled throughout."""
    from token_fetcher._proto import token_fetcher_pb2 as pb
    from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc

    assert server.process is not None
    sampler = RssSampler(server.process.pid).start()
    started = time.monotonic()
    try:
        with grpc.insecure_channel(server.target) as channel:
            pb_grpc.TokenFetcherStub(channel).Reload(pb.ReloadRequest(cluster="bench"),
                                                     timeout=900)
    finally:
        sampler.stop()
    return {"reparse_wall": time.monotonic() - started,
            "reparse_peak_tree_rss": sampler.peak_tree,
            "reparse_peak_server_rss": sampler.peak_self,
            "reparse_peak_worker_rss": sampler.peak_children,
            "reparse_peak_tree_distinct": sampler.peak_tree_distinct}


def scale_bench(results: Results, workdir: Path, sizes: list[int], seed: int, cpus,
                poll: float) -> dict:
    server_cpus, client_cpus = cpus
    # Children inherit this process's CPUs, which are the clients' only.
    every_cpu = server_cpus | client_cpus if server_cpus and client_cpus else None
    points = []
    for n in sizes:
        corpus, manifest = make_corpus(workdir, n, "python", seed)
        log(f"scale: cold load and a full re-parse of {n} workflows")
        server, point = cold_start(workdir, corpus, f"python-{n}", server_cpus, poll,
                                   sandbox_for(n))
        try:
            point.update(full_reparse(server))
        finally:
            server.stop()
        point["workflows"], point["jobs"] = manifest["workflows"], manifest["jobs_served"]
        point["sandbox"] = sandbox_for(n)
        bare = baseline_import(corpus, manifest, server_cpus)
        point["bare_import_rss"], point["bare_import_uss"] = bare["rss"], bare["uss"]
        if n == 10_000:
            point["walls_both_cpus"] = [
                cold_wall_every_cpu(workdir, corpus, f"python-{n}-{run}", every_cpu)
                for run in range(COLD_RUNS_BOTH_CPUS)]
        if point["broken"] or point["workflow_count"] != n:
            results.note("scale", f"{n} workflows: the server loaded "
                         f"{point['workflow_count']}, {point['broken']} broken")
        shutil.rmtree(corpus, ignore_errors=True)
        points.append({k: point[k] for k in (
            "workflows", "jobs", "wall", "peak_tree_rss", "steady_rss", "load_duration",
            "reparse_wall", "reparse_peak_tree_rss", "reparse_peak_server_rss",
            "reparse_peak_worker_rss", "reparse_peak_tree_distinct", "bare_import_rss",
            "bare_import_uss", "sandbox",
            "walls_both_cpus") if k in point})
        for whose, key in (("server + worker", "reparse_peak_tree_rss"),
                           ("server alone", "reparse_peak_server_rss")):
            results.figure("scale", f"{key}.{n}", f"peak RSS during a full re-parse, {whose}, "
                           f"{n:,} workflows", point[key] / MB, "MB",
                           baseline=point["steady_rss"] / MB,
                           baseline_label="server RSS serving",
                           target="<= 1.3x" if key == "reparse_peak_tree_rss" else "",
                           met=point[key] <= 1.3 * point["steady_rss"]
                           if key == "reparse_peak_tree_rss" else None)
        # What the worker adds is the definitions' import, which Pinball's parse makes
        # whole before it reads a workflow: compare it with an interpreter doing only that.
        results.figure("scale", f"reparse_peak_worker_rss.{n}", "peak RSS during a full "
                       f"re-parse, the worker and its sandbox's processes, {n:,} workflows",
                       point["reparse_peak_worker_rss"] / MB, "MB",
                       baseline=point["bare_import_rss"] / MB,
                       baseline_label="max RSS of a fresh interpreter importing the "
                       "definitions")
        # RSS counts twice what the worker shares with the server (the interpreter's code,
        # its libraries); counted once, is the peak within the target? And the import alone?
        results.figure("scale", f"reparse_peak_tree_distinct.{n}", "peak during a full "
                       f"re-parse, server RSS + the worker's unshared memory (USS), {n:,} "
                       "workflows", point["reparse_peak_tree_distinct"] / MB, "MB",
                       baseline=point["steady_rss"] / MB, baseline_label="server RSS serving")
        results.figure("scale", f"bare_import_uss.{n}", "unshared memory (USS) of a fresh "
                       f"interpreter importing the definitions, {n:,} workflows",
                       point["bare_import_uss"] / MB, "MB", baseline=point["steady_rss"] / MB,
                       baseline_label="server RSS serving")
    section: dict = {"points": points}
    by_size = {p["workflows"]: p for p in points}
    if 10_000 in by_size:
        wall = by_size[10_000]["wall"]
        results.figure("scale", "wall.10000", "cold load to SERVING, python, 10,000 workflows, "
                       "server and worker on one CPU (the CPU the load costs)", wall, "s")
        both = statistics.median(by_size[10_000]["walls_both_cpus"])
        results.figure("scale", "wall_both_cpus.10000", "cold load to SERVING, python, 10,000 "
                       f"workflows, both CPUs (median of {COLD_RUNS_BOTH_CPUS})", both, "s",
                       target="<= 15 s", met=both <= 15.0)
        if 1_000 in by_size:
            per_top, per_bottom = wall / 10_000, by_size[1_000]["wall"] / 1_000
            results.figure("scale", "per_workflow.10000", "cold load per workflow at 10,000 "
                           "workflows", per_top * 1e3, "ms", baseline=per_bottom * 1e3,
                           baseline_label="per workflow at 1,000", target="<= 1.25x",
                           met=per_top <= 1.25 * per_bottom)
    if len(points) >= 2:
        section["growth"] = g = growth(points)
        results.figure("scale", "wall.per_workflow", "cold load growth per workflow",
                       g["wall"]["per_workflow"] * 1e3, "ms")
        serving = g["steady_rss"]["per_workflow"] / 1024
        results.figure("scale", "steady_rss.per_workflow", "serving RSS growth per workflow",
                       serving, "KB", target="<= 45 KB", met=serving <= 45)
    return section


def refresh_at(results: Results, data: dict, workdir: Path, size: int, formats: list[str],
               seed: int, poll: float, cpus) -> None:
    """The refresh section again on corpora of another size."""
    corpora = {fmt: make_corpus(workdir, size, fmt, seed) for fmt in formats}
    servers: dict[str, ServerProcess] = {}
    cold_points: dict[str, dict] = {}
    try:
        for fmt, (corpus, _) in corpora.items():
            log(f"refresh at {size}: starting the server on the {fmt} corpus")
            servers[fmt], cold_points[fmt] = cold_start(
                workdir, corpus, f"{fmt}-{size}-refresh", cpus[0], poll, sandbox_for(size))
        run_refresh(results, data, servers, corpora, cold_points, REFRESH_EDITS_AT_SIZE, seed,
                    poll, cpus, size)
    finally:
        for server in servers.values():
            server.stop()
        for corpus, _ in corpora.values():
            shutil.rmtree(corpus, ignore_errors=True)


# --- report ----------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def figure_table(figures: list[dict]) -> list[str]:
    lines = ["| figure | measured | baseline (same run) | ratio | target | |",
             "|---|---|---|---|---|---|"]
    for f in figures:
        base = "-" if f["baseline"] is None else \
            f"{fmt_value(f['baseline'], f['unit'])} ({f['baseline_label']})"
        ratio = "-" if f["ratio"] is None else f"{f['ratio']:.2f}x"
        verdict = {True: "met", False: "**missed**", None: ""}[f["met"]]
        lines.append(f"| {f['label']} | {fmt_value(f['value'], f['unit'])} | {base} | {ratio} "
                     f"| {f['target'] or '-'} | {verdict} |")
    return lines


def load_text(meta: dict) -> str:
    """The machine's load during each run whose figures the report shows: a section
    re-run later is credited to the later run only."""
    runs = [meta] + [m for m in meta.get("merged_runs", [])]
    shown, later = [], set()
    for run in reversed(runs):
        current = [s for s in run.get("sections", []) if s not in later]
        later.update(run.get("sections", []))
        if current and run.get("loadavg"):
            shown.append((run, current))
    parts = []
    for run, current in reversed(shown):
        load = run["loadavg"]
        which = ", ".join(current) if len(runs) > 1 else "the run"
        parts.append(f"{which} ({run.get('date', '?')}, commit {run.get('commit', '?')}): "
                     f"mean {load['mean']:.1f}, max {load['max']:.1f}")
    if not parts:
        return ""
    return ("Machine load average (1 min; 2.0 means both CPUs busy) during "
            + "; ".join(parts) + ". The benchmarks alone keep it near 1-2; more means "
            "other work shared the machine and the figures are pessimistic.")


def merge_results(old: dict, new: dict, sections: list[str]) -> dict:
    """``old`` with the sections just run replaced by ``new``'s."""
    keep = [f for f in old["figures"] if f["section"] not in sections]
    merged = dict(old)
    merged["figures"] = keep + new["figures"]
    merged["notes"] = {k: v for k, v in old.get("notes", {}).items() if k not in sections}
    merged["notes"].update(new.get("notes", {}))
    merged["sections"] = {**old.get("sections", {}), **new["sections"]}
    meta = dict(old["meta"])
    meta["merged_runs"] = [m for m in meta.get("merged_runs", [])
                           if not set(m.get("sections", [])) <= set(sections)]
    meta["merged_runs"].append({k: new["meta"][k] for k in ("date", "commit", "dirty",
                                                            "sections", "loadavg", "command",
                                                            "duration_s")})
    merged["meta"] = meta
    order = {(f["section"], f["key"]): i for i, f in enumerate(old["figures"])}
    merged["figures"].sort(key=lambda f: (SECTIONS.index(f["section"]) if f["section"] in
                                          SECTIONS else 99,
                                          order.get((f["section"], f["key"]), 999)))
    return merged


def write_report(path: Path, data: dict, results: Results) -> None:
    meta = data["meta"]
    by_section: dict[str, list[dict]] = {}
    for f in results.figures:
        by_section.setdefault(f["section"], []).append(f)
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run`); do not edit by hand: re-run it. "
        "Raw numbers: [benchmarks/results.json](benchmarks/results.json). How the corpus is "
        "made: [benchmarks/corpus.py](benchmarks/corpus.py). Profiles and proposed fixes for "
        "missed targets: [benchmarks/ANALYSIS.md](benchmarks/ANALYSIS.md).",
        "",
        f"Run: {meta['date']} on {meta['machine']}, Python {meta['python']}, grpcio "
        f"{meta['grpcio']}, protobuf {meta['protobuf']}, commit {meta['commit']}"
        f"{' (with uncommitted changes)' if meta['dirty'] else ''}; "
        f"{QUICK_TEXT if meta['quick'] else 'full run'}"
        f", {meta['duration_s']:.0f} s in all: `{meta['command'].strip()}`.",
        "",
        f"Corpus: {meta['corpus']}.",
        "",
        "CPU placement: " + meta["cpus"],
        "",
        load_text(meta),
        "",
    ]
    missed = [f for f in results.figures if f["met"] is False]
    met = [f for f in results.figures if f["met"] is True]
    lines += [f"**Targets: {len(met)} met, {len(missed)} missed.**", ""]
    if missed:
        lines += ["Missed: " + "; ".join(f"{f['label']} = {fmt_value(f['value'], f['unit'])} "
                                         f"(target {f['target']})" for f in missed) + ".", ""]
    titles = {
        "cold": ("1. Cold load",
                 "Wall time from starting `token-fetcher serve --config` (a subprocess) until "
                 "the health service says SERVING, and the peak RSS of the server plus its "
                 "sandbox worker (psutil, sampled every 20 ms); a fresh state directory. "
                 "Baseline: a fresh interpreter that does nothing but load the same "
                 "definitions (Python: import the `WORKFLOWS` module with the compat shims; "
                 "JSON: read and `json.loads` every file of the tree), i.e. the part of a "
                 "load that user code and the format itself force. The ratio is what the "
                 "service adds on top: worker start-up, templates and graph checks, the "
                 "sandbox's JSON round trip, protobuf conversion, fingerprints, and the "
                 "version history."),
        "refresh": ("2. Refresh",
                    "One definition file rewritten (a Python module, atomic rename; or one "
                    "JSON job file), at a random phase of the server's 1 s poll. *Visible*: "
                    "until `GetWorkflowSpec` (polled every 10 ms with `if_none_match`) returns "
                    "the new fingerprint; *pushed*: until the `WatchWorkflows` CHANGED event "
                    "for it arrives. Baseline: the server's own reported parse time of the "
                    "cluster (`last_load_duration_seconds`), the part a full re-parse cannot "
                    "avoid."),
        "rpc": ("3. Request latency and throughput",
                "Server pinned to one CPU, load generators (separate processes, raw bytes, no "
                "protobuf on the client side) on the other. p50/p99 over sequential calls at 1 "
                "in flight; throughput with 16 in flight (2 processes x 8 threads), best of "
                "the rounds, with the server's CPU seconds per call. Baseline: the *floor*, "
                "a minimal grpcio server (`benchmarks/floor.py`) with the same thread pool "
                "and options returning the same response bytes, captured from the real "
                "server first. GetJobTokens asks for the same run every time (the "
                "service's token cache is warm)."),
        "client": ("4. Client",
                   "TokenFetcherClient in the benchmark process against the real server. "
                   "Cache hit: `timeit`, best of 5. Building every DAG spec: one "
                   "`migrated_workflows()` batch vs `migrated_workflow()` per workflow, "
                   "with a cold cache, warm (all hits), and after the TTL expired "
                   "(revalidated with `if_none_match`, answers `not_modified`)."),
        "scale": ("6. How cost grows",
                  "Cold load and RSS of the Python-format corpus at several sizes (about 15 "
                  "jobs per workflow at every size), then a full re-parse (`Reload`: the "
                  "whole corpus parsed again in a fresh worker, no definition changed) with "
                  "the RSS of the server and of its worker sampled throughout, and the "
                  "least-squares growth per workflow. The worker's peak is set beside a "
                  "fresh interpreter that only imports the `WORKFLOWS` module with the "
                  "compatibility classes: Pinball's parse makes that import whole before "
                  "it reads the first workflow, so no worker making the same parse holds "
                  "much less. RSS counts twice the pages the worker shares with the server "
                  "(the interpreter's code, its libraries), so the peak is also given with "
                  "them counted once (the server's RSS plus the worker's and its sandbox "
                  "processes' USS), beside the bare import's USS. The server and its worker "
                  "share one "
                  "CPU in these loads, so their time is the CPU a load costs; at 10,000 "
                  "workflows the cold load is also timed with both CPUs free to them "
                  "(nothing sampled, health asked every 0.1 s), as a deployment with a "
                  "2-CPU limit runs it. Above 10,000 workflows the sandbox "
                  "runs with the larger limits docs/operations.md gives for that size."),
        "watch": ("7. Change detection",
                  "CPU time, in one process, of the catalog's file watch over every visible "
                  "file and folder listing of the JSON corpus (`benchmarks/watch_cost.py`): "
                  "with file-system notifications (inotify) against the polling fallback, "
                  "which compares every path's stat signature at every poll. At the "
                  "server's 1 s poll, CPU per poll is the share of a core it takes."),
        "airflow": ("5. Airflow DagBag",
                    "Airflow's own `DagBag(safe_mode=False)` in a fresh process: a dags folder "
                    "with the token-fetcher loader file and one migration metadata file per "
                    "workflow (all resolved through the client against the running server), "
                    "against a folder of native DAG files, one per workflow, with the same "
                    "tasks, commands, retries, priority weights and dependencies as "
                    "BashOperators, and the same failure emails through `SmtpNotifier`s, as "
                    "Airflow 3 asks (`benchmarks/airflow_dagbag.py`). Each parse runs in a fresh "
                    "process whose heap is frozen (`gc.freeze()`) once Airflow is imported, "
                    "as a parse process of the DAG processor inherits it from its manager. "
                    "Each side is parsed once first, which compiles the native files "
                    "and fills the loader's on-disk layout cache; then three rounds of the "
                    "next parse (bytecode cached, layouts cached), the steady state of a "
                    "scheduler re-parsing its dags folder, the sides alternating; the targets "
                    "are checked on the medians."),
    }
    for section in ("cold", "refresh", "rpc", "client", "airflow", "scale", "watch"):
        if section not in data["sections"] and section not in results.notes:
            continue
        title, text = titles[section]
        lines += [f"## {title}", ""]
        if text:
            lines += [text, ""]
        if by_section.get(section):
            lines += figure_table(by_section[section]) + [""]
        extra = data["sections"].get(section, {})
        if section == "cold" and extra.get("stages"):
            lines += ["Where the time goes (`python -m benchmarks.stages`, the same steps in "
                      "one process, server CPU):", "",
                      "| format | stage | seconds |", "|---|---|---|"]
            for fmt, st in extra["stages"].items():
                for stage, seconds in st.get("seconds", {}).items():
                    lines.append(f"| {fmt} | {stage} | {seconds:.2f} |")
                if "wire_bytes" in st:
                    lines.append(f"| {fmt} | (sandbox result on the wire) | "
                                 f"{st['wire_bytes'] / MB:.1f} MB |")
            lines.append("")
        if section == "scale" and extra.get("points"):
            lines += ["| workflows | jobs served | cold load | peak RSS, cold (tree) | server "
                      "RSS serving | full re-parse | its peak RSS, tree / server alone | "
                      "sandbox settings |", "|---|---|---|---|---|---|---|---|"]
            for p in extra["points"]:
                settings = ", ".join(f"{k} {v}" for k, v in (p.get("sandbox") or {}).items())
                reparse = (f"{p['reparse_wall']:.2f} s | "
                           f"{p['reparse_peak_tree_rss'] / MB:.0f} / "
                           f"{p['reparse_peak_server_rss'] / MB:.0f} MB"
                           if "reparse_wall" in p else "- | -")
                lines.append(f"| {p['workflows']:,} | {p['jobs']:,} | {p['wall']:.2f} s | "
                             f"{p['peak_tree_rss'] / MB:.0f} MB | {p['steady_rss'] / MB:.0f} MB | "
                             f"{reparse} | {settings or 'defaults'} |")
            g = extra.get("growth")
            points = extra["points"]
            if g and len(points) >= 2:
                steps = []
                for a, b in zip(points, points[1:], strict=False):
                    n = b["workflows"] - a["workflows"]
                    steps.append((a["workflows"], b["workflows"], (b["wall"] - a["wall"]) / n,
                                  (b["steady_rss"] - a["steady_rss"]) / n))
                step_text = "; ".join(f"{a:,} -> {b:,}: {t * 1e3:.2f} ms and {r / 1024:.0f} KB "
                                      "per added workflow" for a, b, t, r in steps)
                first, last = steps[0][2], steps[-1][2]
                shape = ("load time grows faster than linearly (each added workflow costs "
                         f"{last / first:.1f}x more at the top of the range than at the bottom)"
                         if first > 0 and last > 1.25 * first else "load time grows linearly")
                lines += ["", f"Least-squares growth per workflow (about 15 jobs each): cold "
                          f"load {g['wall']['per_workflow'] * 1e3:.2f} ms, peak RSS "
                          f"{g['peak_tree_rss']['per_workflow'] / 1024:.0f} KB, serving RSS "
                          f"{g['steady_rss']['per_workflow'] / 1024:.0f} KB (about "
                          f"{g['steady_rss']['per_workflow'] / 1024 / 16:.1f} KB per job "
                          f"served). Step by step: {step_text}. Memory grows linearly; "
                          f"{shape}."]
            lines.append("")
        for note in results.notes.get(section, []):
            lines += [f"- {note}"]
        if results.notes.get(section):
            lines.append("")
    path.write_text("\n".join(lines))


# --- main ------------------------------------------------------------------------------------


def git_state() -> tuple[str, bool]:
    source = ROOT / ".bench-source"  # a snapshot made with `git archive` says what it is
    if source.exists():
        return source.read_text().strip(), False
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small corpus (300 workflows), fewer samples: for iterating")
    parser.add_argument("--workflows", type=int, help="corpus size (default 3000; quick 300)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--formats", default="python,json", help="cold/refresh formats")
    parser.add_argument("--edits", type=int, help="refresh edits per format (default 20)")
    parser.add_argument("--scale",
                        help="comma-separated sizes (default 1000,3000,10000,30000)")
    parser.add_argument("--refresh-at", help="more corpus sizes the refresh section runs at, "
                                             f"{REFRESH_EDITS_AT_SIZE} edits each "
                                             "(default 10000; none with --quick)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stages", default="python",
                        help="formats whose cold load is broken into stages (default python; "
                             "'python,json' adds ~15 s)")
    parser.add_argument("--airflow-python", default=sys.executable,
                        help="interpreter with Airflow and this package for section airflow "
                             "(default: this one)")
    parser.add_argument("--workdir", help="keep corpora and server logs here")
    parser.add_argument("--md", help="report path (default BENCHMARKS.md; quick: "
                                      "/tmp/tf-bench-quick/BENCHMARKS.md)")
    parser.add_argument("--json", help="results path (default benchmarks/results.json; quick: "
                                       "/tmp/tf-bench-quick/results.json)")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the sections run in the existing results (--json) "
                             "and re-render the report")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the report from an existing results file (--json)")
    return parser


def render_only(args: argparse.Namespace) -> int:
    """--report-only: the report re-rendered from an existing results file."""
    source = Path(args.json or ROOT / "benchmarks" / "results.json")
    data = json.loads(source.read_text())
    results = Results()
    results.figures, results.notes = data["figures"], data["notes"]
    target = Path(args.md or ROOT / "BENCHMARKS.md")
    write_report(target, data, results)
    log(f"wrote {target} from {source}")
    return 0


def set_output_paths(args: argparse.Namespace) -> None:
    """Fill in --md and --json; a quick run never overwrites the committed full-run report."""
    quick_dir = Path(tempfile.gettempdir()) / "tf-bench-quick"
    if args.quick:
        quick_dir.mkdir(exist_ok=True)
    args.md = args.md or str(quick_dir / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md")
    args.json = args.json or str(quick_dir / "results.json" if args.quick
                                 else ROOT / "benchmarks" / "results.json")


def chosen_sections(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return sections


def watch_load() -> LoadWatch:
    """The load average over the run, with a warning when the machine is busy already."""
    load = LoadWatch().start()
    if load.start_load > 1.0:
        log(f"warning: load average {load.start_load:.1f} before the run; other processes on "
            "this machine will skew the figures")
    return load


def plan_cpus() -> tuple:
    """(server CPUs, client CPUs); this process is a client too and moves to the latter."""
    cpus = cpu_plan()
    if cpus[1]:
        os.sched_setaffinity(0, cpus[1])
    return cpus


def python_server_sections(results: Results, data: dict, sections: list[str], workdir: Path,
                           server: ServerProcess, manifest: dict, cpus,
                           args: argparse.Namespace) -> None:
    """The sections measured against the server on the Python corpus: rpc, client, airflow."""
    if "rpc" in sections:
        log("rpc: real server vs floor")
        data["sections"]["rpc"] = rpc(results, workdir, server, manifest, cpus, args.quick)
    if "client" in sections:
        log("client")
        data["sections"]["client"] = client_bench(results, server, manifest, args.quick)
    if "airflow" in sections:
        log(f"airflow DagBag under {args.airflow_python}")
        data["sections"]["airflow"] = airflow_bench(
            results, workdir, server, manifest, args.airflow_python, cpus[1])


def run_meta(args: argparse.Namespace, argv: list[str] | None, sections: list[str],
             corpora: dict[str, tuple[Path, dict]], cpus, began: float) -> dict:
    """What the report says about the run: machine, versions, commit, corpora, CPUs."""
    import google.protobuf

    server_cpus, client_cpus = cpus
    commit, dirty = git_state()
    cpu_text = (f"server and its workers on CPU {sorted(server_cpus)}, load generators and "
                f"this process on CPUs {sorted(client_cpus)}" if server_cpus else
                "not pinned (fewer than 2 CPUs)")
    corpus_text = ", ".join(
        f"{m['format']}: {m['workflows']:,} workflows, {m['jobs']:,} jobs "
        f"({m['jobs_served']:,} served), {m['min_jobs']}-{m['max_jobs']} jobs per workflow"
        + (f", {m['modules']} modules" if m["modules"] else "")
        for _, m in corpora.values())
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, "
                   f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": platform.python_version(), "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__, "commit": commit, "dirty": dirty,
        "quick": args.quick, "duration_s": time.monotonic() - began,
        "corpus": corpus_text, "cpus": cpu_text, "sections": sections,
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None
                                                          else sys.argv[1:]),
        "corpus_manifests": {f: {k: v for k, v in m.items() if k != "edit_files"}
                             for f, (_, m) in corpora.items()},
    }


def write_results(args: argparse.Namespace, data: dict, results: Results, sections: list[str],
                  merged: dict | None, began: float) -> None:
    """results.json and the report; ``merged`` (--merge) keeps the sections not run."""
    data["figures"], data["notes"] = results.figures, results.notes
    if merged is not None:
        data = merge_results(merged, data, sections)
        results.figures, results.notes = data["figures"], data["notes"]
    Path(args.json).write_text(json.dumps(data, indent=1, default=str) + "\n")
    write_report(Path(args.md), data, results)
    log(f"wrote {args.md} and {args.json} in {time.monotonic() - began:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.report_only:
        return render_only(args)
    set_output_paths(args)
    sections = chosen_sections(parser, args)
    size = args.workflows or (300 if args.quick else 3000)
    edits = args.edits or (5 if args.quick else 20)
    scale_sizes = [int(s) for s in (args.scale or ("100,300,1000" if args.quick
                                                   else "1000,3000,10000,30000")).split(",")]
    refresh_sizes = [int(s) for s in (args.refresh_at or ("" if args.quick else "10000"))
                     .split(",") if s and "refresh" in sections]
    formats = [f for f in args.formats.split(",") if f]
    merged = json.loads(Path(args.json).read_text()) if args.merge else None
    began = time.monotonic()
    load = watch_load()
    cpus = plan_cpus()
    server_cpus = cpus[0]

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tf-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = Results()
    data: dict = {"sections": {}}
    corpora: dict[str, tuple[Path, dict]] = {}
    try:
        for fmt in formats:
            corpora[fmt] = make_corpus(workdir, size, fmt, args.seed)
        poll = 1.0
        cold_points: dict[str, dict] = {}
        servers: dict[str, ServerProcess] = {}
        try:
            for fmt in formats:
                needed = {"cold", "refresh"} | ({"rpc", "client", "airflow"}
                                                if fmt == "python" else set())
                if not needed & set(sections):
                    continue
                corpus, manifest = corpora[fmt]
                log(f"starting the server on the {fmt} corpus")
                server, cold = cold_start(workdir, corpus, f"{fmt}-{size}", server_cpus, poll)
                servers[fmt] = server
                cold["workflows"], cold["jobs"] = manifest["workflows"], manifest["jobs_served"]
                if cold["broken"] or cold["workflow_count"] != manifest["workflows"]:
                    raise RuntimeError(f"the server loaded {cold['workflow_count']} workflows, "
                                       f"{cold['broken']} broken; see {server.log_path}")
                cold_points[fmt] = cold
                if "cold" in sections:
                    base = baseline_import(corpus, manifest, server_cpus)
                    record_cold(results, fmt, size, cold, base)
                    log(f"cold loads with and without namespaces ({fmt})")
                    isolation_share(results, workdir, corpus, fmt, size, cold, server_cpus,
                                    poll)
                    section = data["sections"].setdefault("cold", {"stages": {}})
                    section[fmt] = {"server": cold, "baseline": base}
                    if fmt in args.stages.split(","):
                        log(f"timing the load stages ({fmt})")
                        section["stages"][fmt] = stages(corpus, server_cpus)
                if "refresh" not in sections and not (fmt == "python" and
                                                      {"rpc", "client", "airflow"} & set(sections)):
                    servers.pop(fmt).stop()
            if "refresh" in sections and servers:
                run_refresh(results, data, servers, corpora, cold_points, edits, args.seed, poll,
                            cpus, size)
            for fmt in [f for f in servers if f != "python"]:
                servers.pop(fmt).stop()
            if "python" in servers:
                python_server_sections(results, data, sections, workdir, servers["python"],
                                       corpora["python"][1], cpus, args)
        finally:
            for server in servers.values():
                server.stop()
        if "watch" in sections:
            log("watch: change detection, notifications against polling")
            corpus, manifest = corpora.get("json") or make_corpus(workdir, size, "json",
                                                                  args.seed)
            data["sections"]["watch"] = watch_bench(results, corpus, manifest)
        for extra_size in refresh_sizes:
            refresh_at(results, data, workdir, extra_size, formats, args.seed, poll, cpus)
        if "scale" in sections:
            data["sections"]["scale"] = scale_bench(results, workdir, scale_sizes, args.seed,
                                                    cpus, poll)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    data["meta"] = run_meta(args, argv, sections, corpora, cpus, began)
    data["meta"]["loadavg"] = load.stop()
    write_results(args, data, results, sections, merged, began)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
