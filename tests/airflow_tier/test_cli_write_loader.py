"""``token-fetcher airflow write-loader DIR``."""

from __future__ import annotations

import argparse

from token_fetcher.airflow import LOADER_FILE_NAME, loader_file_text
from token_fetcher.cli import airflow_commands


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="token-fetcher")
    airflow_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["airflow", *argv])
    return args.func(args)


def test_writes_the_loader_file(tmp_path, capsys):
    assert run("write-loader", str(tmp_path)) == 0
    written = (tmp_path / LOADER_FILE_NAME).read_text()
    assert written == loader_file_text()
    # Airflow's safe mode reads only files that mention both words.
    assert "airflow" in written.lower() and "dag" in written.lower()
    assert run("write-loader", str(tmp_path)) == 0
    assert "up to date" in capsys.readouterr().out


def test_refuses_to_replace_a_different_file_without_force(tmp_path):
    (tmp_path / LOADER_FILE_NAME).write_text("# mine\n")
    assert run("write-loader", str(tmp_path)) == 1
    assert (tmp_path / LOADER_FILE_NAME).read_text() == "# mine\n"
    assert run("write-loader", "--force", str(tmp_path)) == 0
    assert (tmp_path / LOADER_FILE_NAME).read_text() == loader_file_text()


def test_usage_errors(tmp_path):
    assert run("write-loader", str(tmp_path / "missing")) == 2
    assert run("write-loader", "--name", "x/y.py", str(tmp_path)) == 2
    assert run("write-loader", "--name", "dags.txt", str(tmp_path)) == 2
