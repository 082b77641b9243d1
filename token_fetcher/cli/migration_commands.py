"""Migration commands: migrate (one workflow or a wave), rollback, migrations list/report.

``migrate`` (here) and ``rollback`` (cli.rollback_command) write metadata files and
append to the migration record beside them (token_fetcher.migration_record);
``migrations list`` reads the record and ``migrations report`` renders it with the
server's current view as one HTML page (cli.migration_record_commands). Exit codes as for
the client commands (0 success, 1 an error, 2 a usage error), and 3 when a wave or its
dry run found blocked workflows (the others are still migrated).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.cli.connection import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    client_parents,
    fail,
    one_line,
    run_client,
)
from token_fetcher.cli.migration_record_commands import list_command, report_command
from token_fetcher.cli.output import NO_LEGACY_RUN, iso_time, print_fields, print_table
from token_fetcher.cli.rollback_command import rollback_command
from token_fetcher.client import MigratedWorkflow, TokenFetcherClient, TokenFetcherError
from token_fetcher.handovers import Handover
from token_fetcher.migration import MigrationMetadata, parse_date, write_metadata
from token_fetcher.migration_record import Record, append_record, current_user
from token_fetcher.migration_wave import Candidate, existing_problem, is_glob, preflight

__all__ = ["EXIT_BLOCKED", "register"]

EXIT_BLOCKED = 3


def register(subparsers: Any) -> None:
    """Add migrate, rollback and migrations (list, report) to an argparse subparsers object."""
    options = client_parents()

    def add(within: Any, name: str, func: Callable[[argparse.Namespace], int], help: str,
            parents: Sequence[argparse.ArgumentParser] = options) -> Any:
        parser = within.add_parser(name, parents=list(parents), help=help, description=help)
        parser.set_defaults(func=func, client_command=name)
        return parser

    p = add(subparsers, "migrate", migrate_command,
            "check workflows and write their migration metadata files: one, a list, a glob or "
            "--all, with --dry-run for a preflight table; exit 3 if any is blocked")
    p.add_argument("--cluster", required=True, help="the cluster's name in the server config")
    p.add_argument("--workflow", action="append", default=[],
                   help="a workflow's name or a glob such as 'daily_*' (repeatable)")
    p.add_argument("--all", action="store_true", help="every workflow of the cluster")
    p.add_argument("--migration-date", required=True,
                   help="'YYYY-MM-DD HH:MM:SS' (UTC) or ISO 8601 with an offset")
    p.add_argument("--metadata-dir", required=True, help="writes <dir>/<cluster>/<workflow>.json")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would be migrated and what is blocked; write nothing")
    p.add_argument("--force", action="store_true",
                   help="replace a metadata file with another migration date")
    p.add_argument("--partition", default="",
                   help="the DAG processor partition that serves them (default: by hash); "
                   "changing it moves a migrated workflow")

    p = add(subparsers, "rollback", rollback_command,
            "hand a migrated workflow back to Pinball after a date; prints Airflow's last run "
            "and Pinball's first")
    p.add_argument("--cluster", required=True, help="the cluster's name in the server config")
    p.add_argument("--workflow", required=True, help="the workflow's name")
    p.add_argument("--rollback-date", required=True,
                   help="'YYYY-MM-DD HH:MM:SS' (UTC) or ISO 8601 with an offset")
    p.add_argument("--metadata-dir", required=True, help="the folder of the metadata files")

    group = subparsers.add_parser("migrations", help="the migration record: list, report",
                                  description="the migration record: list, report")
    within = group.add_subparsers(dest="migrations_command", required=True, metavar="COMMAND")
    p = add(within, "list", list_command, "every migrate and rollback, oldest first", parents=())
    p.add_argument("--metadata-dir", required=True, help="the folder of the metadata files")
    p.add_argument("--cluster", help="only this cluster")
    p.add_argument("--workflow", help="only this workflow")
    p.add_argument("--json", action="store_true", help="one JSON object per record")

    p = add(within, "report", report_command,
            "write one self-contained HTML page: counts, a chart and a table per cluster")
    p.add_argument("--metadata-dir", required=True, help="the folder of the metadata files")
    p.add_argument("--html", required=True, help="the page to write")


def _is_single(args: argparse.Namespace) -> bool:
    return (not args.all and not args.dry_run and len(args.workflow) == 1
            and not is_glob(args.workflow[0]))


def migrate_command(args: argparse.Namespace) -> int:
    if args.all == bool(args.workflow):
        return fail(args.client_command, EXIT_USAGE,
                    "give --workflow (names or globs) or --all, not both")
    if _is_single(args):
        return run_client(args, lambda client: _migrate_one(client, args))
    found: list[Candidate] = []
    code = run_client(args, lambda client: found.extend(_migrate_wave(client, args)))
    if code == EXIT_OK and any(candidate.status == "blocked" for candidate in found):
        return EXIT_BLOCKED
    return code


def _migrate_one(client: TokenFetcherClient, args: argparse.Namespace) -> None:
    date = parse_date(args.migration_date, "--migration-date")
    metadata = MigrationMetadata(args.cluster, args.workflow[0], date, partition=args.partition)
    problem = existing_problem(args.metadata_dir, metadata, args.force)
    if problem:
        raise CommandError(problem)
    # migrated_workflow() checks the server's handover against the spec's schedule.
    migrated = client.migrated_workflow(metadata)
    if migrated.status == pb.PARSE_STATUS_BROKEN:
        raise CommandError(f"{metadata.cluster_name}/{metadata.workflow_name} is broken")
    path = _write_migration(args.metadata_dir, migrated)
    if args.json:
        print(json.dumps(
            {
                "path": path,
                "fingerprint": migrated.fingerprint,
                "migration_date": iso_time(metadata.migration_epoch),
                "last_legacy_run": iso_time(migrated.handover.last_legacy_run_time) or None,
                "first_new_run": iso_time(migrated.handover.first_new_run_time),
            },
            indent=2,
        ))
        return
    print(f"wrote {path}")
    print_fields(_handover_fields(metadata, _runs(migrated)))


def _migrate_wave(client: TokenFetcherClient, args: argparse.Namespace) -> list[Candidate]:
    date = parse_date(args.migration_date, "--migration-date")
    answer = client.list_workflows(args.cluster)
    candidates = preflight(args.cluster, answer, args.workflow or ["*"], args.metadata_dir,
                           date, args.force, args.partition)
    if not args.dry_run:
        for candidate in candidates:
            if candidate.status in ("migratable", "caveats"):
                _migrate_candidate(client, args, candidate, date)
    if args.json:
        print(json.dumps(
            {
                "cluster": args.cluster,
                "migration_date": iso_time(_epoch(date)),
                "dry_run": args.dry_run,
                "workflows": [_candidate_json(candidate) for candidate in candidates],
            },
            indent=2,
        ))
    else:
        _print_wave(candidates, args.dry_run)
    return candidates


def _migrate_candidate(client: TokenFetcherClient, args: argparse.Namespace,
                       candidate: Candidate, date: datetime) -> None:
    metadata = MigrationMetadata(args.cluster, candidate.workflow, date,
                                 partition=args.partition)
    try:
        migrated = client.migrated_workflow(metadata)
    except TokenFetcherError as exc:
        candidate.status, candidate.notes = "blocked", [one_line(str(exc))]
        return
    if migrated.status == pb.PARSE_STATUS_BROKEN:
        candidate.status, candidate.notes = "blocked", ["broken"]
        return
    candidate.path = _write_migration(args.metadata_dir, migrated)
    candidate.fingerprint, candidate.handover = migrated.fingerprint, _runs(migrated)
    candidate.written = True


def _runs(migrated: MigratedWorkflow) -> Handover:
    """The client's handover in epoch seconds, as the record keeps it."""
    last, first = migrated.handover.last_legacy_run_time, migrated.handover.first_new_run_time
    return Handover(last_legacy_run=None if last is None else int(last.timestamp()),
                    first_new_run=int(first.timestamp()))


