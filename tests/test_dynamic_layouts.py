"""Dynamic layouts: a workflow whose layout changes while none of the files its cluster's
parse read changed is flagged dynamic (ListWorkflows, GetWorkflowSpec, ResolveMigration,
GetServerInfo, a watch event, a metric, a WARNING); the newest layout is served and every
version stays in the history. The flag is cleared when a re-parse of the same files gives
the same layout again. The re-parse timer on a real server is in
tests/reliability/test_catalog_purity.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.helpers import metric, scrape
from token_fetcher import cli
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.config import ConfigError, parse_config

CLUSTER = "team"
Event = pb.WorkflowEvent
RANDOM_COMMAND = "'echo %d' % random.getrandbits(64)"
MODULE = """import random
from datetime import datetime, timedelta

from pinball_ext.job_templates import CommandJobTemplate
from pinball_ext.workflow.config import JobConfig, ScheduleConfig, WorkflowConfig


def workflow(command):
    return WorkflowConfig(
        jobs={{'work': JobConfig(CommandJobTemplate('work', command))}},
        final_job_config=JobConfig(CommandJobTemplate('final', 'echo done')),
        schedule=ScheduleConfig(timedelta(days=1), datetime(2015, 1, 1, 6, 0)))


WORKFLOWS = {{
    'stable_daily': workflow('echo stable'),
    'random_daily': workflow({command}),
}}
"""


def write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def team_repo(folder: Path, **settings) -> tuple[dict, Path]:
    """A repo with one stable workflow and one whose command is random at every import."""
    package = folder / "team_repo" / "team"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    module = package / "workflows.py"
    module.write_text(MODULE.format(command=RANDOM_COMMAND))
    cluster = {"repo": str(package.parent),
               "parser": "pinball_ext.workflow.parser.PyWorkflowParser",
               "parser_params": {"workflows_config": "team.workflows.WORKFLOWS"}, **settings}
    return {CLUSTER: cluster}, module


def workflows(stub) -> dict[str, pb.WorkflowSummary]:
    response = stub.ListWorkflows(pb.ListWorkflowsRequest(cluster=CLUSTER))
    return {w.name: w for w in response.workflows}


def dynamic_count(stub) -> int:
    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    return {c.name: c for c in info.clusters}[CLUSTER].dynamic_count


def reload(stub) -> pb.ReloadResponse:
    return stub.Reload(pb.ReloadRequest(cluster=CLUSTER))


def not_subscribed(event) -> bool:
    return event.type != Event.TYPE_SUBSCRIBED


def test_a_layout_that_changes_by_itself_is_flagged_dynamic_until_it_is_stable(
        start_server, stub_for, watch_events, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="token_fetcher.catalog")
    clusters, module = team_repo(tmp_path)
    server = start_server(clusters)
    stub = stub_for(server)
    first = workflows(stub)
    assert not any(w.dynamic for w in first.values()) and dynamic_count(stub) == 0
    watch = watch_events(stub, CLUSTER)
    watch.subscribed()

    # The same files, parsed again: random_daily changes, stable_daily does not.
    assert reload(stub).changed == 1
    [event] = watch.take(not_subscribed)
    assert (event.type, event.workflow) == (Event.TYPE_DYNAMIC, "random_daily")
    assert event.old_fingerprint == first["random_daily"].fingerprint
    now = workflows(stub)
    assert event.new_fingerprint == now["random_daily"].fingerprint != event.old_fingerprint
    assert (now["random_daily"].dynamic, now["stable_daily"].dynamic) == (True, False)
    assert now["random_daily"].status == pb.PARSE_STATUS_OK
    assert dynamic_count(stub) == 1
    assert cli.main(["list", "--target", f"127.0.0.1:{server.port}", "--cluster", CLUSTER]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert " OK, dynamic " in rows["random_daily"] and "dynamic" not in rows["stable_daily"]
    spec = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=CLUSTER,
                                                          workflow="random_daily"))
    assert spec.dynamic and spec.fingerprint == event.new_fingerprint
    assert not stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
        cluster=CLUSTER, workflow="stable_daily")).dynamic
    resolved = stub.ResolveMigration(pb.ResolveMigrationRequest(
        cluster=CLUSTER, workflow="random_daily",
        migration_time=Timestamp(seconds=1577944800)))
    assert resolved.dynamic
    samples = scrape(server.metrics_port)
    assert metric(samples, "token_fetcher_dynamic_workflows", cluster=CLUSTER) == 1
    assert metric(samples, "token_fetcher_dynamic_layout_changes_total", cluster=CLUSTER) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m for m in warnings if "dynamic layout" in m] == [
        m for m in warnings if f"cluster {CLUSTER}: workflow random_daily has a dynamic" in m]
    assert len([m for m in warnings if "dynamic layout" in m]) == 1
    # Every version stays in the history: the first layout still resolves.
    pinned = stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(
        cluster=CLUSTER, workflow="random_daily", fingerprint=first["random_daily"].fingerprint))
    assert pinned.fingerprint == first["random_daily"].fingerprint

    # A change to the files: not evidence either way, so the flag stays as it was.
    write(module, MODULE.format(command=RANDOM_COMMAND).replace("'echo stable'",
                                                                "'echo steady'"))
    events = watch.take(not_subscribed, count=2)
    assert sorted((e.type, e.workflow) for e in events) == [
        (Event.TYPE_CHANGED, "random_daily"), (Event.TYPE_CHANGED, "stable_daily")]
    now = workflows(stub)
    assert (now["random_daily"].dynamic, now["stable_daily"].dynamic) == (True, False)

    # The author makes it deterministic; a re-parse of the same files shows it is stable.
    write(module, MODULE.format(command="'echo fixed'").replace("'echo stable'",
                                                                 "'echo steady'"))
    [event] = watch.take(not_subscribed)
    assert (event.type, event.workflow) == (Event.TYPE_CHANGED, "random_daily")
    assert workflows(stub)["random_daily"].dynamic
    reload(stub)
    [event] = watch.take(not_subscribed)
    assert (event.type, event.workflow) == (Event.TYPE_CHANGED, "random_daily")
    assert event.old_fingerprint == event.new_fingerprint
    assert not workflows(stub)["random_daily"].dynamic and dynamic_count(stub) == 0
    assert any("workflow random_daily no longer looks dynamic" in r.getMessage()
               for r in caplog.records if r.levelno == logging.INFO)


def test_the_reparse_timer_is_off_unless_configured(tmp_path):
    clusters, _ = team_repo(tmp_path)
    assert parse_config({"clusters": clusters}, tmp_path).clusters[CLUSTER] \
        .reparse_interval_seconds == 0
    clusters[CLUSTER]["reparse_interval_seconds"] = 90
    assert parse_config({"clusters": clusters}, tmp_path).clusters[CLUSTER] \
        .reparse_interval_seconds == 90.0


@pytest.mark.parametrize(("value", "problem"), [
    (0, "must be positive, got 0"), (-5, "must be positive, got -5"),
    ("often", "expected int or float, got 'often'")])
def test_reparse_interval_must_be_a_positive_number(tmp_path, value, problem):
    clusters, _ = team_repo(tmp_path, reparse_interval_seconds=value)
    with pytest.raises(ConfigError, match=rf"clusters\.{CLUSTER}.*reparse_interval_seconds.*"
                                          rf"{problem}"):
        parse_config({"clusters": clusters}, tmp_path)
