"""GetWorkflowSpec answers kept by their request's bytes: used while true, never after.

The store's rules, then a real server: a repeated request is answered from its bytes, and
its answer still moves with the clock (next_run_time) and with a reload.
"""

from __future__ import annotations

import calendar
import os
import threading

import grpc

from tests.helpers import example_clusters, wait_for
from token_fetcher import kept_answers
from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.kept_answers import KeptAnswers

PY = "example_python"
REQUEST = b"request"


class Generations:
    """Stands in for the catalog's generation, moved by the test."""

    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        return self.value


def test_an_answer_is_kept_for_exactly_its_bytes_and_its_seconds() -> None:
    kept = KeptAnswers(Generations())
    kept.keep(REQUEST, b"answer", generation=0, since=100, until=200)
    assert kept.get(REQUEST, 100) == kept.get(REQUEST, 199) == b"answer"
    assert kept.get(REQUEST, 99) is None  # a clock that went back: the run may differ
    assert kept.get(REQUEST, 200) is None  # the run it names has come
    assert kept.get(REQUEST + b"\x00", 150) is None


def test_a_published_snapshot_ends_every_kept_answer() -> None:
    generation = Generations()
    kept = KeptAnswers(generation)
    kept.keep(REQUEST, b"old", generation=0, since=0, until=10)
    kept.keep(b"other", b"old other", generation=0, since=0, until=10)
    generation.value = 1
    # The first request after the load drops them all...
    assert (kept.get(REQUEST, 5), len(kept)) == (None, 0)
    # ...an answer made from the snapshots before it is not kept...
    kept.keep(REQUEST, b"old", generation=0, since=0, until=10)
    assert (kept.get(REQUEST, 5), len(kept)) == (None, 0)
    # ...and one made after it is.
    kept.keep(REQUEST, b"new", generation=1, since=0, until=10)
    assert (kept.get(REQUEST, 5), kept.get(b"other", 5), len(kept)) == (b"new", None, 1)


def test_a_load_with_no_request_after_it_still_drops_the_answers_at_the_next_keep() -> None:
    generation = Generations()
    kept = KeptAnswers(generation)
    kept.keep(REQUEST, b"old", generation=0, since=0, until=10)
    generation.value = 1
    kept.keep(b"other", b"new", generation=1, since=0, until=10)
    assert (kept.get(REQUEST, 5), kept.get(b"other", 5), len(kept)) == (None, b"new", 1)


def test_a_full_store_starts_over() -> None:
    kept = KeptAnswers(Generations(), capacity=3)
    for index in range(3):
        kept.keep(b"%d" % index, b"answer", generation=0, since=0, until=10)
    assert len(kept) == 3
    kept.keep(b"3", b"answer", generation=0, since=0, until=10)
    assert len(kept) == 1 and kept.get(b"3", 0) == b"answer" and kept.get(b"0", 0) is None


