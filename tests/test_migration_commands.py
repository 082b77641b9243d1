"""migrate (one workflow and waves), rollback and migrations list/report: against a real
server over copies of the example repos, and the single-workflow migrate against a fake."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_client import CLUSTER, FakeTokenFetcher, Server, make_spec

from tests.helpers import error_line, example_clusters, replace_file, wait_for
from token_fetcher.cli import build_parser
from token_fetcher.client import TokenFetcherClient
from token_fetcher.handovers import handover, rollback_handover
from token_fetcher.migration import MigrationMetadata, read_metadata
from token_fetcher.migration_record import RECORD_FILE, read_records

Run = Callable[..., tuple[int, str, str]]
JSON = "example_json"
BROKEN = "json_table_sync"  # made unparsable in the copy the wave tests serve
GOOD = ["json_daily_rollup", "json_heartbeat", "json_weekly_compaction"]


def iso(epoch: int | None) -> str:
    return f"{datetime.fromtimestamp(epoch, UTC):%Y-%m-%dT%H:%M:%SZ}"


def make_run(target: str, capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*argv: str) -> tuple[int, str, str]:
        parser = build_parser()
        args = parser.parse_args(list(argv))
        if getattr(args, "target", None) is not None:
            args.target, args.timeout = target, 10.0
        code = args.func(args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


# --- the single-workflow migrate against a fake server (moved from test_client_cli.py) -


@pytest.fixture
def fake() -> Iterator[FakeTokenFetcher]:
    """A fake server with one workflow, alpha (the fake lives on as ``fake.server``)."""
    fake = FakeTokenFetcher()
    fake.put(make_spec("alpha"))
    fake.server = Server(fake)
    yield fake
    fake.server.stop()


@pytest.fixture
def fake_run(fake: FakeTokenFetcher, capsys: pytest.CaptureFixture[str]) -> Run:
    return make_run(fake.server.target, capsys)


def migrate_args(folder, date: str = "2020-03-01 12:00:00", workflow: str = "alpha") -> list[str]:
    return [
        "migrate",
        "--cluster",
        CLUSTER,
        "--workflow",
        workflow,
        "--migration-date",
        date,
        "--metadata-dir",
        str(folder),
    ]


def test_migrate_writes_the_metadata_file_and_prints_the_handover(fake_run: Run, tmp_path) -> None:
    code, out, _ = fake_run(*migrate_args(tmp_path))
    assert code == 0
    path = tmp_path / CLUSTER / "alpha.json"
    assert read_metadata(path) == MigrationMetadata(
        CLUSTER, "alpha", datetime(2020, 3, 1, 12, tzinfo=UTC)
    )
    assert f"wrote {path}" in out
    assert "2020-03-02T00:00:00Z" in out

    code, out, _ = fake_run(*migrate_args(tmp_path), "--json")  # same date again: fine
    assert code == 0
    assert json.loads(out)["first_new_run"] == "2020-03-02T00:00:00Z"


def test_migrate_will_not_move_a_migration_date_without_force(fake_run: Run, tmp_path) -> None:
    assert fake_run(*migrate_args(tmp_path))[0] == 0
    code, _, err = fake_run(*migrate_args(tmp_path, date="2020-04-01 00:00:00"))
    assert code == 1
    assert "--force" in error_line(err)
    assert read_metadata(tmp_path / CLUSTER / "alpha.json").migration_date.month == 3

    assert fake_run(*migrate_args(tmp_path, date="2020-04-01 00:00:00"), "--force")[0] == 0
    assert read_metadata(tmp_path / CLUSTER / "alpha.json").migration_date.month == 4


@pytest.mark.parametrize(
    ("workflow", "message"),
    [("broken", "FAILED_PRECONDITION: broken: SyntaxError"), ("nope", "NOT_FOUND")],
)
def test_migrate_refuses_missing_or_broken_workflows(
    fake_run: Run, fake: FakeTokenFetcher, tmp_path, workflow: str, message: str
) -> None:
    fake.put(make_spec("broken"))
    fake.broken.add((CLUSTER, "broken"))
    code, out, err = fake_run(*migrate_args(tmp_path, workflow=workflow))
    assert (code, out) == (1, "")
    assert message in error_line(err)
    assert not (tmp_path / CLUSTER).exists()


def test_all_and_workflow_together_is_a_usage_error(fake_run: Run, tmp_path) -> None:
    code, _, err = fake_run(*migrate_args(tmp_path), "--all")
    assert code == 2
    assert "--workflow (names or globs) or --all" in error_line(err)


# --- waves, rollback and the record against a real server ------------------------------


@pytest.fixture
def json_repo(example_copy) -> Path:
    repo = example_copy("json_repo")
    (repo / "repo" / "workflow" / BROKEN / "schedule").write_text("{not json")
    return repo


@pytest.fixture
def real(start_server, json_repo: Path) -> object:
    return start_server(example_clusters(json_repo=json_repo))


@pytest.fixture
def run(real, capsys: pytest.CaptureFixture[str]) -> Run:
    return make_run(f"127.0.0.1:{real.port}", capsys)


@pytest.fixture
def meta(tmp_path) -> Path:
    """The metadata folder (tmp_path also holds the repos and the server's state)."""
    return tmp_path / "metadata"


def wave(folder: Path, *selection: str, date: str = "2020-01-01 00:00:00") -> list[str]:
    return ["migrate", "--cluster", JSON, *selection, "--migration-date", date,
            "--metadata-dir", str(folder)]


def schedule_of(real, workflow: str) -> tuple[int, int]:
    with TokenFetcherClient(f"127.0.0.1:{real.port}") as client:
        schedule = client.get_spec(JSON, workflow).spec.schedule
    return schedule.reference_time.seconds, schedule.recurrence_seconds


def test_a_dry_run_wave_names_the_blocked_and_writes_nothing(run: Run, meta) -> None:
    code, out, _ = run(*wave(meta, "--all", "--dry-run"))
    assert code == 3
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert sorted(lines) == sorted([*GOOD, BROKEN])
    assert " blocked " in lines[BROKEN] and "broken:" in lines[BROKEN]
    for name in GOOD:
        assert "(dry run)" in lines[name]
    assert not meta.exists()

    code, out, _ = run(*wave(meta, "--all", "--dry-run", "--json"))
    assert code == 3
    statuses = {item["workflow"]: item for item in json.loads(out)["workflows"]}
    assert statuses[BROKEN]["status"] == "blocked"
    assert statuses[BROKEN]["notes"][0].startswith("broken: ")
    assert {statuses[name]["status"] for name in GOOD} <= {"migratable", "caveats"}
    assert not any(item["written"] for item in statuses.values())


def test_a_wave_migrates_the_good_and_records_each(run: Run, real, meta) -> None:
    code, out, _ = run(*wave(meta, "--all", "--json"))
    assert code == 3
    result = {item["workflow"]: item for item in json.loads(out)["workflows"]}
    assert not result[BROKEN]["written"]
    for name in GOOD:
        assert result[name]["written"]
        metadata = read_metadata(meta / JSON / f"{name}.json")
        assert metadata.migration_date == datetime(2020, 1, 1, tzinfo=UTC)
        reference, recurrence = schedule_of(real, name)
        runs = handover(reference, recurrence, metadata.migration_epoch)
        assert result[name]["first_new_run"] == iso(runs.first_new_run)
    assert not (meta / JSON / f"{BROKEN}.json").exists()
    records, errors = read_records(meta)
    assert errors == []
    assert sorted(record.workflow for record in records) == GOOD
    assert {record.action for record in records} == {"migrate"}

    # Again: nothing to do for the migrated ones, and nothing recorded twice.
    code, out, _ = run(*wave(meta, "--all"))
    assert code == 3
    assert out.splitlines()[-1] == "1 blocked, 3 migrated"
    assert len(read_records(meta)[0]) == len(GOOD)


def test_a_glob_and_an_unknown_name(run: Run, meta) -> None:
    code, out, _ = run(*wave(meta, "--workflow", "json_*_r*", "--workflow", "nope"))
    assert code == 3
    assert "json_daily_rollup" in out and "json_heartbeat" not in out
    assert "no such workflow in the cluster" in out
    assert (meta / JSON / "json_daily_rollup.json").exists()

    code, out, _ = run(*wave(meta, "--workflow", "json_heart*"))
    assert code == 0
    assert (meta / JSON / "json_heartbeat.json").exists()


def test_rollback_then_migrate_again(run: Run, real, meta) -> None:
    name = "json_daily_rollup"
    reference, recurrence = schedule_of(real, name)
    assert run(*wave(meta, "--workflow", name))[0] == 0
    path = meta / JSON / f"{name}.json"
    migrated = read_metadata(path)

    rollback = ["rollback", "--cluster", JSON, "--workflow", name, "--metadata-dir",
                str(meta), "--rollback-date"]
    code, out, _ = run(*rollback, "2020-01-10T12:00:00Z", "--json")
    assert code == 0, out
    rolled = read_metadata(path)
    assert rolled.rollback_date == datetime(2020, 1, 10, 12, tzinfo=UTC)
    assert rolled.migration_date == migrated.migration_date
    back = rollback_handover(reference, recurrence, migrated.migration_epoch,
                             rolled.rollback_epoch)
    answer = json.loads(out)
    assert answer["last_new_run"] == iso(back.last_new_run)
    assert answer["first_legacy_run"] == iso(back.first_legacy_run)

    # The same rollback again is fine; another date is not; nor is a date before the migration.
    code, out, _ = run(*rollback, "2020-01-10 12:00:00")
    assert code == 0 and "last Airflow run" in out and "first Pinball run" in out
    code, _, err = run(*rollback, "2020-01-11 00:00:00")
    assert code == 1 and "already rolled back on 2020-01-10T12:00:00Z" in error_line(err)

    # Migrating again before the rollback date would run some grid points twice.
    code, out, _ = run(*wave(meta, "--workflow", name, date="2020-01-05 00:00:00"))
    assert code == 1
    code, _, _ = run(*wave(meta, "--workflow", name, date="2020-02-01 00:00:00"))
    assert code == 0
    again = read_metadata(path)
    assert (again.migration_date, again.rollback_date) == (datetime(2020, 2, 1, tzinfo=UTC), None)
    assert [record.action for record in read_records(meta)[0]] == [
        "migrate", "rollback", "rollback", "migrate"]


def test_rollback_refusals(run: Run, meta) -> None:
    base = ["rollback", "--cluster", JSON, "--workflow", "json_heartbeat", "--metadata-dir",
            str(meta), "--rollback-date"]
    code, _, err = run(*base, "2020-01-10 00:00:00")
    assert code == 1 and "is not migrated" in error_line(err)
    assert run(*wave(meta, "--workflow", "json_heartbeat"))[0] == 0
    code, _, err = run(*base, "2019-12-31 00:00:00")
    assert code == 2
    assert "rollback_date 2019-12-31 00:00:00 is before migration_date" in error_line(err)
    code, _, err = run(*base, "tomorrow")
    assert code == 2 and "'tomorrow' is not a date and time" in error_line(err)


def test_migrations_list(run: Run, meta) -> None:
    assert run(*wave(meta, "--workflow", "json_heartbeat"))[0] == 0
    assert run("rollback", "--cluster", JSON, "--workflow", "json_heartbeat", "--metadata-dir",
               str(meta), "--rollback-date", "2020-01-03 00:00:00")[0] == 0
    code, out, _ = run("migrations", "list", "--metadata-dir", str(meta))
    assert code == 0
    header, first, second = out.splitlines()
    assert header.split()[:3] == ["TIME", "ACTION", "WORKFLOW"]
    assert "migrate" in first and "Airflow from 2020-01-01T" in first
    assert "rollback" in second and "Pinball from 2020-01-03T" in second

    code, out, _ = run("migrations", "list", "--metadata-dir", str(meta), "--json")
    documents = [json.loads(line) for line in out.splitlines()]
    assert [d["action"] for d in documents] == ["migrate", "rollback"]
    assert documents[1]["rollback_date"] == "2020-01-03T00:00:00Z"
    assert "@" in documents[0]["user"]

    with open(meta / RECORD_FILE, "a") as handle:
        handle.write('{"action": "migrate"}\n')
    code, out, err = run("migrations", "list", "--metadata-dir", str(meta), "--workflow",
                         "other")
    assert code == 1
    assert f"{meta / RECORD_FILE}:3: missing" in error_line(err)


def test_the_report(run: Run, json_repo: Path, real, meta) -> None:
    assert run(*wave(meta, "--all"))[0] == 3
    assert run("rollback", "--cluster", JSON, "--workflow", "json_heartbeat", "--metadata-dir",
               str(meta), "--rollback-date", "2020-01-03 00:00:00")[0] == 0
    # A migrated workflow's definition changes afterwards.
    with TokenFetcherClient(f"127.0.0.1:{real.port}", cache_ttl=0) as client:
        before = client.get_spec(JSON, "json_weekly_compaction").fingerprint
        job = json_repo / "repo" / "workflow" / "json_weekly_compaction" / "job" / "VacuumTablesJob"
        replace_file(job, '"max_attempts": 1', '"max_attempts": 5')
        wait_for(lambda: client.get_spec(JSON, "json_weekly_compaction").fingerprint != before,
                 message="the changed definition to be served")

    page = meta.parent / "report.html"
    code, out, _ = run("migrations", "report", "--metadata-dir", str(meta), "--html",
                       str(page))
    assert code == 0
    assert out.startswith(f"wrote {page}: 2 migrated, 1 rolled back, 1 blocked")
    html = page.read_text()
    assert '<svg id="migrations-chart"' in html and "<circle" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "<script" not in html
    assert "Cluster example_json" in html
    # json_heartbeat runs every 30 minutes from 00:15: Airflow to 2020-01-02 23:45.
    assert "Airflow to 2020-01-02T23:45:00Z; Pinball from 2020-01-03T00:15:00Z" in html
    assert "changed <code>" in html


def test_migrate_records_a_partition_and_a_move_needs_no_force(run: Run, meta) -> None:
    path = meta / JSON / "json_heartbeat.json"
    assert run(*wave(meta, "--workflow", "json_heartbeat", "--partition", "east"))[0] == 0
    assert read_metadata(path).partition == "east"
    # Same date, another partition: the DAG moves, its runs stay; no --force needed.
    code, out, _ = run(*wave(meta, "--workflow", "json_heartbeat", "--partition", "west"))
    assert code == 0, out
    assert read_metadata(path).partition == "west"
    # The rollback keeps the partition: the same processor stops the DAG.
    assert run("rollback", "--cluster", JSON, "--workflow", "json_heartbeat", "--metadata-dir",
               str(meta), "--rollback-date", "2020-01-03 00:00:00")[0] == 0
    assert read_metadata(path).partition == "west"
    assert [record.partition for record in read_records(meta)[0]] == ["east", "west", "west"]


def test_a_wave_does_not_move_migration_dates_without_force(run: Run, meta) -> None:
    assert run(*wave(meta, "--workflow", "json_heartbeat"))[0] == 0
    code, out, _ = run(*wave(meta, "--workflow", "json_h*", "--json",
                             date="2020-02-01 00:00:00"))
    assert code == 3
    [item] = json.loads(out)["workflows"]
    assert item["status"] == "blocked" and "--force" in item["notes"][0]
    assert read_metadata(meta / JSON / "json_heartbeat.json").migration_date.month == 1
    code, out, _ = run(*wave(meta, "--workflow", "json_h*", "--force",
                             date="2020-02-01 00:00:00"))
    assert code == 0
    assert read_metadata(meta / JSON / "json_heartbeat.json").migration_date.month == 2
