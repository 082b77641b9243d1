"""Run times: GetJobTokens and GetJobToken render tokens only for the schedule's runs, unless
the request says the run is manual (started by hand, as Airflow's triggered runs are)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.helpers import rpc_error
from token_fetcher._proto import token_fetcher_pb2 as pb

PY = "example_python"
# daily_reporting runs every day at 06:00 UTC from 2015-01-01.
OFF_GRID = Timestamp(seconds=1422860580)  # 2015-02-02T07:03:00Z
ON_GRID = Timestamp(seconds=1422856800)  # 2015-02-02T06:00:00Z
BEFORE_REFERENCE = Timestamp(seconds=1262325600)  # 2010-01-01T06:00:00Z


def tokens(stub, run_time: Timestamp, manual: bool = False):
    return stub.GetJobTokens(pb.GetJobTokensRequest(
        cluster=PY, workflow="daily_reporting", run_time=run_time, manual=manual), timeout=10)


def get_job_token(stub, run_time: Timestamp, manual: bool = False):
    return stub.GetJobToken(pb.GetJobTokenRequest(cluster=PY, workflow="daily_reporting",
                                                  job="final", run_time=run_time, manual=manual),
                            timeout=10)


@pytest.mark.parametrize("call", [tokens, get_job_token])
def test_a_run_time_off_the_grid_names_the_runs_around_it(start_server, stub_for, call):
    stub = stub_for(start_server())
    error = rpc_error(call, stub, OFF_GRID)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "run_time 2015-02-02T07:03:00Z is not a scheduled run of example_python/"
        "daily_reporting: the previous run is 2015-02-02T06:00:00Z, the next "
        "2015-02-03T06:00:00Z (every 86400 s from 2015-01-01T06:00:00Z); set manual for a "
        "run off the schedule")


@pytest.mark.parametrize("call", [tokens, get_job_token])
def test_a_run_time_before_the_reference_names_the_first_run(start_server, stub_for, call):
    stub = stub_for(start_server())
    error = rpc_error(call, stub, BEFORE_REFERENCE)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2010-01-01T06:00:00Z is not a scheduled run" in error.details()
    assert "before the schedule's reference time; the first run is 2015-01-01T06:00:00Z" \
        in error.details()


def test_scheduled_runs_and_manual_runs_are_answered(start_server, stub_for):
    stub = stub_for(start_server())
    assert tokens(stub, ON_GRID).instance == "1422856800000"
    assert get_job_token(stub, ON_GRID).token.job == "final"
    manual = tokens(stub, OFF_GRID, manual=True)
    assert manual.instance == "1422860580000"
    assert manual.end_date == "2015-02-01"
    assert get_job_token(stub, BEFORE_REFERENCE, manual=True).token.job == "final"


def test_a_run_time_whose_next_run_is_after_year_9999(start_server, stub_for):
    stub = stub_for(start_server())
    last_second = Timestamp(seconds=253402300799)  # 9999-12-31T23:59:59Z
    error = rpc_error(tokens, stub, last_second)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the next 253402322400 s after the epoch" in error.details()
