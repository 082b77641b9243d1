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
import json
import sys
import threading
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.cli.connection import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNWELL,
    UsageError,
    client_parents,
    parse_run_time,
    run_client,
)
from token_fetcher.cli.formats import (
    event_line,
    every_text,
    optional_when,
    print_clusters,
    print_errors,
    print_json,
    schedule_text,
    status_name,
    when,
    with_workflow,
)
from token_fetcher.cli.output import (
    NO_LEGACY_RUN,
    print_fields,
    print_line,
    print_table,
)
from token_fetcher.client import (
    TokenFetcherClient,
    Unavailable,
    WorkflowWatch,
)
from token_fetcher.migration import MigrationMetadata, parse_metadata, read_metadata

__all__ = ["register"]

_UNWELL = frozenset({pb.PARSE_STATUS_STALE, pb.PARSE_STATUS_BROKEN})


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
            print_json(answer)
            return EXIT_UNWELL if unwell else EXIT_OK
        rows = [
            [
                summary.name,
                # dynamic: the layout changes by itself (docs/operations.md, section 6)
                status_name(summary.status) + (", dynamic" if summary.dynamic else ""),
                str(summary.job_count),
                (every_text(summary.schedule.recurrence_seconds)
                 if summary.HasField("schedule") else ""),
                optional_when(summary.schedule, "next_run_time", missing=""),
                summary.fingerprint[:12],
            ]
            for summary in answer.workflows
        ]
        print_table(["NAME", "STATUS", "JOBS", "EVERY", "NEXT RUN", "FINGERPRINT"], rows)
        errors = [*answer.cluster_errors]
        for summary in answer.workflows:
            errors += [with_workflow(error, summary.name) for error in summary.errors]
        print_errors(errors)
        return EXIT_UNWELL if unwell else EXIT_OK

    return run_client(args, run)


def get_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        result = client.get_spec(args.cluster, args.workflow, args.fingerprint)
        if args.json:
            print_json(
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
                ("status", status_name(result.status)),
                ("schedule", schedule_text(spec.schedule)),
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
        print_errors(result.errors)

    return run_client(args, run)


def tokens_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        answer = client.get_job_tokens(
            args.cluster,
            args.workflow,
            parse_run_time(args.run_time),
            fingerprint=args.fingerprint,
            jobs=args.job,
            manual=args.manual,
        )
        if args.json:
            print_json(answer)
            return
        print_fields(
            [
                ("workflow", f"{answer.cluster}/{answer.workflow}"),
                ("fingerprint", answer.fingerprint),
                ("run time", when(answer.run_time)),
                ("instance", answer.instance),
                ("end date", answer.end_date),
                ("status", status_name(answer.status)),
            ]
        )
        print()
        rows = [[token.job, token.name, token.command] for token in answer.jobs]
        print_table(["JOB", "TOKEN", "COMMAND"], rows)

    return run_client(args, run)


def resolve_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> None:
        answer = client.resolve_migration(_metadata_from_args(args))
        if args.json:
            print_json(answer)
            return
        print_fields(
            [
                ("workflow", f"{answer.spec.cluster}/{answer.spec.name}"),
                ("fingerprint", answer.fingerprint),
                ("status", status_name(answer.status)),
                ("jobs", str(len(answer.spec.jobs))),
                ("schedule", schedule_text(answer.spec.schedule)),
                ("migration date", when(answer.handover.migration_time)),
                ("last legacy run",
                 optional_when(answer.handover, "last_legacy_run_time", NO_LEGACY_RUN)),
                ("first new run", when(answer.handover.first_new_run_time)),
            ]
        )
        print_errors(answer.errors)

    return run_client(args, run)


def info_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> int:
        info = client.server_info()
        unwell = any(
            cluster.state != pb.LOAD_STATE_READY or cluster.stale_count or cluster.broken_count
            for cluster in info.clusters
        )
        if args.json:
            print_json(info)
            return EXIT_UNWELL if unwell else EXIT_OK
        isolation = info.isolation
        print_fields(
            [
                ("version", info.version),
                ("started", when(info.start_time)),
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
        print_clusters(info.clusters)
        print_errors([error for cluster in info.clusters for error in cluster.errors])
        return EXIT_UNWELL if unwell else EXIT_OK

    return run_client(args, run)


def reload_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> int:
        answer = client.reload(args.cluster)
        cluster = answer.cluster
        unwell = bool(cluster.stale_count or cluster.broken_count)
        if args.json:
            print_json(answer)
            return EXIT_UNWELL if unwell else EXIT_OK
        print_line(
            f"{cluster.name}: {answer.added} added, {answer.changed} changed, "
            f"{answer.removed} removed, {answer.broken} broken"
        )
        print()
        print_clusters([cluster])
        print_errors(cluster.errors)
        return EXIT_UNWELL if unwell else EXIT_OK

    return run_client(args, run)


def watch_command(args: argparse.Namespace) -> int:
    def print_events(events: WorkflowWatch, failed: list[BaseException]) -> None:
        try:
            for event in events:
                if args.json:
                    print(json_format.MessageToJson(
                        event, preserving_proto_field_name=True, indent=None))
                else:
                    print_line(event_line(event))
                sys.stdout.flush()  # one line per event, as it happens, also into a pipe
        except Unavailable as exc:
            if exc.code != grpc.StatusCode.DEADLINE_EXCEEDED or args.timeout is None:
                failed.append(exc)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            failed.append(exc)

    def run(client: TokenFetcherClient) -> None:
        # The stream is read in a thread of its own, so that Ctrl-C (KeyboardInterrupt,
        # raised in the main thread) lands in join(), never inside gRPC's own code,
        # whose locks it could leave held; it then ends the stream cleanly.
        with client.watch(args.cluster, timeout=args.timeout) as events:
            failed: list[BaseException] = []
            reader = threading.Thread(target=print_events, args=(events, failed),
                                      name="watch-reader", daemon=True)
            reader.start()
            try:
                reader.join()
            except KeyboardInterrupt:
                events.cancel()
                reader.join(10)
                return
            if failed:
                raise failed[0]

    try:
        return run_client(args, run)
    except KeyboardInterrupt:  # before the stream was open
        return EXIT_OK


def health_command(args: argparse.Namespace) -> int:
    def run(client: TokenFetcherClient) -> int:
        status = client.health(args.service)
        if args.json:
            print(json.dumps({"target": args.target, "status": status}))
        else:
            print_line(f"{args.target}: {status}")
        return EXIT_OK if status == "SERVING" else EXIT_ERROR

    return run_client(args, run)


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
