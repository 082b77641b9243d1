"""Server-side commands: serve, validate, health."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

DEFAULT_TARGET = "127.0.0.1:50051"


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="run the token fetcher server")
    serve.add_argument("--config", required=True, help="the server's YAML configuration")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(func=serve_command)

    validate = subparsers.add_parser(
        "validate", help="parse a legacy repo and report each workflow, or diff two checkouts",
        description="Parse a cluster given as a Pinball YAML config and report every workflow. "
                    "Exit code 1 when any workflow or module is broken.")
    validate.add_argument("pinball_yaml", nargs="?",
                          help="Pinball YAML with parser and parser_params")
    validate.add_argument("--repo", help="legacy repo root put on sys.path "
                                         "(default: the YAML's folder)")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"),
                          help="two checkouts of a repo: list what changed between them")
    validate.add_argument("--config-name", default="pinball.yaml",
                          help="with --diff: the Pinball YAML inside each checkout")
    validate.add_argument("--timeout", type=float, default=300.0,
                          help="parse time limit in seconds")
    validate.set_defaults(func=validate_command)

    health = subparsers.add_parser("health", help="exit 0 only when the server is SERVING")
    health.add_argument("--target", default=DEFAULT_TARGET)
    health.add_argument("--service", default="", help="a service name; default: the server")
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(func=health_command)


def serve_command(args: argparse.Namespace) -> int:
    from legacy_parser.sandbox import IsolationUnavailable
    from token_fetcher.config import ConfigError, load_config
    from token_fetcher.server import TokenFetcherServer

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"token-fetcher: {error}", file=sys.stderr)
        return 2
    try:
        server = TokenFetcherServer(config)
        server.start()
    except (OSError, IsolationUnavailable) as error:
        print(f"token-fetcher: {error}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    logging.getLogger("token_fetcher").info(
        "listening on %s (port %d), metrics on %s; clusters: %s", config.listen, server.port,
        config.metrics or "off", ", ".join(config.clusters))
    stop.wait()
    logging.getLogger("token_fetcher").info("shutting down")
    server.stop()
    return 0


def _parse(yaml_path: str, repo: str | None, timeout: float, progress: bool):
    from legacy_parser.sandbox import Sandbox, SandboxLimits
    from token_fetcher.config import read_pinball_config

    setup = read_pinball_config(yaml_path)
    repo = repo or os.path.dirname(os.path.abspath(yaml_path))
    cluster = os.path.basename(os.path.abspath(repo))
    sandbox = Sandbox(SandboxLimits(timeout_seconds=timeout, workers=1))
    done = threading.Event()

    def report_progress() -> None:
        started = time.monotonic()
        while not done.wait(5.0):
            print(f"still parsing {yaml_path} ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr)

    if progress:
        print(f"parsing {yaml_path} with repo {repo}", file=sys.stderr)
        threading.Thread(target=report_progress, daemon=True).start()
    try:
        return sandbox.parse(cluster, repo, setup.parser, setup.parser_params,
                             setup.default_email)
    finally:
        done.set()


def validate_command(args: argparse.Namespace) -> int:
    from legacy_parser.diff import diff_parses
    from token_fetcher.config import ConfigError

    try:
        if args.diff:
            old_root, new_root = args.diff
            old = _parse(os.path.join(old_root, args.config_name), old_root, args.timeout, True)
            new = _parse(os.path.join(new_root, args.config_name), new_root, args.timeout, True)
            differences = diff_parses(old, new)
            if args.json:
                print(json.dumps([vars(d) for d in differences], indent=2, default=list))
            else:
                print("\n".join(map(str, differences)) or "no differences")
            return 1 if new.errors else 0
        if not args.pinball_yaml:
            print("token-fetcher validate: give a Pinball YAML, or --diff OLD NEW",
                  file=sys.stderr)
            return 2
        result = _parse(args.pinball_yaml, args.repo, args.timeout, True)
    except ConfigError as error:
        print(f"token-fetcher validate: {error}", file=sys.stderr)
        return 2
    print(f"parsed {len(result.workflows)} workflows with {len(result.errors)} errors in "
          f"{result.duration_seconds:.2f} s", file=sys.stderr)
    if args.json:
        from legacy_parser.model import to_plain

        print(json.dumps(to_plain(result), indent=2))
    else:
        print(_report(result))
    return 1 if result.errors else 0


def _report(result) -> str:
    from legacy_parser.model import OverrunPolicy

    lines = []
    for workflow in result.workflows:
        schedule = workflow.schedule
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(schedule.reference_epoch))
        lines.append(f"{workflow.name}: ok, {len(workflow.jobs)} jobs, every "
                     f"{schedule.recurrence_seconds} s from {start}, "
                     f"{OverrunPolicy(schedule.overrun_policy).name} "
                     f"(max {schedule.max_running_instances} running)")
        for job in workflow.jobs:
            after = f" after {', '.join(job.parents)}" if job.parents else ""
            lines.append(f"  {job.name} [{job.kind}{after}] score {job.score:g}: "
                         f"{job.command.render('<end_date>')}")
    for error in result.errors:
        lines.append(f"{error.workflow or '(cluster)'}: BROKEN: {error}")
    return "\n".join(lines)


def health_command(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"{args.target}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1
