"""Sandbox worker entry point: ``python -m legacy_parser.worker``.

Reads one parse request as JSON on stdin, writes the result on the original stdout (as
``legacy_parser.result_wire`` lays it out), and exits. Definition code's own prints go to
stderr so they cannot corrupt the result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys


def main() -> None:
    # Line-buffered: each workflow's line leaves as soon as it is written.
    result_stream = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.read())
    if request["run_as"] is not None:
        become(request["run_as"])
    _limit(resource.RLIMIT_AS, request["memory_bytes"])
    cpu_seconds = int(request["cpu_seconds"])
    if cpu_seconds > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    # Threads count as processes; with a user namespace the count is this parse's own.
    _limit(resource.RLIMIT_NPROC, request["max_processes"])
    _limit(resource.RLIMIT_NOFILE, request["max_open_files"])
    _limit(resource.RLIMIT_FSIZE, request["max_file_bytes"])

    from legacy_parser.cluster import parse_here
    from legacy_parser.limits import ResultCaps, caps_violation
    from legacy_parser.model import Workflow, WorkflowError
    from legacy_parser.result_wire import write_rest, write_workflow

    caps = ResultCaps(**request["caps"])
    over_caps: list[tuple[str, WorkflowError]] = []

    def emit(workflow: Workflow) -> None:
        # Written while the next one is built: the server rebuilds it meanwhile, and this
        # process need not hold the model of every workflow. The caps are checked here
        # for errors located at the offending job and a result that stays small; the
        # server checks them again, since definition code could have changed this.
        violation = caps_violation(workflow, caps)
        if violation is None:
            write_workflow(result_stream, workflow)
        else:
            over_caps.append((workflow.name, violation))

    result = parse_here(request["cluster"], request["repo_root"], request["parser"],
                        request["parser_params"], request["default_email"],
                        python2=request.get("python2_definitions", "auto") == "auto",
                        stub_modules=tuple(request.get("stub_modules", ())), emit=emit)
    over_caps.sort(key=lambda pair: pair[0])
    write_rest(result_stream, dataclasses.replace(
        result, errors=(*result.errors, *(violation for _, violation in over_caps))))
    result_stream.flush()
    # Skip interpreter teardown: definition code may have left threads or atexit hooks.
    os._exit(0)


def become(uid: int) -> None:
    """Switch to ``uid`` (and the group of the same number) for good, if not already."""
    if os.getuid() != uid:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit(f"the parse worker could not switch to uid {uid}")


def _limit(kind: int, value: int) -> None:
    value = int(value)
    if value > 0:
        hard = resource.getrlimit(kind)[1]
        capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (capped, capped))


if __name__ == "__main__":
    main()
