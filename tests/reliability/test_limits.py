"""Limits: overload is refused (RESOURCE_EXHAUSTED) rather than queued, and messages past
the size limit of either side fail with an error that says so."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.helpers import EXAMPLES, blocking_repo, health, metric, scrape, wait_for
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher._proto import token_fetcher_pb2_grpc as pb_grpc
from token_fetcher.client import DEFAULT_MAX_MESSAGE_BYTES, TokenFetcherClient, TokenFetcherError
from token_fetcher.config import ServerConfig

from .reliability_helpers import PY, cluster_from_yaml

RUN = {"seconds": 1577944800}
SPEC = pb.GetWorkflowSpecRequest(cluster=PY, workflow="daily_reporting")


def test_overload_is_refused_at_once_not_queued(start_server, tmp_path):
    slow, flag = blocking_repo(tmp_path)
    server = start_server({PY: cluster_from_yaml(EXAMPLES / "python_repo"), "slow": slow},
                          wait_ready=False, max_concurrent_rpcs=2,
                          sandbox={"timeout_seconds": 60})
    wait_for(lambda: server.catalog.snapshot(PY).state.name == "READY", message=PY)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, \
            ThreadPoolExecutor(max_workers=2) as pool:
        stub = pb_grpc.TokenFetcherStub(channel)
        # Two slow calls take both slots: reloads of a cluster whose parse waits for a flag.
        slow_calls = [pool.submit(stub.Reload, pb.ReloadRequest(cluster="slow"), timeout=60)
                      for _ in range(2)]
        wait_for(lambda: metric(scrape(server.metrics_port), "token_fetcher_rpcs_in_flight") == 2,
                 message="two calls in flight")
        started = time.monotonic()
        try:
            stub.GetWorkflowSpec(SPEC, timeout=10)
            raise AssertionError("a third call was accepted")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "Concurrent RPC limit exceeded" in error.details()
        assert time.monotonic() - started < 5, "refused, not queued behind the slow calls"
        # The limit is the service's: probes are still answered, so a saturated server is
        # not restarted for being busy (NOT_SERVING only because the slow cluster's first
        # load waits at the gate too).
        assert health(channel) == "NOT_SERVING"
        flag.write_text("go")
        for call in slow_calls:
            assert call.result(timeout=60).cluster.ok_count == 1
        assert stub.GetWorkflowSpec(SPEC, timeout=10).spec.name == "daily_reporting"
        assert health(channel) == "SERVING"


def test_health_is_answered_while_every_service_thread_is_busy(start_server, tmp_path):
    slow, flag = blocking_repo(tmp_path)
    server = start_server({PY: cluster_from_yaml(EXAMPLES / "python_repo"), "slow": slow},
                          wait_ready=False, server_threads=1, max_watches=1,
                          sandbox={"timeout_seconds": 60})
    wait_for(lambda: server.catalog.snapshot(PY).state.name == "READY", message=PY)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, \
            ThreadPoolExecutor(max_workers=3) as pool:
        stub = pb_grpc.TokenFetcherStub(channel)
        try:
            # Both service threads wait for the gate; a third call queues behind them.
            slow_calls = [pool.submit(stub.Reload, pb.ReloadRequest(cluster="slow"), timeout=60)
                          for _ in range(2)]
            wait_for(lambda: metric(scrape(server.metrics_port),
                                    "token_fetcher_rpcs_in_flight") == 2,
                     message="two calls in flight")
            queued = pool.submit(stub.GetWorkflowSpec, SPEC, timeout=60)
            # Answered at once on a thread of its own (NOT_SERVING: the slow cluster's first
            # load waits at the gate), not DEADLINE_EXCEEDED behind the service's calls.
            assert health(channel) == "NOT_SERVING"
        finally:
            flag.write_text("go")
        assert queued.result(timeout=60).spec.name == "daily_reporting"
        for call in slow_calls:
            assert call.result(timeout=60).cluster.ok_count == 1
        assert health(channel) == "SERVING"


def test_message_size_limits_default_to_the_same_on_both_sides():
    assert ServerConfig(clusters={}).max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES == 64 * 2**20


def test_a_request_or_answer_past_the_servers_limit(start_server, stub_for):
    server = start_server(max_message_bytes=64 * 1024)
    stub = stub_for(server)
    huge = pb.GetWorkflowSpecRequest(cluster=PY, workflow="w" * 1_000_000)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetWorkflowSpec(huge, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Received message larger than max" in caught.value.details()
    assert str(64 * 1024) in caught.value.details()
    # An answer past the limit: 50 specs of a few KB each.
    batch = pb.BatchResolveMigrationsRequest(migrations=[pb.ResolveMigrationRequest(
        cluster=PY, workflow="daily_reporting", migration_time=RUN)] * 50)
    with pytest.raises(grpc.RpcError) as caught:
        stub.BatchResolveMigrations(batch, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Sent message larger than max" in caught.value.details()
    # Everything within the limit still works.
    assert stub.GetWorkflowSpec(SPEC, timeout=10).spec.name == "daily_reporting"


def test_an_answer_past_the_clients_limit(start_server):
    server = start_server()
    with TokenFetcherClient(f"127.0.0.1:{server.port}", max_message_bytes=1024,
                            retries=0) as client:
        with pytest.raises(TokenFetcherError) as caught:
            client.get_spec(PY, "daily_reporting")  # about 3 KB
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Received message larger than max" in caught.value.details
        assert "max_message_bytes is 1024 on this client" in str(caught.value)
        with pytest.raises(TokenFetcherError) as caught:
            client.get_spec(PY, "w" * 4096)  # a request past the client's own limit
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_message_bytes is 1024 on this client" in str(caught.value)
