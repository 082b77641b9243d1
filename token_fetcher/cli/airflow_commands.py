"""``token-fetcher airflow ...``: helpers for the Airflow integration.

``token-fetcher airflow write-loader DIR`` writes the loader file (the small DAG file
that builds one DAG per migration metadata file) into an Airflow dags folder. Reading the
file needs no Airflow: it works from the machine that deploys the dags folder.
Exit codes: 0 success, 1 the file system refused, 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from token_fetcher.airflow import LOADER_FILE_NAME, loader_file_text
from token_fetcher.files import atomic_write_text

__all__ = ["register", "write_loader_command"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def register(subparsers: Any) -> None:
    """Add the ``airflow`` command group to an argparse subparsers object."""
    group = subparsers.add_parser(
        "airflow",
        help="Airflow integration helpers",
        description="Helpers for running migrated workflows on Airflow (token-fetcher[airflow]).",
    )
    commands = group.add_subparsers(dest="airflow_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "write-loader",
        help="write the loader DAG file into an Airflow dags folder",
        description=(
            f"Write {LOADER_FILE_NAME} into DIR (an Airflow dags folder). It builds one DAG "
            "per migration metadata file under [token_fetcher] migrations_dir "
            "(default <dags folder>/migrations)."
        ),
    )
    p.add_argument("directory", metavar="DIR", help="the Airflow dags folder")
    p.add_argument(
        "--name", default=LOADER_FILE_NAME, help=f"file name (default {LOADER_FILE_NAME})"
    )
    p.add_argument("--force", action="store_true", help="replace a different file of that name")
    p.set_defaults(func=write_loader_command)


def write_loader_command(args: argparse.Namespace) -> int:
    name = args.name
    if os.sep in name or (os.altsep and os.altsep in name) or not name.endswith(".py"):
        print(
            f"token-fetcher: --name must be a file name ending in .py, got {name!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not os.path.isdir(args.directory):
        print(f"token-fetcher: {args.directory}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    target = os.path.join(args.directory, name)
    text = loader_file_text()
    try:
        if os.path.exists(target):
            with open(target, encoding="utf-8") as handle:
                current = handle.read()
            if current == text:
                print(f"{target}: up to date")
                return EXIT_OK
            if not args.force:
                print(
                    f"token-fetcher: {target} exists and differs (use --force to replace it)",
                    file=sys.stderr,
                )
                return EXIT_ERROR
        atomic_write_text(target, text, durable=False)
    except OSError as exc:
        print(f"token-fetcher: {target}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {target}")
    return EXIT_OK
