"""The two sides of the in-pod hand-over as processes of their own, for the tests.

    python inpod_sides.py legacy ROOT [--pause-at STEP]
    python inpod_sides.py worker ROOT RESULT COMMAND [--pause-at STEP] [--timeout S]
                                                    [--warn-after S]

``--pause-at STEP`` stops the side at that step of the protocol (it writes
``ROOT/paused-<side>-<STEP>`` and sleeps) so that a test can kill it there. The worker
streams each output line to ``RESULT.lines`` as it arrives and writes how the hand-over
ended to ``RESULT`` (JSON). Intervals are short so that the tests are quick; tests
that run one side in-process use the same ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from token_fetcher.inpod.handover import Handover, HandoverError, HandoverTimeout
from token_fetcher.inpod.runner import Runner

HEARTBEAT = 0.05
# Well above the heartbeat, so that a process starved by a busy machine is not taken
# for dead.
STALE_AFTER = 2.0
POLL = 0.02
KILL_GRACE = 2.0


def pauser(root: str, side: str, step: str | None):
    def on_step(reached: str) -> None:
        if reached == step:
            Path(root, f"paused-{side}-{step}").touch()
            while True:
                time.sleep(60)

    return on_step


def legacy(args) -> int:
    Runner(
        args.root,
        heartbeat=HEARTBEAT,
        stale_after=STALE_AFTER,
        poll=POLL,
        sample_every=POLL,
        kill_grace=KILL_GRACE,
        on_step=pauser(args.root, "legacy", args.pause_at),
    ).serve()
    return 0


def worker(args) -> int:
    handover = Handover(
        args.root,
        heartbeat=HEARTBEAT,
        stale_after=STALE_AFTER,
        poll=POLL,
        ready_timeout=args.ready_timeout,
        stop_timeout=KILL_GRACE + 3,
        on_step=pauser(args.root, "worker", args.pause_at),
    )
    lines = open(args.result + ".lines", "a", encoding="utf-8")  # noqa: SIM115

    def on_output(line: str) -> None:
        lines.write(line + "\n")
        lines.flush()

    result: dict = {}
    try:
        outcome = handover.run(
            args.command,
            env={"HANDOVER_TEST": "yes"},
            on_output=on_output,
            timeout=args.timeout,
            warn_after=args.warn_after,
            on_warn=lambda: on_output("WARN-TIMEOUT-REPORTED"),
        )
        result = {"outcome": dataclasses.asdict(outcome)}
    except HandoverTimeout as exc:
        stopped = dataclasses.asdict(exc.outcome) if exc.outcome else None
        result = {"error": "timeout", "message": str(exc), "outcome": stopped}
    except HandoverError as exc:
        result = {"error": type(exc).__name__, "message": str(exc)}
    temporary = args.result + ".tmp"
    Path(temporary).write_text(json.dumps(result))
    os.replace(temporary, args.result)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="side", required=True)
    legacy_parser = sub.add_parser("legacy")
    legacy_parser.add_argument("root")
    legacy_parser.add_argument("--pause-at")
    worker_parser = sub.add_parser("worker")
    worker_parser.add_argument("root")
    worker_parser.add_argument("result")
    worker_parser.add_argument("command")
    worker_parser.add_argument("--pause-at")
    worker_parser.add_argument("--timeout", type=float)
    worker_parser.add_argument("--warn-after", type=float)
    worker_parser.add_argument("--ready-timeout", type=float, default=10.0)
    args = parser.parse_args()
    return legacy(args) if args.side == "legacy" else worker(args)


if __name__ == "__main__":
    sys.exit(main())
