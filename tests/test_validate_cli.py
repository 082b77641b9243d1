"""``token-fetcher validate``: the report, --json, exit codes, progress, and --diff.

Most tests call the validate command in-process through ``server_commands.register`` (so
they do not depend on the client commands); one runs the installed ``token-fetcher``
entry point end to end.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from legacy_parser.model import ErrorKind, ParseResult, from_plain
from tests.helpers import write_repo
from token_fetcher.cli import server_commands

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PYTHON_YAML = EXAMPLES / "python_repo" / "pinball.yaml"
JSON_YAML = EXAMPLES / "json_repo" / "pinball.yaml"
CYCLE_YAML = EXAMPLES / "broken" / "cycle" / "pinball.yaml"
SYNTAX_YAML = EXAMPLES / "broken" / "syntax_error" / "pinball.yaml"


def validate(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``token-fetcher validate ARGV`` in this process: (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="token-fetcher")
    server_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["validate", *argv])
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


RUNNER = ("python -m pinball_ext.job.job_runner "
          "--job_import_dirs_config=example_workflows.job_config.JOB_IMPORT_DIRS ")

JSON_REPORT = [
    "json_daily_rollup: ok, 5 jobs, every 86400 s from 2015-01-01T06:30:00Z, DELAY "
    "(max 3 running)",
    "  RollupCountsJob [job after RollupExtractJob] score 2: cd ../python_repo && " + RUNNER
    + '--job_class_name=RollupCountsJob --job_params="end_date=<end_date>" ',
    "  RollupExtractJob [job after input_ready] score 14.5: cd ../python_repo && " + RUNNER
    + '--job_class_name=RollupExtractJob --job_params="env=json,end_date=<end_date>" ',
    "  RollupPublishJob [job after RollupCountsJob, RollupUsersJob] score 1: "
    "cd ../python_repo && " + RUNNER
    + '--job_class_name=RollupPublishJob --job_params="end_date=<end_date>" ',
    "  RollupUsersJob [job after RollupExtractJob] score 3.5: cd ../python_repo && " + RUNNER
    + '--job_class_name=RollupUsersJob --job_params="end_date=<end_date>" ',
    "  input_ready [condition] score 15.5: test -d ../python_repo/example_jobs",
    "json_heartbeat: ok, 1 jobs, every 1800 s from 2015-01-01T00:15:00Z, SKIP (max 3 running)",
    '  heartbeat [job] score 1: echo "heartbeat at $(date -u +%H:%M)"',
    "json_table_sync: ok, 2 jobs, every 43200 s from 2015-01-01T00:00:00Z, START_NEW "
    "(max 3 running)",
    "  SyncAuditJob [job after sync_tables] score 1: cd ../python_repo && " + RUNNER
    + '--job_class_name=SyncAuditJob --job_params="end_date=<end_date>" ',
    '  sync_tables [job] score 2: echo "syncing tables into analytics"',
    "json_weekly_compaction: ok, 2 jobs, every 604800 s from 2015-01-05T03:00:00Z, "
    "ABORT_RUNNING (max 3 running)",
    "  CompactPartitionsJob [job] score 31: cd ../python_repo && " + RUNNER
    + '--job_class_name=CompactPartitionsJob --job_params="end_date=<end_date>" ',
    "  VacuumTablesJob [job after CompactPartitionsJob] score 1: cd ../python_repo && "
    + RUNNER + '--job_class_name=VacuumTablesJob --job_params="end_date=<end_date>" ',
]


def test_json_repo_report_is_exact(capsys):
    code, out, err = validate(capsys, str(JSON_YAML))
    assert code == 0
    assert out.split("\n") == [*JSON_REPORT, ""]


PYTHON_HEADERS = [
    "daily_reporting: ok, 6 jobs, every 86400 s from 2015-01-01T06:00:00Z, "
    "DELAY_UNTIL_SUCCESS (max 2 running)",
    "db_backup: ok, 3 jobs, every 86400 s from 2015-01-01T01:15:00Z, SKIP (max 3 running)",
    "event_ingest: ok, 5 jobs, every 25200 s from 2015-01-01T00:00:00Z, ABORT_RUNNING "
    "(max 1 running)",
    "failure_drill: ok, 4 jobs, every 43200 s from 2015-01-01T09:00:00Z, SKIP (max 3 running)",
    "hourly_metrics: ok, 3 jobs, every 3600 s from 2015-01-01T00:05:00Z, START_NEW "
    "(max 4 running)",
    "partner_ingest: ok, 4 jobs, every 86400 s from 2015-01-01T02:30:00Z, DELAY "
    "(max 3 running)",
    "weekly_cleanup: ok, 4 jobs, every 604800 s from 2015-01-04T03:00:00Z, SKIP "
    "(max 1 running)",
]

PYTHON_KEY_LINES = [
    "  job_code_deployed [condition] score 39.5: test -e example_jobs",
    "  load_events [job after job_code_deployed] score 38.5: cd . && " + RUNNER
    + '--job_class_name=LoadEventsJob --job_params="env=example,end_date=<end_date>" '
    '--executor=emr --executor_config="cluster_id=j-EXAMPLE0001,queue=reporting" ',
    "  revenue_report [job after load_events] score 3: cd . && " + RUNNER
    + '--job_class_name=RevenueReportJob --job_params="env=example,end_date=<end_date>" '
    '--executor=emr --executor_config="cluster_id=j-EXAMPLE0001,queue=reporting" '
    "--write_lock=reporting_db ",
    "  publish_dashboard [job after revenue_report, engagement_report] score 2: cd . && "
    + RUNNER + '--job_class_name=PublishDashboardJob '
    '--job_params="env=example,end_date=<end_date>" ',
    '  fetch_logs [job] score 5: cd . && echo "fetching logs for $(date -u +%Y%m%d)"',
    '  notify_child [job after dedupe_events] score 2: echo "child: %(a_cmd_key)s"',
    '  final [job after load_feed, check_feed] score 1: echo "partner feed ingested"',
    "  verify_snapshot [job after snapshot_db] score 6.5: test -d .",
    "  vacuum_tables [job] score 32: cd . && " + RUNNER
    + '--job_class_name=VacuumTablesJob --job_params="env=example,end_date=<end_date>" '
    "--write_lock=warehouse ",
]


def test_python_repo_report_key_lines(capsys):
    code, out, err = validate(capsys, str(PYTHON_YAML))
    assert code == 0
    lines = out.split("\n")
    assert lines[-1] == ""
    assert len(lines) == 1 + 7 + 29  # the trailing newline, 7 workflows, 29 jobs
    assert [line for line in lines if line and not line.startswith("  ")] == PYTHON_HEADERS
    for line in PYTHON_KEY_LINES:
        assert line in lines, line
    assert "BROKEN" not in out


def test_progress_goes_to_stderr(capsys):
    code, out, err = validate(capsys, str(PYTHON_YAML))
    assert code == 0
    lines = err.splitlines()
    assert lines[0] == f"parsing {PYTHON_YAML} with repo {PYTHON_YAML.parent}"
    assert re.fullmatch(r"parsed 7 workflows with 0 errors in \d+\.\d\d s", lines[1])
    assert len(lines) == 2
    assert "parsing" not in out


def test_a_broken_repo_exits_1_and_still_reports_the_good_workflow(capsys):
    code, out, err = validate(capsys, str(CYCLE_YAML))
    assert code == 1
    assert out.split("\n") == [
        "good_daily: ok, 3 jobs, every 86400 s from 2015-01-01T06:00:00Z, SKIP (max 3 running)",
        "  extract [job] score 3: echo extract",
        "  final [job after load] score 1: echo done",
        "  load [job after extract] score 2: echo load",
        "bad_daily: BROKEN: cycle: dependency cycle: a -> b -> c -> a (cluster cycle, "
        "workflow bad_daily, job a, cycle_workflows/workflows.py:18)",
        "",
    ]
    assert re.fullmatch(r"parsed 1 workflows with 1 errors in \d+\.\d\d s",
                        err.splitlines()[-1])


def test_a_module_error_is_reported_for_the_cluster(capsys):
    code, out, err = validate(capsys, str(SYNTAX_YAML))
    assert code == 1
    assert out == ("(cluster): BROKEN: syntax_error: SyntaxError: expected ':' (daily.py, "
                   "line 9) (cluster syntax_error, syntax_error_workflows/daily.py:9)\n")


def test_json_output_parses_with_the_workflows(capsys):
    code, out, err = validate(capsys, str(JSON_YAML), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["cluster"] == "json_repo"
    assert data["errors"] == []
    assert [workflow["name"] for workflow in data["workflows"]] == [
        "json_daily_rollup", "json_heartbeat", "json_table_sync", "json_weekly_compaction"]
    rollup = data["workflows"][0]
    assert rollup["schedule"] == {
        "reference_epoch": 1420093800, "recurrence_seconds": 86400, "overrun_policy": 2,
        "max_running_instances": 3, "emails": ["data-oncall@example.com"]}
    counts = rollup["jobs"][0]
    assert counts["name"] == "RollupCountsJob"
    assert counts["command"] == {"segments": [
        "cd ../python_repo && " + RUNNER
        + '--job_class_name=RollupCountsJob --job_params="end_date=', '" ']}
    # the output is the model's plain form: it rebuilds into the typed result
    result = from_plain(ParseResult, data)
    assert result.workflows[0].job("input_ready").is_condition


def test_json_output_of_a_broken_repo(capsys):
    code, out, err = validate(capsys, str(CYCLE_YAML), "--json")
    assert code == 1
    data = json.loads(out)
    assert [workflow["name"] for workflow in data["workflows"]] == ["good_daily"]
    (error,) = data["errors"]
    assert {key: error[key] for key in ("kind", "cluster", "workflow", "job", "file",
                                        "line")} == {
        "kind": "cycle", "cluster": "cycle", "workflow": "bad_daily", "job": "a",
        "file": "cycle_workflows/workflows.py", "line": 18}


def test_repo_option_names_the_repo_root(capsys, tmp_path):
    yaml_copy = tmp_path / "elsewhere.yaml"
    shutil.copy(PYTHON_YAML, yaml_copy)
    code, out, err = validate(capsys, str(yaml_copy), "--repo", str(PYTHON_YAML.parent),
                              "--json")
    assert code == 0
    data = json.loads(out)
    assert data["cluster"] == "python_repo"
    assert len(data["workflows"]) == 7


def test_timeout_option_limits_the_parse(capsys):
    code, out, err = validate(capsys, str(EXAMPLES / "broken/hostile/infinite_loop/pinball.yaml"),
                              "--timeout", "1", "--json")
    assert code == 1
    (error,) = json.loads(out)["errors"]
    assert error["kind"] == ErrorKind.TIMEOUT
    assert "1 s limit" in error["message"]


def test_missing_yaml_exits_2(capsys, tmp_path):
    code, out, err = validate(capsys, str(tmp_path / "nope.yaml"))
    assert code == 2
    assert out == ""
    assert err.startswith("token-fetcher validate: ")
    assert "nope.yaml: cannot read" in err


def test_no_yaml_and_no_diff_exits_2(capsys):
    code, out, err = validate(capsys)
    assert code == 2
    assert "give a Pinball YAML, or --diff OLD NEW" in err


# --- --diff OLD NEW ---------------------------------------------------------------------------


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


@pytest.fixture
def old_and_new(tmp_path) -> tuple[Path, Path]:
    """Two checkouts of python_repo; in ``new`` a command changed, a job was added, a
    schedule changed and a workflow broke."""
    old, new = tmp_path / "old", tmp_path / "new"
    for target in (old, new):
        shutil.copytree(EXAMPLES / "python_repo", target,
                        ignore=shutil.ignore_patterns("__pycache__"))
    workflows = new / "example_workflows"
    edit(workflows / "ingest.py", '"fetching logs for', '"fetching all logs for')
    edit(workflows / "reporting.py",
         "        dependency=['compute_hourly_metrics']),\n}",
         "        dependency=['compute_hourly_metrics']),\n"
         "    'archive_metrics': JobConfig(\n"
         "        CommandJobTemplate('archive_metrics', 'echo archived'),\n"
         "        dependency=['push_metrics']),\n}")
    edit(workflows / "maintenance.py", "datetime(2015, 1, 1, 1, 15)",
         "datetime(2015, 1, 1, 2, 15)")
    edit(workflows / "maintenance.py", "dependency=['job_code_deployed']",
         "dependency=['job_code_deployd']")
    return old, new


def test_diff_lists_exactly_the_differences(capsys, old_and_new):
    old, new = old_and_new
    code, out, err = validate(capsys, "--diff", str(old), str(new))
    assert out.split("\n") == [
        "changed  db_backup (schedule)",
        "changed  event_ingest/fetch_logs (command)",
        "broken   failure_drill: missing_parent: job 'always_fails' depends on "
        "'job_code_deployd', which is not a job of this workflow (cluster new, "
        "workflow failure_drill, job always_fails, example_workflows/maintenance.py:44)",
        "added    hourly_metrics/archive_metrics",
        "changed  hourly_metrics/compute_hourly_metrics (priority)",
        "changed  hourly_metrics/final (graph)",
        "changed  hourly_metrics/push_metrics (graph, priority)",
        "",
    ]
    assert code == 1  # the new checkout has a broken workflow
    assert err.splitlines() == [
        f"parsing {old / 'pinball.yaml'} with repo {old}",
        f"parsing {new / 'pinball.yaml'} with repo {new}",
    ]


def test_diff_the_other_way_lists_fixed_and_removed(capsys, old_and_new):
    old, new = old_and_new
    code, out, err = validate(capsys, "--diff", str(new), str(old))
    assert out.split("\n") == [
        "changed  db_backup (schedule)",
        "changed  event_ingest/fetch_logs (command)",
        "fixed    failure_drill",
        "removed  hourly_metrics/archive_metrics",
        "changed  hourly_metrics/compute_hourly_metrics (priority)",
        "changed  hourly_metrics/final (graph)",
        "changed  hourly_metrics/push_metrics (graph, priority)",
        "",
    ]
    assert code == 0


def test_diff_as_json(capsys, old_and_new):
    old, new = old_and_new
    code, out, err = validate(capsys, "--diff", str(old), str(new), "--json")
    assert code == 1
    differences = json.loads(out)
    assert [(d["change"], d["workflow"], d["job"], d["aspects"]) for d in differences] == [
        ("changed", "db_backup", "", ["schedule"]),
        ("changed", "event_ingest", "fetch_logs", ["command"]),
        ("broken", "failure_drill", "", []),
        ("added", "hourly_metrics", "archive_metrics", []),
        ("changed", "hourly_metrics", "compute_hourly_metrics", ["priority"]),
        ("changed", "hourly_metrics", "final", ["graph"]),
        ("changed", "hourly_metrics", "push_metrics", ["graph", "priority"]),
    ]
    assert differences[2]["detail"].startswith("missing_parent: job 'always_fails'")


def test_diff_of_identical_checkouts(capsys, tmp_path):
    copy = tmp_path / "same"
    shutil.copytree(EXAMPLES / "python_repo", copy, ignore=shutil.ignore_patterns("__pycache__"))
    code, out, err = validate(capsys, "--diff", str(EXAMPLES / "python_repo"), str(copy))
    assert (code, out) == (0, "no differences\n")


# --- the installed entry point ------------------------------------------------------------------


def test_installed_token_fetcher_validate(tmp_path):
    executable = Path(sys.executable).with_name("token-fetcher")
    assert executable.exists(), executable
    good = subprocess.run([str(executable), "validate", str(JSON_YAML)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert good.stdout.split("\n") == [*JSON_REPORT, ""]
    assert good.stderr.splitlines()[0] == f"parsing {JSON_YAML} with repo {JSON_YAML.parent}"
    broken = subprocess.run([str(executable), "validate", str(CYCLE_YAML)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert broken.returncode == 1, broken.stderr
    assert "bad_daily: BROKEN: cycle: dependency cycle: a -> b -> c -> a" in broken.stdout


def test_isolation_option_chooses_the_sandbox(capsys, monkeypatch):
    """strict (the default) refuses where the host cannot isolate a parse, and says why;
    best_effort parses with what the host gives."""
    from legacy_parser import isolation

    strict = validate(capsys, str(JSON_YAML))
    best_effort = validate(capsys, "--isolation", "best_effort", str(JSON_YAML))
    assert strict[0] == best_effort[0] == 0 and strict[1] == best_effort[1]
    monkeypatch.setattr(isolation, "_find_bwrap", lambda: "")
    code, out, err = validate(capsys, str(JSON_YAML))
    assert code == 2 and out == ""
    assert "sandbox.isolation is strict, but this host cannot isolate parses" in err
    assert "bubblewrap (bwrap) is not installed" in err
    assert validate(capsys, "--isolation", "best_effort", str(JSON_YAML))[:2] == (0, strict[1])


CLIENT_IMPORTING_REPO = {
    "pinball.yaml": """
        parser: pinball_ext.workflow.parser.PyWorkflowParser
        parser_params:
          workflows_config: etl.workflows.WORKFLOWS
        """,
    "etl/__init__.py": "",
    "etl/workflows.py": """
        from datetime import datetime, timedelta

        import MySQLdb
        from pinball_ext.job_templates import CommandJobTemplate
        from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig

        print 'a Python 2 statement'

        WORKFLOWS = {'load': WorkflowConfig(
            jobs={'load': JobConfig(CommandJobTemplate('load', 'true'))},
            final_job_config=JobConfig(CommandJobTemplate('final', 'true')),
            schedule=ScheduleConfig(timedelta(days=1), datetime(2020, 1, 1)))}
        """,
}


def test_the_cluster_settings_for_stubs_and_python_2_are_options(capsys, tmp_path):
    """A cluster configured with stub_modules (and Python 2 definitions) validates as the
    server would parse it."""
    repo = write_repo(tmp_path / "repo", CLIENT_IMPORTING_REPO)
    yaml_path = str(repo / "pinball.yaml")
    code, out, _ = validate(capsys, yaml_path)
    assert code == 1 and "No module named 'MySQLdb' (cluster repo, etl/workflows.py:3)" in out
    code, out, _ = validate(capsys, "--stub-module", "MySQLdb", yaml_path)
    assert code == 0 and out.startswith("load: ok, 2 jobs")
    code, out, _ = validate(capsys, "--stub-module", "MySQLdb", "--python2-definitions", "off",
                            yaml_path)
    assert code == 1 and "syntax_error" in out and "etl/workflows.py:7)" in out


def test_a_stub_module_must_be_a_module_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        validate(capsys, "--stub-module", "not a module", str(JSON_YAML))
    assert exit_.value.code == 2
    assert "'not a module' is not a dotted module name" in capsys.readouterr().err
