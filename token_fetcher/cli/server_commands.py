"""Server-side commands: serve and validate."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from token_fetcher.cli.output import print_line

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="run the token fetcher server")
    serve.add_argument("--config", required=True, help="the server's YAML configuration")
    serve.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                       metavar="LEVEL", help=f"one of {', '.join(LOG_LEVELS)} (default INFO)")
    serve.add_argument("--log-format", default="text", choices=("text", "json"),
                       help="text (default), or json: one JSON object per line with "
                            "timestamp, level, logger and message")
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
    validate.add_argument("--isolation", choices=("strict", "best_effort"), default="strict",
                          help="strict (default): parse in the sandbox's namespaces or refuse; "
                               "best_effort: with what this host gives (docs/operations.md)")
    validate.add_argument("--python2-definitions", choices=("auto", "off"), default="auto",
                          help="as the cluster setting: auto (default) translates Python 2 "
                               "definition modules, off loads Python 3 only")
    validate.add_argument("--stub-module", action="append", default=[], type=_stub_module,
                          metavar="MODULE", dest="stub_modules",
                          help="as the cluster setting stub_modules: a third-party module "
                               "definitions import that stands in as an inert stub "
                               "(repeat for several)")
    validate.set_defaults(func=validate_command)


def _stub_module(name: str) -> str:
    from token_fetcher.config import stub_module_problem

    if problem := stub_module_problem(name):
        raise argparse.ArgumentTypeError(problem)
    return name


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(
            "%(levelname)s %(name)s %(message)s", timestamp=True,
            rename_fields={"levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(_TEXT_LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def install_stop_signals() -> int:
    """Make SIGTERM and SIGINT wake the returned file descriptor; read it to wait.

    A Python signal handler runs in the main thread between two bytecodes, possibly while
    that thread holds a lock, so a handler that takes one (``threading.Event.set()`` does)
    deadlocks when a second signal interrupts the first handler. Here the handler does
    nothing at all: the interpreter's C-level handler writes the signal number to the
    wakeup fd, which is what the main thread waits on.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # set_wakeup_fd requires it
    signal.set_wakeup_fd(write_end)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _ignore_signal)
    return read_end


def _ignore_signal(signum: int, frame: object) -> None:
    """Replaces the default action; the wakeup fd carries the signal (see above)."""


def serve_command(args: argparse.Namespace) -> int:
    from legacy_parser.isolation import IsolationUnavailable
    from token_fetcher.config import ConfigError, load_config
    from token_fetcher.server import TokenFetcherServer

    configure_logging(args.log_level, args.log_format)
    log = logging.getLogger("token_fetcher")
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"token-fetcher: {error}", file=sys.stderr)
        return 2
    # Before the server starts: a signal during the first load stops it cleanly too.
    stop_signals = install_stop_signals()
    try:
        server = TokenFetcherServer(config)
        server.start()
    except (OSError, IsolationUnavailable) as error:
        print(f"token-fetcher: {error}", file=sys.stderr)
        return 1
    log.info("listening on %s (port %d), metrics on %s; clusters: %s", config.listen,
             server.port, config.metrics or "off", ", ".join(config.clusters))
    while (signum := os.read(stop_signals, 1)[0]) not in _STOP_SIGNALS:
        pass  # another signal with a Python handler: not ours to act on
    # Later signals (make forwards SIGTERM to the process group too) write to the same
    # pipe and change nothing: the drain below runs to its end.
    log.info("%s received; shutting down", signal.Signals(signum).name)
    server.stop()
    return 0


def _parse(yaml_path: str, repo: str | None, args: argparse.Namespace):
    from legacy_parser.isolation import SandboxLimits
    from legacy_parser.sandbox import Sandbox
    from token_fetcher.config import read_pinball_config

    setup = read_pinball_config(yaml_path)
    repo = repo or os.path.dirname(os.path.abspath(yaml_path))
    cluster = os.path.basename(os.path.abspath(repo))
    sandbox = Sandbox(SandboxLimits(timeout_seconds=args.timeout, workers=1,
                                    isolation=args.isolation))
    done = threading.Event()

    def report_progress() -> None:
        started = time.monotonic()
        while not done.wait(5.0):
            print(f"still parsing {yaml_path} ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr)

    print(f"parsing {yaml_path} with repo {repo}", file=sys.stderr)
    threading.Thread(target=report_progress, daemon=True).start()
    try:
        return sandbox.parse(cluster, repo, setup.parser, setup.parser_params,
                             setup.default_email, python2_definitions=args.python2_definitions,
                             stub_modules=tuple(args.stub_modules))
    finally:
        done.set()


def validate_command(args: argparse.Namespace) -> int:
    from legacy_parser.diff import diff_parses
    from legacy_parser.isolation import IsolationUnavailable
    from token_fetcher.config import ConfigError

    try:
        if args.diff:
            old_root, new_root = args.diff
            old = _parse(os.path.join(old_root, args.config_name), old_root, args)
            new = _parse(os.path.join(new_root, args.config_name), new_root, args)
            differences = diff_parses(old, new)
            if args.json:
                print(json.dumps([vars(d) for d in differences], indent=2, default=list))
            else:
                for line in map(str, differences or ["no differences"]):
                    print_line(line)
            return 1 if new.errors else 0
        if not args.pinball_yaml:
            print("token-fetcher validate: give a Pinball YAML, or --diff OLD NEW",
                  file=sys.stderr)
            return 2
        result = _parse(args.pinball_yaml, args.repo, args)
    except (ConfigError, IsolationUnavailable) as error:
        print(f"token-fetcher validate: {error}", file=sys.stderr)
        return 2
    print(f"parsed {len(result.workflows)} workflows with {len(result.errors)} errors in "
          f"{result.duration_seconds:.2f} s", file=sys.stderr)
    if args.json:
        from legacy_parser.model import to_plain

        print(json.dumps(to_plain(result), indent=2))
    else:
        for line in _report(result):
            print_line(line)
    return 1 if result.errors else 0


def _report(result) -> list[str]:
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
    return lines
