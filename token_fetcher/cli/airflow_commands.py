"""``token-fetcher airflow ...``: helpers for the Airflow integration.

``token-fetcher airflow write-loader DIR`` writes the loader file (the small DAG file
that builds one DAG per migration metadata file) into an Airflow dags folder; for a
large corpus several, each building a stable share of the DAGs, so that no file's parse
nears Airflow's ``dagbag_import_timeout``. Reading the
file needs no Airflow: it works from the machine that deploys the dags folder.
Exit codes: 0 success, 1 the file system refused, 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from token_fetcher.airflow import (
    DAGS_PER_LOADER_FILE,
    LOADER_FILE_NAME,
    loader_file_count,
    loader_file_share,
    loader_file_text,
    loader_files,
)
from token_fetcher.files import atomic_write_text
from token_fetcher.metadata_discovery import discover_metadata

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
            "(default <dags folder>/migrations). With several loader files "
            "(token_fetcher_dags_1_of_N.py ...), each builds the DAGs a stable hash of "
            "cluster/workflow puts in its share; loader files of another split are removed."
        ),
    )
    p.add_argument("directory", metavar="DIR", help="the Airflow dags folder")
    p.add_argument(
        "--name", default=LOADER_FILE_NAME, help=f"file name (default {LOADER_FILE_NAME})"
    )
    p.add_argument(
        "--files",
        type=int,
        metavar="N",
        help="split the DAGs across N loader files, each building a stable share (default: "
        f"one file per {DAGS_PER_LOADER_FILE:,} metadata files under --migrations-dir)",
    )
    p.add_argument(
        "--migrations-dir",
        metavar="DIR",
        help="the migration metadata folder, to size --files (default DIR/migrations)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace or remove a different file of such a name"
    )
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
    if args.files is not None and args.files < 1:
        print(f"token-fetcher: --files must be at least 1, got {args.files}", file=sys.stderr)
        return EXIT_USAGE
    files = loader_files(args.files or _sized(args), name)
    try:
        present = sorted(os.listdir(args.directory))
        # Loader files of another split would build their DAGs a second time.
        stale = {
            f: share
            for f in present
            if f not in files and (share := loader_file_share(f, name)) is not None
        }
        conflicts = [
            f
            for f in present
            if (f in files and _read(args.directory, f) not in (files[f], None))
            or (f in stale and _read(args.directory, f) != loader_file_text(*stale[f]))
        ]
        if conflicts and not args.force:
            for f in conflicts:
                print(
                    f"token-fetcher: {os.path.join(args.directory, f)} exists and differs "
                    "(use --force to replace or remove it)",
                    file=sys.stderr,
                )
            return EXIT_ERROR
        for file_name, text in files.items():
            target = os.path.join(args.directory, file_name)
            if _read(args.directory, file_name) == text:
                print(f"{target}: up to date")
                continue
            atomic_write_text(target, text, durable=False)
            print(f"wrote {target}")
        for file_name in stale:
            os.unlink(os.path.join(args.directory, file_name))
            print(f"removed {os.path.join(args.directory, file_name)} (another split)")
    except OSError as exc:
        print(f"token-fetcher: {exc.filename or args.directory}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _sized(args: argparse.Namespace) -> int:
    """One loader file per DAGS_PER_LOADER_FILE metadata files found."""
    folder = args.migrations_dir or os.path.join(args.directory, "migrations")
    found = len(discover_metadata(folder).entries) if os.path.isdir(folder) else 0
    return loader_file_count(found)


def _read(folder: str, file_name: str) -> str | None:
    try:
        with open(os.path.join(folder, file_name), encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return ""  # not a loader file
