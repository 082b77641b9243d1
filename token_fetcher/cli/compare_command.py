"""``token-fetcher compare``: Pinball's command lines against the ones served now.

The verification step of a migration: for each command from a Pinball log or token dump,
fetch the command served for the same job and run, and say whether they are equal,
equal up to the order of ``--job_params``/``--executor_config`` pairs (how Python 2
Pinball printed them), or different, showing what differs. Exit code 0 when every
command is equal (either way), 1 when one differs or could not be compared, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import collections
from datetime import UTC, datetime
from typing import Any

from legacy_parser.equivalence import LoggedCommand, Verdict, compare_commands, parse_log_line
from legacy_parser.schedule import last_run_at_or_before
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.cli.connection import (
    CommandError,
    UsageError,
    connection_options,
    parse_run_time,
    run_client,
)
from token_fetcher.client import TokenFetcherClient, TokenFetcherError

NOT_COMPARED = "not compared"


def register(subparsers: Any) -> None:
    help = "compare Pinball's command lines with the ones served for the same job and run"
    parser = subparsers.add_parser("compare", parents=[connection_options()], help=help,
                                   description=help)
    parser.set_defaults(func=compare_command, client_command="compare")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="deadline of each call in seconds")
    parser.add_argument("--cluster", required=True, help="the cluster's name in the server config")
    parser.add_argument(
        "--log", help="a file of lines 'workflow<TAB>job<TAB>run time<TAB>command', or of job "
        "token names '/workflow/<wf>/<instance>/job/<state>/<job>' each followed by the command")
    parser.add_argument("--workflow", help="with --job, --run-time and --command: one command")
    parser.add_argument("--job", help="with --workflow: the job's name")
    parser.add_argument("--run-time", help="ISO 8601, whole seconds; UTC when no offset is given")
    parser.add_argument("--command", help="the command line Pinball printed")


def compare_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        tally = CommandComparer(client, args.cluster).compare_all(_entries(args))
        print(", ".join(f"{count} {verdict}" for verdict, count in sorted(tally.items())))
        bad = tally[Verdict.DIFFERENT.value] + tally[NOT_COMPARED]
        if bad:
            raise CommandError(f"{bad} of {sum(tally.values())} commands differ or could not "
                               "be compared")

    return run_client(args, run)


def _entries(args: argparse.Namespace) -> list[tuple[str, LoggedCommand | str]]:
    """(where, the command or why the line is unreadable)."""
    single = (args.workflow, args.job, args.run_time, args.command)
    if args.log:
        if any(value is not None for value in single):
            raise UsageError("give either --log or --workflow/--job/--run-time/--command")
        entries: list[tuple[str, LoggedCommand | str]] = []
        with open(args.log, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                where = f"{args.log}:{number}"
                try:
                    logged = parse_log_line(line)
                except ValueError as error:
                    entries.append((where, str(error)))
                    continue
                if logged is not None:
                    entries.append((where, logged))
        return entries
    if any(value is None for value in single):
        raise UsageError("give --log, or all of --workflow, --job, --run-time and --command")
    return [("command", LoggedCommand(args.workflow, args.job, args.command,
                                      run_time=args.run_time))]


class CommandComparer:
    """Compares logged commands with the served ones; fetches each run's tokens, and each
    workflow's schedule, once."""

    def __init__(self, client: TokenFetcherClient, cluster: str) -> None:
        self.client = client
        self.cluster = cluster
        self._commands: dict[tuple[str, datetime], dict[str, str]] = {}
        self._schedules: dict[str, pb.Schedule] = {}

    def compare_all(self, entries: list[tuple[str, LoggedCommand | str]]) -> collections.Counter:
        tally: collections.Counter = collections.Counter()
        for where, logged in entries:
            if isinstance(logged, str):
                print(f"{where}: {NOT_COMPARED}: {logged}")
                tally[NOT_COMPARED] += 1
                continue
            try:
                run_time = self._run_time(logged)
                served = self._served(logged.workflow, run_time).get(logged.job)
            except (TokenFetcherError, UsageError, ValueError) as error:
                print(f"{where}: {logged.workflow}/{logged.job}: {NOT_COMPARED}: {error}")
                tally[NOT_COMPARED] += 1
                continue
            label = f"{where}: {logged.workflow}/{logged.job} run {run_time.isoformat()}"
            if served is None:
                print(f"{label}: {NOT_COMPARED}: the workflow has no job {logged.job!r}")
                tally[NOT_COMPARED] += 1
                continue
            comparison = compare_commands(logged.command, served)
            print(f"{label}: {comparison.verdict.value}")
            for difference in comparison.differences:
                print(f"    {difference}")
            tally[comparison.verdict.value] += 1
        return tally

    def _run_time(self, logged: LoggedCommand) -> datetime:
        if logged.run_time:
            return parse_run_time(logged.run_time)
        # A token dump names Pinball's instance (when the run was started): the run is the
        # schedule's last grid point at or before it.
        if logged.workflow not in self._schedules:
            spec = self.client.get_spec(self.cluster, logged.workflow).spec
            self._schedules[logged.workflow] = spec.schedule
        schedule = self._schedules[logged.workflow]
        run = last_run_at_or_before(schedule.reference_time.seconds,
                                    schedule.recurrence_seconds, logged.instance_ms // 1000)
        if run is None:
            raise ValueError(f"instance {logged.instance_ms} is before the schedule's first run")
        return datetime.fromtimestamp(run, UTC)

    def _served(self, workflow: str, run_time: datetime) -> dict[str, str]:
        key = (workflow, run_time)
        if key not in self._commands:
            # manual: a logged run may have been started by hand, off the schedule.
            answer = self.client.get_job_tokens(self.cluster, workflow, run_time, manual=True)
            self._commands[key] = {token.job: token.command for token in answer.jobs}
        return self._commands[key]
