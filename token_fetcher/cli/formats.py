"""How the client commands show the server's messages on a terminal (control characters
escaped, so nothing a definition names can drive the terminal)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format

from legacy_parser.control_characters import escape_control_characters
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.cli.output import iso_time, print_line, print_table

__all__ = [
    "event_line",
    "every_text",
    "optional_when",
    "print_clusters",
    "print_errors",
    "print_json",
    "schedule_text",
    "status_name",
    "when",
    "with_workflow",
]


def print_json(message: Any) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True))


def print_clusters(clusters: Iterable[pb.ClusterInfo]) -> None:
    rows = [
        [
            cluster.name,
            pb.LoadState.Name(cluster.state).removeprefix("LOAD_STATE_"),
            str(cluster.workflow_count),
            str(cluster.ok_count),
            str(cluster.stale_count),
            str(cluster.broken_count),
            str(cluster.job_count),
            optional_when(cluster, "last_load_time", missing=""),
            f"{cluster.last_load_duration_seconds:.2f} s",
        ]
        for cluster in clusters
    ]
    print_table(
        ["CLUSTER", "STATE", "WORKFLOWS", "OK", "STALE", "BROKEN", "JOBS", "LOADED", "TOOK"], rows
    )


def with_workflow(error: pb.ParseError, workflow: str) -> pb.ParseError:
    if error.workflow:
        return error
    named = pb.ParseError()
    named.CopyFrom(error)
    named.workflow = workflow
    return named


def print_errors(errors: Iterable[pb.ParseError]) -> None:
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


def event_line(event: pb.WorkflowEvent) -> str:
    kind = pb.WorkflowEvent.Type.Name(event.type).removeprefix("TYPE_")
    if event.type == pb.WorkflowEvent.TYPE_SUBSCRIBED:
        return f"{when(event.event_time)} SUBSCRIBED {event.cluster or '(all clusters)'}"
    line = f"{when(event.event_time)} {kind} {event.cluster}/{event.workflow}"
    if event.old_fingerprint or event.new_fingerprint:
        line += f" {event.old_fingerprint[:12] or '-'} -> {event.new_fingerprint[:12] or '-'}"
    for error in event.errors:
        where = f"{error.file}:{error.line}" if error.file else ""
        line += f" [{pb.ErrorKind.Name(error.kind).removeprefix('ERROR_KIND_')} {where}]"
    return line


def when(timestamp: Any) -> str:
    return iso_time(timestamp.seconds)


def optional_when(message: Any, field: str, missing: str) -> str:
    return when(getattr(message, field)) if message.HasField(field) else missing


def status_name(status: int) -> str:
    return pb.ParseStatus.Name(status).removeprefix("PARSE_STATUS_")


def every_text(seconds: int) -> str:
    # Pinball's own units, largest first (w, d, H, M), else plain seconds.
    for unit, size in (("w", 604_800), ("d", 86_400), ("H", 3_600), ("M", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def schedule_text(schedule: pb.Schedule) -> str:
    text = f"every {every_text(schedule.recurrence_seconds)} from {when(schedule.reference_time)}"
    if schedule.HasField("next_run_time"):
        text += f", next {when(schedule.next_run_time)}"
    return escape_control_characters(text)
