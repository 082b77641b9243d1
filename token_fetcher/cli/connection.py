"""What every command that talks to a server shares: the connection options, the
client, and errors turned into one line and an exit code (0 success, 1 an error from the
server or the file system, 2 a usage error, 3 the server answered but something is
unwell)."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from token_fetcher.cli.output import print_line
from token_fetcher.client import (
    DEFAULT_TARGET,
    NotFound,
    TokenFetcherClient,
    TokenFetcherError,
    Unavailable,
)
from token_fetcher.migration import MetadataError

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNWELL",
    "EXIT_USAGE",
    "TARGET_VARIABLE",
    "CommandError",
    "UsageError",
    "client_parents",
    "connection_options",
    "fail",
    "one_line",
    "parse_run_time",
    "run_client",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNWELL = 0, 1, 2, 3
TARGET_VARIABLE = "TOKEN_FETCHER_TARGET"


class UsageError(Exception):
    """Arguments that argparse accepted but that make no sense together."""


class CommandError(Exception):
    """A refusal that is neither a usage error nor the server's (exit code 1)."""


def connection_options() -> argparse.ArgumentParser:
    """--target and the TLS options, as a parent parser for every command that talks to
    a server (its ``func`` goes through ``run_client``)."""
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


def run_client(args: argparse.Namespace,
               body: Callable[[TokenFetcherClient], int | None]) -> int:
    """Run ``body`` with a client for ``args`` (connection_options()); errors become one
    line on stderr and an exit code."""
    name = getattr(args, "client_command", "token-fetcher")
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
                return fail(name, EXIT_ERROR, f"{exc}{_suggestion(client, args, exc)}")
    except (UsageError, MetadataError, ValueError) as exc:
        return fail(name, EXIT_USAGE, str(exc))
    except Unavailable as exc:
        # Not for the server's own UNAVAILABLE answers (a cluster still loading, a drain).
        unreachable = "failed to connect" in exc.details or (
            exc.code == grpc.StatusCode.DEADLINE_EXCEEDED)
        hint = (f" (is a server running at {args.target}? give its address with --target "
                f"HOST:PORT or ${TARGET_VARIABLE})") if unreachable else ""
        return fail(name, EXIT_ERROR, f"{exc}{hint}")
    except BrokenPipeError:
        raise  # the reader went away: not an error to report (see cli.main)
    except (TokenFetcherError, CommandError, OSError) as exc:
        return fail(name, EXIT_ERROR, str(exc))


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces as single spaces."""
    return " ".join(text.split())


def fail(command: str, code: int, message: str) -> int:
    """Say ``message`` on stderr, naming the command, and return ``code``: one line, even
    when the server's message (a parse error, say) has several."""
    print_line(f"token-fetcher {command}: error: {one_line(message)}", file=sys.stderr)
    return code


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


def parse_run_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--run-time {value!r} is not an ISO 8601 date and time") from None
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)