def _write_migration(folder: str, migrated: MigratedWorkflow) -> str:
    metadata, schedule = migrated.metadata, migrated.spec.schedule
    runs = _runs(migrated)
    path = write_metadata(folder, metadata)
    append_record(folder, Record(
        action="migrate",
        cluster=metadata.cluster_name,
        workflow=metadata.workflow_name,
        time=int(time.time()),
        user=current_user(),
        fingerprint=migrated.fingerprint,
        migration_date=metadata.migration_epoch,
        partition=metadata.partition,
        reference=schedule.reference_time.seconds,
        recurrence_seconds=schedule.recurrence_seconds,
        last_legacy_run=runs.last_legacy_run,
        first_new_run=runs.first_new_run,
    ))
    return path


def _print_wave(candidates: Sequence[Candidate], dry_run: bool) -> None:
    rows = []
    for candidate in candidates:
        status = candidate.status
        if candidate.written:
            status += " (written)"
        elif dry_run and status in ("migratable", "caveats"):
            status += " (dry run)"
        first = iso_time(candidate.handover.first_new_run) if candidate.handover else ""
        rows.append([candidate.workflow, status, first, "; ".join(candidate.notes)])
    print_table(["WORKFLOW", "STATUS", "FIRST AIRFLOW RUN", "NOTES"], rows)
    counts: dict[str, int] = {}
    for candidate in candidates:
        counts[candidate.status] = counts.get(candidate.status, 0) + 1
    print(", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or
          "no workflow matched")


def _candidate_json(candidate: Candidate) -> dict[str, Any]:
    runs = candidate.handover
    return {
        "workflow": candidate.workflow,
        "status": candidate.status,
        "notes": candidate.notes,
        "written": candidate.written,
        "path": candidate.path or None,
        "fingerprint": candidate.fingerprint or None,
        "last_legacy_run": iso_time(runs.last_legacy_run) or None if runs else None,
        "first_new_run": iso_time(runs.first_new_run) if runs else None,
    }


def _handover_fields(metadata: MigrationMetadata, runs: Handover) -> list[tuple[str, str]]:
    return [
        ("migration date", iso_time(metadata.migration_epoch)),
        ("last legacy run", iso_time(runs.last_legacy_run) or NO_LEGACY_RUN),
        ("first new run", iso_time(runs.first_new_run)),
    ]


def _epoch(value: datetime) -> int:
    return int(value.astimezone(UTC).timestamp())
