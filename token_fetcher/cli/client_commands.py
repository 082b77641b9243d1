"""Client commands: list, get, tokens, resolve (migrate is in migration_commands).

They talk to a running server through TokenFetcherClient and import nothing from the
server side. Exit codes: 0 success, 1 an error from the server (or the file system),
2 a usage error (bad arguments, an unreadable metadata file).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.client import DEFAULT_TARGET, TokenFetcherClient, TokenFetcherError
from token_fetcher.migration import (
    MetadataError,
    MigrationMetadata,
    parse_metadata,
    read_metadata,
)

__all__ = [
    "client_options",
    "get_command",
    "list_command",
    "register",
    "resolve_command",
    "tokens_command",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
_NO_LEGACY = "none (the migration date is before the schedule's reference)"


class UsageError(Exception):
    """Arguments that argparse accepted but that make no sense together."""


class CommandError(Exception):
    """A refusal that is neither a usage error nor the server's (exit code 1)."""


def client_options() -> argparse.ArgumentParser:
    """The options of every command that talks to a server, as an argparse parent."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target", default=DEFAULT_TARGET, help=f"server HOST:PORT (default {DEFAULT_TARGET})"
    )
    common.add_argument(
        "--timeout", type=float, default=10.0, help="deadline of each call in seconds"
    )
    common.add_argument(
        "--json", action="store_true", help="print the protobuf JSON mapping (proto field names)"
    )
    return common


def register(subparsers: Any) -> None:
    """Add list, get, tokens and resolve to an argparse subparsers object."""
    common = client_options()

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        parser = subparsers.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(func=func, client_command=name)
        return parser

    p = add("list", list_command, "list a cluster's workflows")
    p.add_argument("--cluster", required=True)

    p = add("get", get_command, "show a workflow's spec")
    p.add_argument("--cluster", required=True)
    p.add_argument("--workflow", required=True)
    p.add_argument("--fingerprint", default="", help="a past or present version")

    p = add("tokens", tokens_command, "show the job tokens for one run")
    p.add_argument("--cluster", required=True)
    p.add_argument("--workflow", required=True)
    p.add_argument(
        "--run-time", required=True, help="ISO 8601, whole seconds; UTC when no offset is given"
    )
    p.add_argument("--fingerprint", default="", help="render this version of the layout")
    p.add_argument("--job", action="append", default=[], help="only this job (repeatable)")

    p = add("resolve", resolve_command, "resolve a migration: the spec and the handover")
    p.add_argument("metadata_file", nargs="?", help="a migration metadata file")
    _add_migration_options(p, required=False)


def _add_migration_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--cluster", required=required)
    parser.add_argument("--workflow", required=required)
    parser.add_argument(
        "--migration-date",
        required=required,
        help="'YYYY-MM-DD HH:MM:SS' (UTC) or ISO 8601 with an offset",
    )


# --- commands -----------------------------------------------------------------------


def list_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        answer = client.list_workflows(args.cluster)
        if args.json:
            _print_json(answer)
            return
        rows = [
            [
                summary.name,
                _status(summary.status),
                str(summary.job_count),
                _every(summary.schedule.recurrence_seconds) if summary.HasField("schedule") else "",
                _optional_when(summary.schedule, "next_run_time", missing=""),
                summary.fingerprint[:12],
            ]
            for summary in answer.workflows
        ]
        _print_table(["NAME", "STATUS", "JOBS", "EVERY", "NEXT RUN", "FINGERPRINT"], rows)
        for error in [*answer.cluster_errors, *(e for s in answer.workflows for e in s.errors)]:
            print(_parse_error(error))

    return _run(args, run)


def get_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        result = client.get_spec(args.cluster, args.workflow, args.fingerprint)
        if args.json:
            _print_json(
                pb.GetWorkflowSpecResponse(
                    fingerprint=result.fingerprint,
                    spec=result.spec,
                    status=result.status,
                    errors=result.errors,
                )
            )
            return
        spec = result.spec
        _print_fields(
            [
                ("workflow", f"{spec.cluster}/{spec.name}"),
                ("fingerprint", result.fingerprint),
                ("status", _status(result.status)),
                ("schedule", _schedule(spec.schedule)),
                (
                    "format",
                    pb.DefinitionFormat.Name(spec.format).removeprefix("DEFINITION_FORMAT_"),
                ),
                ("source", f"{spec.source.file}:{spec.source.line}"),
            ]
        )
        print()
        rows = [
            [
                job.name,
                pb.JobKind.Name(job.kind).removeprefix("JOB_KIND_"),
                ",".join(job.parents),
                "<end_date>".join(job.command.segments),
            ]
            for job in spec.jobs
        ]
        _print_table(["JOB", "KIND", "PARENTS", "COMMAND"], rows)
        for error in result.errors:
            print(_parse_error(error))

    return _run(args, run)


def tokens_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        answer = client.get_job_tokens(
            args.cluster,
            args.workflow,
            _parse_run_time(args.run_time),
            fingerprint=args.fingerprint,
            jobs=args.job,
        )
        if args.json:
            _print_json(answer)
            return
        _print_fields(
            [
                ("workflow", f"{answer.cluster}/{answer.workflow}"),
                ("fingerprint", answer.fingerprint),
                ("run time", _when(answer.run_time)),
                ("instance", answer.instance),
                ("end date", answer.end_date),
                ("status", _status(answer.status)),
            ]
        )
        print()
        rows = [[token.job, token.name, token.command] for token in answer.jobs]
        _print_table(["JOB", "TOKEN", "COMMAND"], rows)

    return _run(args, run)


def resolve_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        answer = client.resolve_migration(_metadata_from_args(args))
        if args.json:
            _print_json(answer)
            return
        _print_fields(
            [
                ("workflow", f"{answer.spec.cluster}/{answer.spec.name}"),
                ("fingerprint", answer.fingerprint),
                ("status", _status(answer.status)),
                ("jobs", str(len(answer.spec.jobs))),
                ("schedule", _schedule(answer.spec.schedule)),
                ("migration date", _when(answer.handover.migration_date)),
                ("last legacy run", _optional_when(answer.handover, "last_legacy_run", _NO_LEGACY)),
                ("first new run", _when(answer.handover.first_new_run)),
            ]
        )
        for error in answer.errors:
            print(_parse_error(error))

    return _run(args, run)


# --- plumbing -----------------------------------------------------------------------


def _run(args: argparse.Namespace, body: Callable[[TokenFetcherClient], None]) -> int:
    name = getattr(args, "client_command", "token-fetcher")

    def fail(code: int, exc: BaseException) -> int:
        # One line, even when the server's message (a parse error, say) has several.
        print(f"token-fetcher {name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return code

    try:
        with TokenFetcherClient(args.target, timeout=args.timeout, cache_ttl=0, max_stale=0) as c:
            body(c)
    except (UsageError, MetadataError, ValueError) as exc:
        return fail(EXIT_USAGE, exc)
    except (TokenFetcherError, CommandError, OSError) as exc:
        return fail(EXIT_ERROR, exc)
    return EXIT_OK


def _metadata_from_args(args: argparse.Namespace) -> MigrationMetadata:
    flags = (args.cluster, args.workflow, args.migration_date)
    if getattr(args, "metadata_file", None):
        if any(flag is not None for flag in flags):
            raise UsageError("give a metadata file or --cluster/--workflow/--migration-date")
        return read_metadata(args.metadata_file)
    if any(flag is None for flag in flags):
        raise UsageError("give a metadata file or all of --cluster, --workflow, --migration-date")
    # Through the file parser, so the command line accepts exactly what files accept.
    document = {"cluster_name": flags[0], "workflow_name": flags[1], "migration_date": flags[2]}
    return parse_metadata(json.dumps(document))


def _parse_run_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--run-time {value!r} is not an ISO 8601 date and time") from None
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


def _print_json(message: Any) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True))


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    for row in [headers, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _print_fields(fields: Sequence[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in fields)
    for label, value in fields:
        print(f"{label.ljust(width)}  {value}")


def _iso(epoch: int | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(timestamp: Any) -> str:
    return _iso(timestamp.seconds)


def _optional_when(message: Any, field: str, missing: str) -> str:
    return _when(getattr(message, field)) if message.HasField(field) else missing


def _status(status: int) -> str:
    return pb.ParseStatus.Name(status).removeprefix("PARSE_STATUS_")


def _every(seconds: int) -> str:
    # Pinball's own units, largest first (w, d, H, M), else plain seconds.
    for unit, size in (("w", 604_800), ("d", 86_400), ("H", 3_600), ("M", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _schedule(schedule: pb.Schedule) -> str:
    text = f"every {_every(schedule.recurrence_seconds)} from {_when(schedule.reference_time)}"
    if schedule.HasField("next_run_time"):
        text += f", next {_when(schedule.next_run_time)}"
    return text


def _parse_error(error: pb.ParseError) -> str:
    where = f"{error.file}:{error.line}" if error.file else f"{error.cluster}/{error.workflow}"
    kind = pb.ErrorKind.Name(error.kind).removeprefix("ERROR_KIND_")
    return f"error: {where}: {kind}: {error.message}"
