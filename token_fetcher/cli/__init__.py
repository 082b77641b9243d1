"""The ``token-fetcher`` command: server commands and client commands.

Server commands are imported only when used, so the client commands stay as thin as
the client library.
"""

from __future__ import annotations

import argparse
import sys

from token_fetcher import __version__
from token_fetcher.cli import (
    airflow_commands,
    client_commands,
    compare_command,
    migration_commands,
    resource_commands,
    server_commands,
)


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
