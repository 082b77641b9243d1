"""The client subcommands (list, get, tokens, resolve) against a fake server; migrate is in
test_migration_commands.py."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from test_client import CLUSTER, FakeTokenFetcher, Server, fingerprint_of, make_spec

from tests.helpers import error_line
from token_fetcher.cli import client_commands
from token_fetcher.migration import MigrationMetadata, write_metadata

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def fake() -> FakeTokenFetcher:
    fake = FakeTokenFetcher()
    for name in ("alpha", "beta"):
        fake.put(make_spec(name))
    return fake


@pytest.fixture
def server(fake: FakeTokenFetcher) -> Iterator[Server]:
    server = Server(fake)
    yield server
    server.stop()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="token-fetcher")
    subparsers = parser.add_subparsers(dest="command", required=True)
    client_commands.register(subparsers)
    return parser


@pytest.fixture
def run(server: Server, capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*argv: str, target: str | None = None) -> tuple[int, str, str]:
        args = parser().parse_args([*argv, "--target", target or server.target, "--timeout", "2"])
        code = args.func(args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_list_prints_a_table(run: Run) -> None:
    code, out, _ = run("list", "--cluster", CLUSTER)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "STATUS", "JOBS", "EVERY", "NEXT", "RUN", "FINGERPRINT"]
    assert rows[0].split() == ["alpha", "OK", "2", "1d", fingerprint_of(make_spec("alpha"))[:12]]
    assert rows[1].split()[0] == "beta"


def test_list_json_uses_proto_field_names(run: Run) -> None:
    code, out, _ = run("list", "--cluster", CLUSTER, "--json")
    assert code == 0
    answer = json.loads(out)
    assert [w["name"] for w in answer["workflows"]] == ["alpha", "beta"]
    assert answer["workflows"][0]["job_count"] == 2
    assert answer["total_size"] == 2


def test_list_unknown_cluster_is_a_server_error(run: Run) -> None:
    code, out, err = run("list", "--cluster", "nope")
    assert (code, out) == (1, "")
    assert error_line(err) == "token-fetcher list: error: NOT_FOUND: no cluster nope"


def test_get_shows_the_spec(run: Run) -> None:
    code, out, _ = run("get", "--cluster", CLUSTER, "--workflow", "alpha")
    assert code == 0
    assert "core001/alpha" in out
    assert fingerprint_of(make_spec("alpha")) in out
    assert "every 1d from 2020-01-01T00:00:00Z" in out
    assert "run extract v1 --end <end_date>" in out
    assert any(line.split()[:3] == ["load", "JOB", "extract"] for line in out.splitlines())


def test_get_json_and_a_pinned_fingerprint(run: Run, fake: FakeTokenFetcher) -> None:
    v1 = fingerprint_of(make_spec("alpha"))
    fake.put(make_spec("alpha", version=2))
    code, out, _ = run("get", "--cluster", CLUSTER, "--workflow", "alpha", "--fingerprint", v1)
    assert code == 0
    answer = json.loads(run("get", "--cluster", CLUSTER, "--workflow", "alpha", "--json")[1])
    assert answer["fingerprint"] == fingerprint_of(make_spec("alpha", version=2))
    assert answer["spec"]["jobs"][0]["template_name"] == "extract"
    assert "run extract v1" in out


def test_tokens_for_a_run(run: Run, fake: FakeTokenFetcher) -> None:
    argv = ("tokens", "--cluster", CLUSTER, "--workflow", "alpha")
    code, out, _ = run(*argv, "--run-time", "2020-03-02T00:00:00Z")
    assert code == 0
    assert "run extract v1 --end 2020-03-01" in out
    assert "/workflow/alpha/1583107200000/job/waiting/load" in out

    code, out, _ = run(*argv, "--run-time", "2020-03-02 00:00:00", "--job", "load", "--json")
    answer = json.loads(out)
    assert [job["job"] for job in answer["jobs"]] == ["load"]
    assert answer["run_time"] == "2020-03-02T00:00:00Z"
    assert answer["end_date"] == "2020-03-01"
    assert fake.requests["GetJobTokens"][-1].run_time.seconds == 1_583_107_200


@pytest.mark.parametrize("run_time", ["yesterday", "2020-03-02T00:00:00.5"])
def test_tokens_with_a_bad_run_time_is_a_usage_error(
    run: Run, fake: FakeTokenFetcher, run_time: str
) -> None:
    code, _, err = run(
        "tokens", "--cluster", CLUSTER, "--workflow", "alpha", "--run-time", run_time
    )
    assert code == 2
    assert error_line(err).startswith("token-fetcher tokens: error: ")
    assert fake.count("GetJobTokens") == 0


def test_resolve_by_flags_and_by_file(run: Run, tmp_path) -> None:
    flags = ("--cluster", CLUSTER, "--workflow", "alpha", "--migration-date", "2020-03-01 12:00:00")
    code, out, _ = run("resolve", *flags)
    assert code == 0
    fields = dict(line.split("  ", 1) for line in out.splitlines())
    assert fields["migration date"].strip() == "2020-03-01T12:00:00Z"
    assert fields["last legacy run"].strip() == "2020-03-01T00:00:00Z"
    assert fields["first new run"].strip() == "2020-03-02T00:00:00Z"

    date = datetime(2020, 3, 1, 12, tzinfo=UTC)
    path = write_metadata(tmp_path, MigrationMetadata(CLUSTER, "alpha", date))
    code, out, _ = run("resolve", path, "--json")
    assert code == 0
    handover = json.loads(out)["handover"]
    assert handover["first_new_run_time"] == "2020-03-02T00:00:00Z"
    assert handover["last_legacy_run_time"] == "2020-03-01T00:00:00Z"


@pytest.mark.parametrize(
    "argv",
    [
        ("resolve",),
        ("resolve", "--cluster", CLUSTER, "--workflow", "alpha"),
        ("resolve", "meta.json", "--cluster", CLUSTER),
        ("resolve", "--cluster", CLUSTER, "--workflow", "alpha", "--migration-date", "soon"),
        ("resolve", "/nonexistent/meta.json"),
    ],
)
def test_resolve_usage_errors(run: Run, fake: FakeTokenFetcher, argv: tuple[str, ...]) -> None:
    code, out, err = run(*argv)
    assert (code, out) == (2, "")
    assert error_line(err).startswith("token-fetcher resolve: error: ")
    assert fake.count("ResolveMigration") == 0


def test_an_unreachable_server_is_one_line_and_exit_1(run: Run, server: Server) -> None:
    server.stop()
    code, _, err = run("get", "--cluster", CLUSTER, "--workflow", "alpha")
    assert code == 1
    assert error_line(err).startswith("token-fetcher get: error: UNAVAILABLE: ")


def test_missing_required_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["tokens", "--cluster", CLUSTER, "--workflow", "alpha"])
    assert caught.value.code == 2
    assert "--run-time" in capsys.readouterr().err
