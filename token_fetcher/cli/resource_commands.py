"""``token-fetcher resources``: the in-pod mode's resource recommendations for a cluster.

Reads the resource history the workers record (``[token_fetcher] inpod_history_dir``)
and prints, per job, the runs it has, the percentile of their peak memory and average
cores, and the requests and limits the pod override gets from them. Needs no Airflow
and no server. Exit codes: 0 success, 1 nothing recorded for the cluster, 2 a usage
error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from token_fetcher.cli.client_commands import _print_table
from token_fetcher.inpod.resources import (
    ResourceHistory,
    ResourcePolicy,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
)

__all__ = ["register", "resources_command"]

EXIT_OK, EXIT_EMPTY, EXIT_USAGE = 0, 1, 2
_DEFAULTS = ResourcePolicy()


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "resources",
        help="print the in-pod mode's per-task resource recommendations for a cluster",
        description=(
            "Per migrated job of CLUSTER: its recorded runs and the requests and limits "
            "its legacy container gets from them (a percentile of the runs plus headroom, "
            "within floor and ceiling; memory request = limit, CPU limit = the ceiling)."
        ),
    )
    p.add_argument("--history-dir", required=True, help="[token_fetcher] inpod_history_dir")
    p.add_argument("--cluster", required=True)
    p.add_argument("--percentile", type=float, default=_DEFAULTS.percentile)
    p.add_argument("--headroom", type=float, default=_DEFAULTS.headroom, help="0.2 adds 20%%")
    p.add_argument("--cpu-floor", type=parse_cpu, default=_DEFAULTS.cpu_floor)
    p.add_argument("--cpu-ceiling", type=parse_cpu, default=_DEFAULTS.cpu_ceiling)
    p.add_argument("--memory-floor", type=parse_memory, default=_DEFAULTS.memory_floor)
    p.add_argument("--memory-ceiling", type=parse_memory, default=_DEFAULTS.memory_ceiling)
    p.add_argument("--min-runs", type=int, default=_DEFAULTS.min_runs)
    p.add_argument("--json", action="store_true", help="one JSON object per job")
    p.set_defaults(func=resources_command)


def resources_command(args: argparse.Namespace) -> int:
    try:
        policy = ResourcePolicy(
            percentile=args.percentile,
            headroom=args.headroom,
            cpu_floor=args.cpu_floor,
            cpu_ceiling=args.cpu_ceiling,
            memory_floor=args.memory_floor,
            memory_ceiling=args.memory_ceiling,
            min_runs=args.min_runs,
        )
    except ValueError as exc:
        print(f"token-fetcher resources: {exc}", file=sys.stderr)
        return EXIT_USAGE
    table = ResourceHistory(args.history_dir).recommendations(args.cluster, policy)
    if not table:
        print(
            f"token-fetcher resources: no runs recorded for cluster {args.cluster!r} "
            f"under {args.history_dir}",
            file=sys.stderr,
        )
        return EXIT_EMPTY
    rows = []
    for (workflow, job), (runs, recommendation) in table.items():
        if args.json:
            print(
                json.dumps(
                    {
                        "cluster": args.cluster,
                        "workflow": workflow,
                        "job": job,
                        "runs": len(runs),
                        "resources": recommendation.resources() if recommendation else None,
                    },
                    sort_keys=True,
                )
            )
            continue
        if recommendation is None:
            rows.append([workflow, job, str(len(runs)), "-", "-", "too few runs", "", "", ""])
            continue
        rows.append(
            [
                workflow,
                job,
                str(len(runs)),
                format_memory(recommendation.memory_percentile_bytes),
                format_cpu(recommendation.cores_percentile),
                recommendation.requests["cpu"],
                recommendation.limits["cpu"],
                recommendation.requests["memory"],
                recommendation.limits["memory"],
            ]
        )
    if not args.json:
        p = f"p{policy.percentile:g}"
        _print_table(
            ["WORKFLOW", "JOB", "RUNS", f"MEMORY {p}", f"CORES {p}", "CPU REQUEST", "CPU LIMIT",
             "MEMORY REQUEST", "MEMORY LIMIT"],
            rows,
        )
    return EXIT_OK
