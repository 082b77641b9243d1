"""``rollback``: hand a migrated workflow back to Pinball after a date.

The metadata file gets a ``rollback_date`` and the migration record a rollback entry;
Airflow's last run and Pinball's first are printed (token_fetcher.handovers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from token_fetcher.cli.connection import CommandError, run_client
from token_fetcher.cli.output import iso_time, print_fields
from token_fetcher.client import TokenFetcherClient, TokenFetcherError
from token_fetcher.handovers import rollback_handover
from token_fetcher.migration import (
    MigrationMetadata,
    metadata_path,
    parse_date,
    read_metadata,
    write_metadata,
)
from token_fetcher.migration_record import Record, append_record, current_user, read_records

__all__ = ["rollback_command"]

_NO_AIRFLOW = "none (rolled back before Airflow's first run)"


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
