"""The client against a real server on loopback: caching proven by the server's own metrics,
stale-if-error across a stop and a restart, threads, layout snapshots."""

from __future__ import annotations

import threading
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import FakeClock, example_clusters, wait_for
from token_fetcher.client import NotFound, TokenFetcherClient, Unavailable
from token_fetcher.migration import MigrationMetadata, write_metadata

RUN_TIME = datetime(2015, 2, 2, 6, 0, tzinfo=UTC)


def served_rpcs(server, method: str) -> float:
    """The server's count of answered calls of ``method``, scraped over HTTP."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read()
    total = 0.0
    for family in text_string_to_metric_families(text.decode()):
        if family.name == "token_fetcher_rpcs":
            total += sum(sample.value for sample in family.samples
                         if sample.name == "token_fetcher_rpcs_total"
                         and sample.labels["method"] == method)
    return total


@pytest.fixture
def metadata(tmp_path) -> str:
    entry = MigrationMetadata("example_python", "daily_reporting",
                              datetime(2020, 1, 1, tzinfo=UTC))
    return write_metadata(tmp_path / "migrations", entry)


def test_cache_hit_makes_no_rpc_as_the_server_counts(start_server):
    server = start_server()
    with TokenFetcherClient(f"127.0.0.1:{server.port}", cache_ttl=60) as client:
        first = client.get_spec("example_python", "daily_reporting")
        assert served_rpcs(server, "GetWorkflowSpec") == 1
        for _ in range(20):
            again = client.get_spec("example_python", "daily_reporting")
        assert served_rpcs(server, "GetWorkflowSpec") == 1
        assert again.fingerprint == first.fingerprint and not again.stale


def test_expired_entry_is_revalidated_with_not_modified(start_server):
    server = start_server()
    clock = FakeClock()
    with TokenFetcherClient(f"127.0.0.1:{server.port}", cache_ttl=10, clock=clock) as client:
        first = client.get_spec("example_python", "daily_reporting")
        clock.now += 11
        second = client.get_spec("example_python", "daily_reporting")
        assert served_rpcs(server, "GetWorkflowSpec") == 2
        assert second.fingerprint == first.fingerprint
        assert second.spec.jobs == first.spec.jobs
        events = {s.labels["event"]: s.value for s in client.registry.collect()
                  for s in s.samples
                  if s.name == "token_fetcher_client_cache_events_total"}
        assert events["not_modified"] == 1


def test_stale_answers_while_the_server_is_down_then_error_then_fresh_after_restart(
        start_server, tmp_path):
    server = start_server(state_dir=tmp_path / "state")
    port = server.port
    clock = FakeClock()
    client = TokenFetcherClient(f"127.0.0.1:{port}", cache_ttl=10, max_stale=100, retries=1,
                                timeout=2, clock=clock, backoff_base=0.01)
    try:
        fresh = client.get_spec("example_python", "daily_reporting")
        assert not fresh.stale
        server.stop(grace=1)

        clock.now += 50  # expired, within max_stale: served, flagged stale
        stale = client.get_spec("example_python", "daily_reporting")
        assert stale.stale and stale.fingerprint == fresh.fingerprint

        clock.now += 100  # past max_stale: the outage surfaces
        with pytest.raises(Unavailable):
            client.get_spec("example_python", "daily_reporting")

        restarted = start_server(listen=f"127.0.0.1:{port}", state_dir=tmp_path / "state")
        assert restarted.port == port
        again = wait_for(lambda: _try_spec(client), timeout=30, message="fresh answer")
        assert not again.stale and again.fingerprint == fresh.fingerprint
    finally:
        client.close()


def _try_spec(client):
    try:
        return client.get_spec("example_python", "daily_reporting")
    except Unavailable:
        return None


def test_thirty_two_threads_share_one_client(start_server):
    server = start_server()
    names = ["daily_reporting", "hourly_metrics", "event_ingest", "db_backup"]
    results: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    with TokenFetcherClient(f"127.0.0.1:{server.port}", cache_ttl=60) as client:
        expected = {name: client.get_spec("example_python", name).fingerprint for name in names}

        def work(index: int) -> None:
            try:
                for round_ in range(25):
                    name = names[(index + round_) % len(names)]
                    spec = client.get_spec("example_python", name)
                    tokens = client.get_job_tokens("example_python", name, RUN_TIME,
                                                   manual=True)
                    assert spec.fingerprint == expected[name] == tokens.fingerprint
                    with lock:
                        results.append(name)
            except BaseException as error:  # noqa: BLE001 - reported below
                with lock:
                    failures.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures[:3]
    assert len(results) == 32 * 25


def test_dagbag_calls_and_the_first_new_run(start_server, metadata):
    server = start_server()
    with TokenFetcherClient(f"127.0.0.1:{server.port}") as client:
        migrated = client.migrated_workflow(metadata)
        assert migrated.spec.name == "daily_reporting" and not migrated.stale
        # daily at 06:00: the last Pinball run is 2019-12-31 06:00, the first Airflow run
        # 2020-01-01 06:00.
        assert migrated.handover.last_legacy_run_time == datetime(2019, 12, 31, 6, tzinfo=UTC)
        assert migrated.handover.first_new_run_time == datetime(2020, 1, 1, 6, tzinfo=UTC)

        # The handover's times are what get_job_tokens() takes.
        first = client.get_job_tokens("example_python", "daily_reporting",
                                      migrated.handover.first_new_run_time)
        assert first.fingerprint == migrated.fingerprint
        final = {token.job: token for token in first.jobs}["final"]
        assert final.name == "/workflow/daily_reporting/1577858400000/job/waiting/final"
        assert first.end_date == "2019-12-31"

        batch = client.migrated_workflows([metadata, MigrationMetadata(
            "example_python", "no_such_workflow", datetime(2020, 1, 1, tzinfo=UTC))])
        assert batch[0].fingerprint == migrated.fingerprint
        assert isinstance(batch[1], NotFound) and "no_such_workflow" in str(batch[1])


def test_tokens_and_spec_of_a_past_layout_by_fingerprint(start_server, example_copy):
    repo = example_copy("python_repo")
    server = start_server(clusters=example_clusters(python_repo=repo))
    with TokenFetcherClient(f"127.0.0.1:{server.port}", cache_ttl=0.001) as client:
        old = client.get_job_tokens("example_python", "db_backup", RUN_TIME, manual=True)
        module = repo / "example_workflows" / "maintenance.py"
        module.write_text(module.read_text().replace("backup done", "backup finished"))
        wait_for(lambda: client.get_spec("example_python", "db_backup").fingerprint
                 != old.fingerprint, message="the edited definition to be served")
        pinned = client.get_job_tokens("example_python", "db_backup", RUN_TIME, manual=True,
                                       fingerprint=old.fingerprint)
        assert pinned == old
        final = {t.job: t for t in pinned.jobs}["final"]
        assert final.command == "echo backup done"
        spec = client.get_spec("example_python", "db_backup", fingerprint=old.fingerprint)
        assert spec.fingerprint == old.fingerprint
