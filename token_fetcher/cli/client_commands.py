"""Client commands: list, get, tokens, resolve, migrate, info, reload, watch, health.

They talk to a running server through TokenFetcherClient and import nothing from the
server side. Exit codes: 0 success, 1 an error from the server (or the file system),
2 a usage error (bad arguments, an unreadable metadata file), 3 the server answered but
something is unwell: ``list``, ``info`` and ``reload`` when a workflow is BROKEN or STALE
or a cluster has not loaded. ``health`` exits 1 when the server is not SERVING, as
container health checks expect.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.cli.output import print_fields, print_line, print_table, safe
from token_fetcher.client import (
    DEFAULT_TARGET,
    NotFound,
    TokenFetcherClient,
    TokenFetcherError,
    Unavailable,
)
from token_fetcher.migration import (
    MetadataError,
    MigrationMetadata,
    parse_metadata,
    read_metadata,
)

__all__ = ["EXIT_UNWELL", "client_parents", "connection_options", "register"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNWELL = 0, 1, 2, 3
TARGET_VARIABLE = "TOKEN_FETCHER_TARGET"
_NO_LEGACY = "none (the migration date is before the schedule's reference)"
_UNWELL = frozenset({pb.PARSE_STATUS_STALE, pb.PARSE_STATUS_BROKEN})


class UsageError(Exception):
    """Arguments that argparse accepted but that make no sense together."""


class CommandError(Exception):
    """A refusal that is neither a usage error nor the server's (exit code 1)."""


def connection_options() -> argparse.ArgumentParser:
    """--target and the TLS options, as a parent parser for every command that talks to
    a server (its ``func`` goes through ``_run``)."""
    connection = argparse.ArgumentParser(add_help=False)
    default_target = os.environ.get(TARGET_VARIABLE) or DEFAULT_TARGET
    connection.add_argument(
        "--target",
        default=default_target,
        help=f"server HOST:PORT (default ${TARGET_VARIABLE}, else {DEFAULT_TARGET})",
    )
    connection.add_argument(
        "--tls", action="store_true", help="connect with TLS, trusting the system's CAs"
    )
    connection.add_argument(
        "--ca-file", help="connect with TLS, trusting this CA certificate (PEM); implies --tls"
    )
    connection.add_argument(
        "--cert-file", help="client certificate (PEM) for mutual TLS; implies --tls"
    )
    connection.add_argument("--key-file", help="the client certificate's private key (PEM)")
    return connection


def client_parents() -> list[argparse.ArgumentParser]:
    """The options of every command that talks to a server, as argparse parents: the
    connection (with --json), and the deadline of each call."""
    connection = connection_options()
    connection.add_argument(
        "--json", action="store_true", help="print the protobuf JSON mapping (proto field names)"
    )
    deadline = argparse.ArgumentParser(add_help=False)
    deadline.add_argument(
        "--timeout", type=float, default=10.0, help="deadline of each call in seconds (10)"
    )
    return [connection, deadline]


def register(subparsers: Any) -> None:
    """Add the client commands to an argparse subparsers object (migrate and rollback:
    cli.migration_commands)."""
    connection, deadline = client_parents()

    def add(name: str, func: Callable[..., int], help: str, timed: bool = True) -> Any:
        parents = [connection, deadline] if timed else [connection]
        parser = subparsers.add_parser(name, parents=parents, help=help, description=help)
        parser.set_defaults(func=func, client_command=name)
        return parser

    p = add("list", list_command, "list a cluster's workflows; exit 3 if any is BROKEN or STALE")
    p.add_argument("--cluster", required=True, help="the cluster's name in the server config")

    p = add("get", get_command, "show a workflow's spec")
    _add_workflow_options(p)
    p.add_argument("--fingerprint", default="", help="a past or present version")

    p = add("tokens", tokens_command, "show the job tokens for one run")
    _add_workflow_options(p)
    p.add_argument(
        "--run-time",
        required=True,
        help="a scheduled run: ISO 8601, whole seconds; UTC when no offset is given",
    )
    p.add_argument(
        "--manual", action="store_true", help="a run started by hand: any time, not only the "
        "schedule's runs"
    )
    p.add_argument("--fingerprint", default="", help="render this version of the layout")
    p.add_argument(
        "--job", action="append", default=[], help="only this job's token (repeatable)"
    )

    p = add("resolve", resolve_command, "resolve a migration: the spec and the handover")
    p.add_argument("metadata_file", nargs="?", help="a migration metadata file")
    _add_migration_options(p, required=False)

    add("info", info_command, "show the server's version and every cluster's load state; "
        "exit 3 if anything is unwell")

    p = add("reload", reload_command, "re-parse a cluster now and show what changed")
    p.add_argument("--cluster", required=True, help="the cluster's name in the server config")

    p = add("watch", watch_command, "print workflow changes as they happen, one line each",
            timed=False)
    p.add_argument("--cluster", default="", help="only this cluster (default: all)")
    p.add_argument(
        "--timeout", type=float, default=None, help="stop after this many seconds "
        "(default: until interrupted)"
    )

    p = add("health", health_command, "exit 0 only when the server is SERVING")
    p.add_argument("--service", default="", help="a service name (default: the server)")
    p.set_defaults(timeout=3.0)


