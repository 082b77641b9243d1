"""The ``token-fetcher`` command: server commands and client commands.

Server commands import the server only when used, so the client commands stay as thin
as the client library.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Iterator

from token_fetcher import __version__
from token_fetcher.cli import (
    airflow_commands,
    client_commands,
    compare_command,
    migration_commands,
    resource_commands,
    server_commands,
)

# What a shell reports for a command killed by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="token-fetcher",
        description="Serve legacy Pinball workflows as typed specs and job tokens over gRPC.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server_commands.register(subparsers)
    client_commands.register(subparsers)
    migration_commands.register(subparsers)
    airflow_commands.register(subparsers)
    compare_command.register(subparsers)
    resource_commands.register(subparsers)
    return parser


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every subcommand's parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def _reject_unknown_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> None:
    """Report an unknown option before any missing required one: argparse checks
    required options first, so ``--clustr x`` would be reported as a missing --cluster.
    A close match is suggested."""
    required = [action for each in _parsers(parser) for action in each._actions
                if action.required]
    for action in required:
        action.required = False
    try:
        args, unknown = parser.parse_known_args(argv)
    finally:
        for action in required:
            action.required = True
    if not unknown:
        return
    path = tuple(name for name in (getattr(args, "command", None),
                                   getattr(args, "airflow_command", None)) if name)
    by_path = {tuple(each.prog.split()[1:]): each for each in _parsers(parser)}
    command = by_path.get(path, parser)
    options = [option for action in command._actions for option in action.option_strings]
    message = f"unrecognized arguments: {' '.join(unknown)}"
    close = difflib.get_close_matches(unknown[0].split("=")[0], options, n=1)
    if close:
        message += f" (did you mean {close[0]}?)"
    command.error(message)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _reject_unknown_options(parser, argv)
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`token-fetcher list | head -1`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
