"""Migration commands: migrate (one workflow or a wave), rollback, migrations list/report.

``migrate`` and ``rollback`` write metadata files and append to the migration record
beside them (token_fetcher.migration_record); ``migrations list`` reads the record and
``migrations report`` renders it with the server's current view as one HTML page.
Exit codes as for the client commands (0 success, 1 an error, 2 a usage error), and 3
when a wave or its dry run found blocked workflows (the others are still migrated).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from token_fetcher import report
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.cli.connection import (
    EXIT_ERROR,
    EXIT_OK,
    CommandError,
    UsageError,
    client_parents,
    run_client,
)
from token_fetcher.cli.output import NO_LEGACY_RUN, iso_time, print_fields, print_table
from token_fetcher.client import MigratedWorkflow, TokenFetcherClient, TokenFetcherError
from token_fetcher.handovers import Handover, rollback_handover
from token_fetcher.metadata_discovery import discover_metadata
from token_fetcher.migration import (
    MigrationMetadata,
    metadata_path,
    parse_date,
    read_metadata,
    write_metadata,
)
from token_fetcher.migration_record import Record, append_record, current_user, read_records
from token_fetcher.migration_wave import Candidate, existing_problem, is_glob, preflight

__all__ = ["EXIT_BLOCKED", "register"]

EXIT_BLOCKED = 3
_NO_AIRFLOW = "none (rolled back before Airflow's first run)"


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


# --- migrate ------------------------------------------------------------------------


def _is_single(args: argparse.Namespace) -> bool:
    return (not args.all and not args.dry_run and len(args.workflow) == 1
            and not is_glob(args.workflow[0]))


def migrate_command(args: argparse.Namespace) -> int:
    if args.all == bool(args.workflow):
        return _usage(args, "give --workflow (names or globs) or --all, not both")
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
        candidate.status, candidate.notes = "blocked", [_one_line(str(exc))]
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


# --- rollback -----------------------------------------------------------------------


def rollback_command(args: argparse.Namespace) -> int:
    return run_client(args, lambda client: _rollback(client, args))


def _rollback(client: TokenFetcherClient, args: argparse.Namespace) -> None:
    path = metadata_path(args.metadata_dir, args.cluster, args.workflow)
    if not os.path.exists(path):
        raise CommandError(f"{path} does not exist: {args.cluster}/{args.workflow} is not "
                           "migrated")
    current = read_metadata(path)
    # MigrationMetadata refuses a rollback date before the migration date.
    rolled = dataclasses.replace(current, rollback_date=parse_date(args.rollback_date,
                                                                   "--rollback-date"))
    if current.rollback_date is not None and current.rollback_date != rolled.rollback_date:
        raise CommandError(f"{path} was already rolled back on {iso_time(current.rollback_epoch)}")
    fingerprint, reference, recurrence = _schedule_for_rollback(client, args.metadata_dir,
                                                                current)
    assert rolled.rollback_epoch is not None
    back = rollback_handover(reference, recurrence, rolled.migration_epoch, rolled.rollback_epoch)
    written = write_metadata(args.metadata_dir, rolled)
    append_record(args.metadata_dir, Record(
        action="rollback",
        cluster=rolled.cluster_name,
        workflow=rolled.workflow_name,
        time=int(time.time()),
        user=current_user(),
        fingerprint=fingerprint,
        migration_date=rolled.migration_epoch,
        partition=rolled.partition,
        reference=reference,
        recurrence_seconds=recurrence,
        rollback_date=rolled.rollback_epoch,
        last_new_run=back.last_new_run,
        first_legacy_run=back.first_legacy_run,
    ))
    if args.json:
        print(json.dumps(
            {
                "path": written,
                "fingerprint": fingerprint,
                "migration_date": iso_time(rolled.migration_epoch),
                "rollback_date": iso_time(rolled.rollback_epoch),
                "last_new_run": iso_time(back.last_new_run) or None,
                "first_legacy_run": iso_time(back.first_legacy_run),
            },
            indent=2,
        ))
        return
    print(f"wrote {written}")
    print_fields([
        ("migration date", iso_time(rolled.migration_epoch)),
        ("rollback date", iso_time(rolled.rollback_epoch)),
        ("last Airflow run", iso_time(back.last_new_run) or _NO_AIRFLOW),
        ("first Pinball run", iso_time(back.first_legacy_run)),
    ])


def _schedule_for_rollback(client: TokenFetcherClient, folder: str,
                           metadata: MigrationMetadata) -> tuple[str, int, int]:
    """(fingerprint, reference, recurrence) of the schedule Airflow runs: the server's,
    or, when the server cannot give one (the workflow broke, say), the one recorded at
    its migration."""
    try:
        migrated = client.migrated_workflow(metadata)
        schedule = migrated.spec.schedule
        return migrated.fingerprint, schedule.reference_time.seconds, schedule.recurrence_seconds
    except TokenFetcherError as exc:
        records, _ = read_records(folder)
        for record in reversed(records):
            if (record.action, record.cluster, record.workflow) == (
                    "migrate", metadata.cluster_name, metadata.workflow_name):
                return record.fingerprint, record.reference, record.recurrence_seconds
        raise CommandError(f"{exc}; and the migration record has no schedule for "
                           f"{metadata.cluster_name}/{metadata.workflow_name}") from None


# --- migrations list / report -------------------------------------------------------


def list_command(args: argparse.Namespace) -> int:
    try:
        records, errors = read_records(args.metadata_dir)
    except OSError as exc:
        return _fail(args, EXIT_ERROR, exc)
    records = [record for record in records
               if args.cluster in (None, record.cluster) and args.workflow in (None,
                                                                                record.workflow)]
    if args.json:
        for record in records:
            print(record.to_json())
    else:
        rows = [
            [
                iso_time(record.time),
                record.action,
                f"{record.cluster}/{record.workflow}",
                record.user,
                iso_time(record.migration_date),
                iso_time(record.rollback_date),
                record.fingerprint[:12],
                _record_handover(record),
            ]
            for record in records
        ]
        print_table(["TIME", "ACTION", "WORKFLOW", "USER", "MIGRATION DATE", "ROLLBACK DATE",
                      "FINGERPRINT", "HANDOVER"], rows)
    for error in errors:
        print(f"token-fetcher migrations list: error: {error}", file=sys.stderr)
    return EXIT_ERROR if errors else EXIT_OK


def _record_handover(record: Record) -> str:
    if record.action == "migrate":
        return (f"Pinball to {iso_time(record.last_legacy_run) or 'none'}, "
                f"Airflow from {iso_time(record.first_new_run)}")
    return (f"Airflow to {iso_time(record.last_new_run) or 'none'}, "
            f"Pinball from {iso_time(record.first_legacy_run)}")


def report_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        discovery = discover_metadata(args.metadata_dir)
        records, record_errors = read_records(args.metadata_dir)
        clusters = sorted({entry.cluster_name for entry in discovery.entries}
                          | {record.cluster for record in records})
        answers: dict[str, pb.ListWorkflowsResponse | str] = {}
        for cluster in clusters:
            try:
                answers[cluster] = client.list_workflows(cluster)
            except TokenFetcherError as exc:
                answers[cluster] = _one_line(str(exc))
        problems = [str(error) for error in (*discovery.errors, *record_errors)]
        page = report.build_report(discovery.entries, records, answers, problems,
                                   now=int(time.time()))
        report.write_html(args.html, page)
        print(f"wrote {args.html}: " + ", ".join(
            f"{count} {status}" for status, count in page.counts.items()))

    return run_client(args, run)


# --- plumbing -----------------------------------------------------------------------


def _handover_fields(metadata: MigrationMetadata, runs: Handover) -> list[tuple[str, str]]:
    return [
        ("migration date", iso_time(metadata.migration_epoch)),
        ("last legacy run", iso_time(runs.last_legacy_run) or NO_LEGACY_RUN),
        ("first new run", iso_time(runs.first_new_run)),
    ]


def _epoch(value: datetime) -> int:
    return int(value.astimezone(UTC).timestamp())


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _usage(args: argparse.Namespace, message: str) -> int:
    return _fail(args, 2, UsageError(message))


def _fail(args: argparse.Namespace, code: int, exc: BaseException) -> int:
    print(f"token-fetcher {args.client_command}: error: {_one_line(str(exc))}", file=sys.stderr)
    return code