def _add_workflow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", required=True, help="the cluster's name in the server config")
    parser.add_argument("--workflow", required=True, help="the workflow's name")


def _add_migration_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--cluster", required=required, help="the cluster's name")
    parser.add_argument("--workflow", required=required, help="the workflow's name")
    parser.add_argument(
        "--migration-date",
        required=required,
        help="'YYYY-MM-DD HH:MM:SS' (UTC) or ISO 8601 with an offset",
    )


# --- commands -----------------------------------------------------------------------


def list_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> int:
        answer = client.list_workflows(args.cluster)
        unwell = bool(answer.cluster_errors) or any(
            summary.status in _UNWELL for summary in answer.workflows
        )
        if args.json:
            _print_json(answer)
            return EXIT_UNWELL if unwell else EXIT_OK
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
        print_table(["NAME", "STATUS", "JOBS", "EVERY", "NEXT RUN", "FINGERPRINT"], rows)
        errors = [*answer.cluster_errors]
        for summary in answer.workflows:
            errors += [_with_workflow(error, summary.name) for error in summary.errors]
        _print_errors(errors)
        return EXIT_UNWELL if unwell else EXIT_OK

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
        print_fields(
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
        print_table(["JOB", "KIND", "PARENTS", "COMMAND"], rows)
        _print_errors(result.errors)

    return _run(args, run)


def tokens_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        answer = client.get_job_tokens(
            args.cluster,
            args.workflow,
            _parse_run_time(args.run_time),
            fingerprint=args.fingerprint,
            jobs=args.job,
            manual=args.manual,
        )
        if args.json:
            _print_json(answer)
            return
        print_fields(
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
        print_table(["JOB", "TOKEN", "COMMAND"], rows)

    return _run(args, run)


def resolve_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        answer = client.resolve_migration(_metadata_from_args(args))
        if args.json:
            _print_json(answer)
            return
        print_fields(
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
        _print_errors(answer.errors)

    return _run(args, run)


def info_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> int:
        info = client.server_info()
        unwell = any(
            cluster.state != pb.LOAD_STATE_READY or cluster.stale_count or cluster.broken_count
            for cluster in info.clusters
        )
        if args.json:
            _print_json(info)
            return EXIT_UNWELL if unwell else EXIT_OK
        isolation = info.isolation
        print_fields(
            [
                ("version", info.version),
                ("started", _when(info.start_time)),
                ("reload", "enabled" if info.reload_enabled else "disabled"),
                ("state store", info.state_error or "ok"),
                (
                    "isolation",
                    f"{isolation.mode or 'unknown'}: {', '.join(isolation.active_layers) or '-'}",
                ),
            ]
        )
        for missing in isolation.missing_layers:
            print_line(f"  missing: {missing}")
        print()
        _print_clusters(info.clusters)
        _print_errors([error for cluster in info.clusters for error in cluster.errors])
        return EXIT_UNWELL if unwell else EXIT_OK

    return _run(args, run)


def reload_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> int:
        answer = client.reload(args.cluster)
        cluster = answer.cluster
        unwell = bool(cluster.stale_count or cluster.broken_count)
        if args.json:
            _print_json(answer)
            return EXIT_UNWELL if unwell else EXIT_OK
        print_line(
            f"{cluster.name}: {answer.added} added, {answer.changed} changed, "
            f"{answer.removed} removed, {answer.broken} broken"
        )
        print()
        _print_clusters([cluster])
        _print_errors(cluster.errors)
        return EXIT_UNWELL if unwell else EXIT_OK

    return _run(args, run)


def watch_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        with client.watch(args.cluster, timeout=args.timeout) as events:
            try:
                for event in events:
                    if args.json:
                        print(json_format.MessageToJson(
                            event, preserving_proto_field_name=True, indent=None))
                    else:
                        print_line(_event_line(event))
                    sys.stdout.flush()  # one line per event, as it happens, also into a pipe
            except Unavailable as exc:
                if exc.code != grpc.StatusCode.DEADLINE_EXCEEDED or args.timeout is None:
                    raise

    try:
        return _run(args, run)
    except KeyboardInterrupt:
        return EXIT_OK


def health_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> int:
        status = client.health(args.service)
        if args.json:
            print(json.dumps({"target": args.target, "status": status}))
        else:
            print_line(f"{args.target}: {status}")
        return EXIT_OK if status == "SERVING" else EXIT_ERROR

    return _run(args, run)


# --- plumbing -----------------------------------------------------------------------


def _run(args: argparse.Namespace, body: Callable[[TokenFetcherClient], int | None]) -> int:
    name = getattr(args, "client_command", "token-fetcher")

    def fail(code: int, message: str) -> int:
        # One line, even when the server's message (a parse error, say) has several.
        print_line(f"token-fetcher {name}: error: {' '.join(message.split())}", file=sys.stderr)
        return code

    try:
        credentials = _credentials(args)
        with TokenFetcherClient(
            args.target,
            # watch's --timeout is the stream's (None: endless), not a unary deadline.
            timeout=args.timeout or 10.0,
            cache_ttl=0,
            max_stale=0,
            credentials=credentials,
        ) as client:
            try:
                return body(client) or EXIT_OK
            except NotFound as exc:
                return fail(EXIT_ERROR, f"{exc}{_suggestion(client, args, exc)}")
    except (UsageError, MetadataError, ValueError) as exc:
        return fail(EXIT_USAGE, str(exc))
    except Unavailable as exc:
        # Not for the server's own UNAVAILABLE answers (a cluster still loading, a drain).
        unreachable = "failed to connect" in exc.details or (
            exc.code == grpc.StatusCode.DEADLINE_EXCEEDED)
        hint = (f" (is a server running at {args.target}? give its address with --target "
                f"HOST:PORT or ${TARGET_VARIABLE})") if unreachable else ""
        return fail(EXIT_ERROR, f"{exc}{hint}")
    except BrokenPipeError:
        raise  # the reader went away: not an error to report (see cli.main)
    except (TokenFetcherError, CommandError, OSError) as exc:
        return fail(EXIT_ERROR, str(exc))


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if not (args.tls or args.ca_file or args.cert_file):
        if args.key_file:
            raise UsageError("--key-file needs --cert-file")
        return None
    if bool(args.cert_file) != bool(args.key_file):
        raise UsageError("--cert-file and --key-file go together")

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None

    return grpc.ssl_channel_credentials(
        root_certificates=read(args.ca_file),
        private_key=read(args.key_file),
        certificate_chain=read(args.cert_file),
    )


def _suggestion(client: TokenFetcherClient, args: argparse.Namespace, exc: NotFound) -> str:
    """"; did you mean ...?" for a misspelled cluster or workflow, else ""."""
    cluster, workflow = getattr(args, "cluster", None), getattr(args, "workflow", None)
    try:
        if cluster and exc.details.startswith("no cluster "):
            given, known = cluster, [c.name for c in client.server_info().clusters]
        elif cluster and workflow and exc.details.startswith("no workflow "):
            given, known = workflow, [w.name for w in client.list_workflows(cluster).workflows]
        else:
            return ""
    except TokenFetcherError:
        return ""  # the suggestion is a courtesy; the error itself is what matters
    close = difflib.get_close_matches(given, known, n=1)
    return f"; did you mean {close[0]}?" if close else ""


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


def _print_clusters(clusters: Iterable[pb.ClusterInfo]) -> None:
    rows = [
        [
            cluster.name,
            pb.LoadState.Name(cluster.state).removeprefix("LOAD_STATE_"),
            str(cluster.workflow_count),
            str(cluster.ok_count),
            str(cluster.stale_count),
            str(cluster.broken_count),
            str(cluster.job_count),
            _optional_when(cluster, "last_load_time", missing=""),
            f"{cluster.last_load_duration_seconds:.2f} s",
        ]
        for cluster in clusters
    ]
    print_table(
        ["CLUSTER", "STATE", "WORKFLOWS", "OK", "STALE", "BROKEN", "JOBS", "LOADED", "TOOK"], rows
    )


def _with_workflow(error: pb.ParseError, workflow: str) -> pb.ParseError:
    if error.workflow:
        return error
    named = pb.ParseError()
    named.CopyFrom(error)
    named.workflow = workflow
    return named


def _print_errors(errors: Iterable[pb.ParseError]) -> None:
    """One line per distinct error, naming the workflows it affects: a broken shared
    module breaks every workflow that imports it, with the same error each time."""
    affected: dict[tuple[int, str, int, str], list[str]] = {}
    for error in errors:
        key = (error.kind, error.file, error.line, error.message)
        names = affected.setdefault(key, [])
        name = f"{error.workflow}.{error.job}" if error.job else error.workflow
        if name and name not in names:
            names.append(name)
    for (kind, file, line, message), names in affected.items():
        where = f"{file}:{line}" if file else "(no file)"
        text = f"error: {where}: {pb.ErrorKind.Name(kind).removeprefix('ERROR_KIND_')}: {message}"
        if names:
            text += f" [{len(names)} affected: {', '.join(names)}]"
        print_line(" ".join(text.split()))


def _event_line(event: pb.WorkflowEvent) -> str:
    kind = pb.WorkflowEvent.Type.Name(event.type).removeprefix("TYPE_")
    if event.type == pb.WorkflowEvent.TYPE_SUBSCRIBED:
        return f"{_when(event.time)} SUBSCRIBED {event.cluster or '(all clusters)'}"
    line = f"{_when(event.time)} {kind} {event.cluster}/{event.workflow}"
    if event.old_fingerprint or event.new_fingerprint:
        line += f" {event.old_fingerprint[:12] or '-'} -> {event.new_fingerprint[:12] or '-'}"
    for error in event.errors:
        where = f"{error.file}:{error.line}" if error.file else ""
        line += f" [{pb.ErrorKind.Name(error.kind).removeprefix('ERROR_KIND_')} {where}]"
    return line


def _iso(value: datetime | int | None) -> str:
    if value is None:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    return safe(text)
