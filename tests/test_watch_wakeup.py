"""A real server's catalog picks up an edit when a watched folder reports it, without
waiting for the next poll: with an hour between polls, the edit still shows."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.helpers import example_clusters, wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")

JS = "example_json"


def fingerprint(stub, workflow: str) -> str:
    return stub.GetWorkflowSpec(pb.GetWorkflowSpecRequest(cluster=JS, workflow=workflow)
                                ).fingerprint


def test_a_notification_wakes_the_poller(start_server, stub_for, example_copy):
    repo = example_copy("json_repo")
    server = start_server(example_clusters(json_repo=repo), poll_interval_seconds=3600)
    stub = stub_for(server)
    before = fingerprint(stub, "json_daily_rollup")
    job_file = repo / "repo" / "workflow" / "json_daily_rollup" / "job" / "RollupPublishJob"
    definition = json.loads(job_file.read_text())
    definition["max_attempts"] += 4
    temp = job_file.with_name(".RollupPublishJob.tmp")
    temp.write_text(json.dumps(definition, indent=4))
    os.replace(temp, job_file)
    wait_for(lambda: fingerprint(stub, "json_daily_rollup") != before, timeout=30,
             message="the edit to be served well before the hour-long poll")
