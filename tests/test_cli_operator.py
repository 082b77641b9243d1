"""The command line as an operator meets it, against a real server: info, reload, watch,
exit codes that say whether anything is BROKEN or STALE, errors that help, and terminal
output that cannot be hijacked by a name with escape sequences."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import example_clusters, free_port, replace_file, wait_for
from token_fetcher import cli

PY = "example_python"
BIN = Path(sys.executable).parent
PYTHON_WORKFLOWS = ["daily_reporting", "db_backup", "event_ingest", "failure_drill",
                    "hourly_metrics", "partner_ingest", "weekly_cleanup"]


@pytest.fixture
def command(capsys):
    """Run ``token-fetcher ARGS`` in this process: (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def target(server) -> str:
    return f"127.0.0.1:{server.port}"


def test_list_exits_3_and_groups_a_shared_error(start_server, example_copy, command):
    repo = example_copy("python_repo")
    server = start_server(clusters=example_clusters(python_repo=repo))
    assert command("list", "--target", target(server), "--cluster", PY)[0] == 0
    before = server.catalog.snapshot(PY).loaded_at
    # A syntax error in the module every workflow imports: all seven go STALE.
    replace_file(repo / "example_workflows" / "templates.py",
                 '"""Templates shared', 'def (:\n"""Templates shared')
    wait_for(lambda: server.catalog.snapshot(PY).loaded_at != before, message="the re-parse")
    code, out, _ = command("list", "--target", target(server), "--cluster", PY)
    assert code == 3
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out
    assert "example_workflows/templates.py:1: SYNTAX_ERROR" in errors[0]
    assert f"[7 affected: {', '.join(PYTHON_WORKFLOWS)}]" in errors[0]
    code, out, _ = command("info", "--target", target(server))
    assert code == 3
    assert len([line for line in out.splitlines() if line.startswith("error: ")]) == 1


def test_info_and_reload(start_server, command):
    server = start_server()
    code, out, _ = command("info", "--target", target(server))
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows[PY][1:4] == ["READY", "7", "7"]
    assert rows["example_json"][1] == "READY"
    code, out, _ = command("info", "--target", target(server), "--json")
    assert code == 0 and {c["name"] for c in json.loads(out)["clusters"]} == {
        PY, "example_json"}

    code, out, _ = command("reload", "--target", target(server), "--cluster", PY)
    assert code == 0
    assert out.splitlines()[0] == f"{PY}: 0 added, 0 changed, 0 removed, 0 broken"


@pytest.fixture
def sigint_as_a_terminal_gives_it():
    """A command started now gets SIGINT as a terminal's foreground job does: not ignored,
    not blocked. Both are inherited from this process, where something else in a full run
    left SIGINT so (the command then never saw the test's Ctrl-C); put back afterwards."""
    handler = signal.getsignal(signal.SIGINT)
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if handler is not None:  # None: set outside Python, and then nothing to put back
        signal.signal(signal.SIGINT, handler)
    if signal.SIGINT in blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def test_watch_prints_one_line_per_event(start_server, example_copy,
                                         sigint_as_a_terminal_gives_it):
    repo = example_copy("python_repo")
    server = start_server(clusters=example_clusters(python_repo=repo))
    process = subprocess.Popen(
        [str(BIN / "token-fetcher"), "watch", "--target", target(server), "--cluster", PY,
         "--json", "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: lines, message="the SUBSCRIBED line")
        assert json.loads(lines[0])["type"] == "TYPE_SUBSCRIBED"
        module = repo / "example_workflows" / "maintenance.py"
        replace_file(module, "backup done", "backup finished")
        wait_for(lambda: len(lines) >= 2, message="the CHANGED line")
        event = json.loads(lines[1])
        assert (event["type"], event["workflow"]) == ("TYPE_CHANGED", "db_backup")
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            # With PYTHONFAULTHANDLER, SIGABRT writes every thread's stack to stderr.
            process.send_signal(signal.SIGABRT)
            process.wait(10)
            pytest.fail(f"watch did not end on SIGINT; its threads:\n{process.stderr.read()}")
        assert code == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_watch_with_a_timeout_ends_cleanly(start_server, command):
    server = start_server()
    code, out, err = command("watch", "--target", target(server), "--timeout", "0.5")
    assert (code, err) == (0, "")
    assert out.split()[1:] == ["SUBSCRIBED", "(all", "clusters)"]


def test_watch_of_an_unknown_cluster_is_an_error(start_server, command):
    """The stream's error, met in the thread that reads it, is the command's error."""
    server = start_server()
    code, out, err = command("watch", "--target", target(server), "--cluster", "example_pyton",
                             "--timeout", "10")
    assert (code, out) == (1, "")
    assert "example_pyton" in err and err.count("\n") == 1


def test_close_matches_for_unknown_names(start_server, command):
    server = start_server()
    code, _, err = command("get", "--target", target(server), "--cluster", PY,
                           "--workflow", "daily_reportin")
    assert code == 1
    assert err.strip().endswith("did you mean daily_reporting?")
    code, _, err = command("list", "--target", target(server), "--cluster", "example_pyton")
    assert code == 1
    assert err.strip().endswith("did you mean example_python?")


def test_an_unreachable_server_names_target(command):
    port = free_port()
    code, _, err = command("list", "--target", f"127.0.0.1:{port}", "--cluster", PY,
                           "--timeout", "1")
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert f"is a server running at 127.0.0.1:{port}? give its address with --target" in err


def test_a_misspelled_option_is_named_before_missing_ones(command):
    code, _, err = command("tokens", "--clustr", PY, "--workflow", "daily_reporting")
    assert code == 2
    assert "unrecognized arguments: --clustr" in err
    assert "did you mean --cluster?" in err
    assert "required" not in err


def test_run_times_off_the_schedule_and_manual(start_server, command):
    server = start_server()
    argv = ("tokens", "--target", target(server), "--cluster", PY, "--workflow",
            "daily_reporting", "--run-time", "2015-02-02T07:13:00Z")
    code, _, err = command(*argv)
    assert code == 1
    assert "the previous run is 2015-02-02T06:00:00Z, the next 2015-02-03T06:00:00Z" in err
    code, out, _ = command(*argv, "--manual")
    assert code == 0 and "1422861180000" in out


def test_every_option_has_help():
    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    missing = [f"{parser.prog} {action.option_strings or action.dest}"
               for parser in parsers(cli.build_parser()) for action in parser._actions
               if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert missing == []


def test_a_closed_pipe_ends_quietly(start_server):
    server = start_server()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written, as `| head -0`
    try:
        result = subprocess.run(
            [str(BIN / "token-fetcher"), "list", "--target", target(server), "--cluster", PY],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == cli.EXIT_BROKEN_PIPE


def test_control_characters_never_reach_the_terminal(start_server, example_copy, command):
    repo = example_copy("json_repo")
    name = "\x1b]0;pwned\x07\x1b[2J"
    folder = repo / "repo" / "workflow" / "json_heartbeat" / "job"
    (folder / name).write_text(json.dumps({
        "workflow": "json_heartbeat", "job": name, "is_condition": False,
        "template": "json_templates.HeartbeatTemplate", "template_params": {},
        "parents": [], "emails": [], "max_attempts": 1, "retry_delay_sec": 0, "priority": 1}))
    clusters = example_clusters(json_repo=repo)
    server = start_server(clusters={"example_json": clusters["example_json"]})
    shown = ""
    for argv in (("list", "--cluster", "example_json"),
                 ("get", "--cluster", "example_json", "--workflow", "json_heartbeat"),
                 ("info",)):
        _, out, err = command(*argv, "--target", target(server))
        shown += out + err
    assert "\\x1b" in shown, shown
    assert not any(char in shown for char in "\x1b\x07"), shown
