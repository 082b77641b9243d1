"""The HTML report: what build_report() counts and what the page shows (the page in a
real browser is the browser tier's, tests/browser)."""

from __future__ import annotations

from datetime import UTC, datetime
from html.parser import HTMLParser

from google.protobuf.timestamp_pb2 import Timestamp

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.migration import MigrationMetadata
from token_fetcher.migration_record import Record
from token_fetcher.report import build_report, render_html, write_html

DAY = 86_400
REFERENCE = 1_420_070_400  # 2015-01-01 00:00 UTC
JAN_1 = datetime(2020, 1, 1, tzinfo=UTC)
NOW = 1_700_000_000


def summary(name: str, status: int = pb.PARSE_STATUS_OK, fingerprint: str = "",
            error: str = "") -> pb.WorkflowSummary:
    result = pb.WorkflowSummary(name=name, status=status, fingerprint=fingerprint or name * 4)
    if status != pb.PARSE_STATUS_BROKEN:
        result.schedule.CopyFrom(pb.Schedule(reference_time=Timestamp(seconds=REFERENCE),
                                             recurrence_seconds=DAY))
    if error:
        result.errors.append(pb.ParseError(message=error))
    return result


def migrate(workflow: str, time: int, fingerprint: str = "") -> Record:
    return Record("migrate", "core", workflow, time, "ana@host", fingerprint or workflow * 4,
                  1_577_836_800, REFERENCE, DAY, first_new_run=1_577_836_800 + DAY)


def rollback(workflow: str, time: int) -> Record:
    return Record("rollback", "core", workflow, time, "ana@host", workflow * 4, 1_577_836_800,
                  REFERENCE, DAY, rollback_date=1_578_000_000, last_new_run=1_577_923_200,
                  first_legacy_run=1_578_009_600)


def scenario():
    entries = [
        MigrationMetadata("core", "alpha", JAN_1),
        MigrationMetadata("core", "beta", JAN_1, rollback_date=datetime(2020, 1, 3, tzinfo=UTC)),
        MigrationMetadata("core", "gamma", JAN_1),
        MigrationMetadata("core", "gone", JAN_1),
        MigrationMetadata("edge", "delta", JAN_1),
    ]
    records = [migrate("alpha", NOW - 5 * DAY), migrate("beta", NOW - 4 * DAY),
               migrate("gamma", NOW - 3 * DAY, fingerprint="old"), rollback("beta", NOW - 2 * DAY),
               migrate("gone", NOW - 2 * DAY)]
    answers = {
        "core": pb.ListWorkflowsResponse(workflows=[
            summary("alpha"), summary("beta"), summary("gamma", pb.PARSE_STATUS_STALE),
            summary("broken", pb.PARSE_STATUS_BROKEN, error="SyntaxError at line 3"),
            summary("fresh"),
        ]),
        "edge": "UNAVAILABLE: connection refused",
    }
    return build_report(entries, records, answers, ["x.json: invalid JSON"], now=NOW)


def test_counts_per_status() -> None:
    report = scenario()
    assert report.counts == {"migrated": 4, "rolled back": 1, "blocked": 1,
                             "stale or broken now": 2, "not migrated": 1}


def test_rows_per_cluster() -> None:
    clusters = {name: (rows, error) for name, rows, error in scenario().clusters}
    core = {row.workflow: row for row in clusters["core"][0]}
    assert sorted(core) == ["alpha", "beta", "broken", "gamma", "gone"]  # "fresh" is counted
    # Migrated exactly on a run: that run is Pinball's.
    assert core["alpha"].handover == ("Pinball to 2020-01-01T00:00:00Z; "
                                      "Airflow from 2020-01-02T00:00:00Z")
    assert core["beta"].status == "rolled back"
    assert core["beta"].handover == ("Airflow to 2020-01-03T00:00:00Z; "
                                     "Pinball from 2020-01-04T00:00:00Z")
    assert (core["gamma"].parse_status, core["gamma"].fingerprint_change) == ("STALE", "changed")
    assert core["alpha"].fingerprint_change == "unchanged"
    assert core["gone"].parse_status == "MISSING"
    # The schedule comes from the record when the server no longer has one.
    assert core["gone"].handover.startswith("Pinball to 2020-01-01")
    assert (core["broken"].status, core["broken"].notes) == ("blocked", "SyntaxError at line 3")
    edge_rows, edge_error = clusters["edge"]
    assert edge_error == "UNAVAILABLE: connection refused"
    assert edge_rows[0].parse_status == "UNKNOWN"
    assert edge_rows[0].handover == "unknown (no schedule)"


def test_the_timeline_follows_migrations_and_rollbacks() -> None:
    assert scenario().timeline == [(NOW - 5 * DAY, 1), (NOW - 4 * DAY, 2), (NOW - 3 * DAY, 3),
                                   (NOW - 2 * DAY, 2), (NOW - 2 * DAY, 3)]


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_is_self_contained_with_a_chart(tmp_path) -> None:
    path = tmp_path / "report.html"
    write_html(path, scenario())
    html = path.read_text()
    elements = _Elements()
    elements.feed(html)
    tags = [tag for tag, _ in elements.tags]
    assert tags.count("svg") == 1 and tags.count("circle") == 5
    assert "script" not in tags and "link" not in tags and "img" not in tags
    sources = [attrs for _, attrs in elements.tags if "src" in attrs or "href" in attrs]
    assert sources == []
    assert 'aria-label="workflows in Airflow over time, now 3"' in html
    assert '<b>4</b><span>migrated</span>' in html
    assert "Cluster edge" in html and "server: UNAVAILABLE: connection refused" in html
    assert "<li>x.json: invalid JSON</li>" in html


def test_names_and_messages_are_escaped() -> None:
    hostile = "<script>alert(1)</script>"
    report = build_report(
        [], [], {"core": pb.ListWorkflowsResponse(workflows=[
            summary("w", pb.PARSE_STATUS_BROKEN, error=hostile)])}, [hostile], now=NOW)
    html = render_html(report)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_no_records_yet() -> None:
    html = render_html(build_report([], [], {}, now=NOW))
    assert '<svg id="migrations-chart"' in html and "no migrations recorded yet" in html