def test_no_answer_from_before_a_load_lands_in_the_store_after_it() -> None:
    """Threads keep answers while loads publish and ``get`` drops the old ones: whatever
    ``get`` returns was made from the generation it is asked in. A stress check: the
    races it runs are too narrow to be hit on every run; the orderings the answers'
    truth rests on are checked one by one above and below."""
    generation = Generations()
    kept = KeptAnswers(generation)
    stop = threading.Event()

    def keep_answers_of_their_generation() -> None:
        while not stop.is_set():
            seen = generation.value
            kept.keep(REQUEST, b"%d" % seen, generation=seen, since=0, until=10)

    threads = [threading.Thread(target=keep_answers_of_their_generation) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for value in range(1, 2001):
            generation.value = value
            answer = kept.get(REQUEST, 0)
            assert answer is None or answer == b"%d" % value
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not kept_answers._EMPTY.answers  # the shared empty store stayed empty


def _utc(*fields: int) -> int:
    return calendar.timegm((*fields, 0, 0, 0)[:6])


def _spec_request(**fields) -> pb.GetWorkflowSpecRequest:
    return pb.GetWorkflowSpecRequest(cluster=PY, workflow="daily_reporting", **fields)


def test_a_repeated_request_is_answered_from_its_bytes(start_server, stub_for) -> None:
    server = start_server(example_clusters())
    stub = stub_for(server)
    first = stub.GetWorkflowSpec(_spec_request())
    not_modified = stub.GetWorkflowSpec(_spec_request(if_none_match=first.fingerprint))
    assert not_modified.not_modified and not not_modified.HasField("spec")

    def resolve_no_more(*_args):
        raise AssertionError("resolved again")

    server.service._resolve = resolve_no_more
    assert stub.GetWorkflowSpec(_spec_request()) == first
    assert stub.GetWorkflowSpec(_spec_request(if_none_match=first.fingerprint)) == not_modified
    try:  # other bytes take the long way
        stub.GetWorkflowSpec(_spec_request(if_none_match="other"))
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INTERNAL
    else:
        raise AssertionError("a request never asked was answered from a kept answer")


def test_a_kept_answer_moves_with_the_clock(start_server, stub_for) -> None:
    server = start_server(example_clusters())
    stub = stub_for(server)
    server.service.clock = lambda: _utc(2020, 1, 2, 5, 59, 59)
    assert stub.GetWorkflowSpec(_spec_request()).spec.schedule.next_run_time.seconds == \
        _utc(2020, 1, 2, 6)
    server.service.clock = lambda: _utc(2020, 1, 2, 6)  # that run has come: the next one
    assert stub.GetWorkflowSpec(_spec_request()).spec.schedule.next_run_time.seconds == \
        _utc(2020, 1, 3, 6)
    server.service.clock = lambda: _utc(2020, 1, 1, 12)  # a clock set back
    assert stub.GetWorkflowSpec(_spec_request()).spec.schedule.next_run_time.seconds == \
        _utc(2020, 1, 2, 6)


def test_a_kept_answer_ends_with_the_load_that_changes_it(start_server, stub_for,
                                                         example_copy) -> None:
    repo = example_copy("python_repo")
    server = start_server(example_clusters(python_repo=repo))
    stub = stub_for(server)
    before = stub.GetWorkflowSpec(_spec_request())
    assert stub.GetWorkflowSpec(_spec_request()) == before  # kept
    module = repo / "example_workflows" / "reporting.py"
    text = module.read_text()
    assert text.count("'LoadEventsJob', priority=30)") == 1
    edited = module.with_name(".reporting.py.tmp")  # replaced at once, as editors do
    edited.write_text(text.replace("'LoadEventsJob', priority=30)",
                                   "'LoadEventsJob', priority=31)"))
    os.replace(edited, module)
    after = wait_for(lambda: (lambda answer: answer if answer.fingerprint != before.fingerprint
                              else None)(stub.GetWorkflowSpec(_spec_request())),
                     timeout=60, message="the edited spec")

    def priority(answer) -> float:
        return {job.name: job.priority for job in answer.spec.jobs}["load_events"]

    assert priority(after) == priority(before) + 1


def test_a_long_request_is_answered_but_not_kept(start_server, stub_for) -> None:
    server = start_server(example_clusters())
    stub = stub_for(server)
    first = stub.GetWorkflowSpec(_spec_request())
    kept = len(server.service._kept)
    # Bytes the server accepts (an unknown field, a long if_none_match) would be kept
    # whole as keys: not past a few names' length.
    long_one = _spec_request(if_none_match="x" * (kept_answers.MAX_REQUEST_BYTES + 1))
    assert stub.GetWorkflowSpec(long_one) == first
    assert len(server.service._kept) == kept


def test_an_answer_made_while_a_load_publishes_is_not_kept(start_server, stub_for) -> None:
    """The service reads the generation before the snapshot: an answer that a load
    overtakes is made again, not kept under the load's generation."""
    server = start_server(example_clusters())
    stub = stub_for(server)
    catalog = server.catalog
    read_snapshot = catalog.snapshot

    def snapshot_then_a_load(cluster: str):
        found = read_snapshot(cluster)
        catalog.generation += 1  # a load of another cluster publishes just then
        return found

    catalog.snapshot = snapshot_then_a_load
    stub.GetWorkflowSpec(_spec_request())
    assert len(server.service._kept) == 0


def test_a_kept_answer_follows_a_status_change_with_the_same_fingerprint(
        start_server, stub_for, example_copy) -> None:
    """What a scheduler asks over and over: "has it changed since this fingerprint?" A
    definition that breaks keeps its fingerprint (its last good version) but not its
    status, and the kept answer must say so."""
    repo = example_copy("python_repo")
    server = start_server(example_clusters(python_repo=repo))
    stub = stub_for(server)
    fingerprint = stub.GetWorkflowSpec(_spec_request()).fingerprint
    asked = _spec_request(if_none_match=fingerprint)
    ok = stub.GetWorkflowSpec(asked)
    assert ok.not_modified and ok.status == pb.PARSE_STATUS_OK and not ok.errors
    module = repo / "example_workflows" / "reporting.py"
    broken = module.with_name(".reporting.py.tmp")
    broken.write_text(module.read_text() + "def broken(:\n")
    os.replace(broken, module)
    stale = wait_for(lambda: (lambda answer: answer if answer.status == pb.PARSE_STATUS_STALE
                              else None)(stub.GetWorkflowSpec(asked)),
                     timeout=60, message="the kept answer to say STALE")
    assert stale.not_modified and stale.fingerprint == fingerprint
    assert [e.kind for e in stale.errors] == [pb.ERROR_KIND_SYNTAX_ERROR]
