"""Stopping ``token-fetcher serve`` by signal, and the log it writes on the way.

``make run`` stopped by SIGTERM to its process group delivers two SIGTERMs in quick
succession (make forwards its own); a handler that took a lock (``threading.Event.set``)
could be interrupted inside it by the second one and hang forever.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys

import pytest

from tests.helpers import EXAMPLES
from token_fetcher.cli import server_commands

from .reliability_helpers import BIN, PY, cluster_from_yaml

STOP_ROUNDS = 8
CONFIG = {"clusters": {PY: cluster_from_yaml(EXAMPLES / "python_repo")}, "metrics": "",
          "shutdown_grace_seconds": 2}


def test_the_stop_handler_takes_no_lock():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    saved_fd = signal.set_wakeup_fd(-1)
    read_end = server_commands.install_stop_signals()
    try:
        handler = signal.getsignal(signal.SIGTERM)
        calls = []
        sys.setprofile(lambda frame, event, arg: calls.append(arg) if event == "c_call" else None)
        try:
            handler(signal.SIGTERM, None)
        finally:
            sys.setprofile(None)
        locks = [call for call in calls
                 if "lock" in type(getattr(call, "__self__", None)).__name__.lower()]
        assert locks == [], f"the handler took a lock: {locks}"
        # The signal itself reaches the file descriptor the main thread waits on.
        os.kill(os.getpid(), signal.SIGTERM)
        readable, _, _ = select.select([read_end], [], [], 10)
        assert readable and os.read(read_end, 1)[0] == signal.SIGTERM
    finally:
        write_end = signal.set_wakeup_fd(saved_fd)
        for signum, previous in saved.items():
            signal.signal(signum, previous)
        os.close(read_end)
        os.close(write_end)


@pytest.mark.slow
def test_two_sigterms_in_quick_succession_exit_cleanly(serve_process):
    for round_number in range(STOP_ROUNDS):
        server = serve_process(CONFIG, name=f"round-{round_number}")
        # Half the rounds stop during the first load, half once serving.
        if round_number % 2:
            server.wait_serving()
        server.process.send_signal(signal.SIGTERM)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.log
        server.close()
        assert server.log.count("SIGTERM received; shutting down") == 1, server.log


def test_json_log_format(serve_process):
    server = serve_process(CONFIG, args=("--log-format", "json"))
    server.wait_serving()
    code, _ = server.terminate()
    assert code == 0
    server.close()
    records = [json.loads(line) for line in server.lines]
    assert records, "no log lines"
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= record.keys(), record
    assert any(record["message"].startswith("listening on") and record["level"] == "INFO"
               for record in records)


@pytest.mark.parametrize("option", [("--log-level", "loud"), ("--log-format", "xml")])
def test_a_bad_log_option_is_a_usage_error(option, tmp_path):
    config = tmp_path / "token-fetcher.yaml"
    config.write_text("clusters: {}\n")
    result = subprocess.run([str(BIN / "token-fetcher"), "serve", "--config", str(config),
                             *option], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "invalid choice" in result.stderr and option[1] in result.stderr.lower()
    assert "Traceback" not in result.stderr
