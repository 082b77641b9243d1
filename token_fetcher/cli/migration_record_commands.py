"""``migrations list`` and ``migrations report``: the migration record as a table, and
with the server's current view as one self-contained HTML page (token_fetcher.report)."""

from __future__ import annotations

import argparse
import sys
import time

from token_fetcher import report
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.cli.connection import EXIT_ERROR, EXIT_OK, fail, one_line, run_client
from token_fetcher.cli.output import iso_time, print_table
from token_fetcher.client import TokenFetcherClient, TokenFetcherError
from token_fetcher.metadata_discovery import discover_metadata
from token_fetcher.migration_record import Record, read_records

__all__ = ["list_command", "report_command"]


def list_command(args: argparse.Namespace) -> int:
    try:
        records, errors = read_records(args.metadata_dir)
    except OSError as exc:
        return fail(args.client_command, EXIT_ERROR, str(exc))
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
                answers[cluster] = one_line(str(exc))
        problems = [str(error) for error in (*discovery.errors, *record_errors)]
        page = report.build_report(discovery.entries, records, answers, problems,
                                   now=int(time.time()))
        report.write_html(args.html, page)
        print(f"wrote {args.html}: " + ", ".join(
            f"{count} {status}" for status, count in page.counts.items()))

    return run_client(args, run)
