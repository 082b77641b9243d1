"""The migration report: one self-contained HTML page (inline CSS and SVG, no scripts,
nothing fetched) with the counts per status, a chart of workflows in Airflow over time
and a table per cluster.

build_report() joins the metadata files, the migration record and each cluster's
ListWorkflows answer; render_html() turns that into the page.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from token_fetcher._proto import token_fetcher_pb2 as pb
from token_fetcher.files import atomic_write_text
from token_fetcher.handovers import handover, rollback_handover
from token_fetcher.migration import MigrationMetadata
from token_fetcher.migration_record import Record, format_time

__all__ = ["STATUSES", "Report", "Row", "build_report", "render_html", "write_html"]

STATUSES = ("migrated", "rolled back", "blocked", "stale or broken now", "not migrated")
_UNWELL = ("STALE", "BROKEN", "MISSING")


@dataclass(frozen=True)
class Row:
    """One workflow in a cluster's table."""

    workflow: str
    status: str
    migration_date: str = ""
    handover: str = ""
    parse_status: str = ""
    fingerprint_then: str = ""
    fingerprint_now: str = ""
    notes: str = ""

    @property
    def fingerprint_change(self) -> str:
        if not self.fingerprint_then or not self.fingerprint_now:
            return "unknown"
        return "unchanged" if self.fingerprint_then == self.fingerprint_now else "changed"


@dataclass(frozen=True)
class Report:
    generated: int
    counts: dict[str, int]
    clusters: list[tuple[str, list[Row], str]]
    # (time, workflows in Airflow just after it), one point per record.
    timeline: list[tuple[int, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _iso(epoch: int | None) -> str:
    return "" if epoch is None else format_time(epoch)


def _handover_text(metadata: MigrationMetadata, schedule: tuple[int, int] | None) -> str:
    if schedule is None:
        return "unknown (no schedule)"
    reference, recurrence = schedule
    if metadata.rollback_epoch is None:
        runs = handover(reference, recurrence, metadata.migration_epoch)
        return (f"Pinball to {_iso(runs.last_legacy_run) or 'never'}; "
                f"Airflow from {_iso(runs.first_new_run)}")
    back = rollback_handover(reference, recurrence, metadata.migration_epoch,
                             metadata.rollback_epoch)
    return (f"Airflow to {_iso(back.last_new_run) or 'never'}; "
            f"Pinball from {_iso(back.first_legacy_run)}")


def _timeline(records: Sequence[Record]) -> list[tuple[int, int]]:
    in_airflow: set[tuple[str, str]] = set()
    points = []
    for record in sorted(records, key=lambda record: record.time):
        key = (record.cluster, record.workflow)
        if record.action == "migrate":
            in_airflow.add(key)
        else:
            in_airflow.discard(key)
        points.append((record.time, len(in_airflow)))
    return points


def build_report(
    entries: Iterable[MigrationMetadata],
    records: Sequence[Record],
    answers: Mapping[str, pb.ListWorkflowsResponse | str],
    problems: Sequence[str] = (),
    *,
    now: int,
) -> Report:
    """``answers``: each cluster's ListWorkflows answer, or the error that came instead."""
    by_cluster: dict[str, dict[str, MigrationMetadata]] = {}
    for entry in entries:
        by_cluster.setdefault(entry.cluster_name, {})[entry.workflow_name] = entry
    latest: dict[tuple[str, str], Record] = {}
    migrated_at: dict[tuple[str, str], Record] = {}
    for record in records:
        latest[record.cluster, record.workflow] = record
        if record.action == "migrate":
            migrated_at[record.cluster, record.workflow] = record
    counts = dict.fromkeys(STATUSES, 0)
    clusters = []
    for cluster in sorted(set(by_cluster) | set(answers)):
        answer = answers.get(cluster, "")
        error = answer if isinstance(answer, str) else ""
        summaries = {} if isinstance(answer, str) else {s.name: s for s in answer.workflows}
        migrated = by_cluster.get(cluster, {})
        rows = []
        for name in sorted(set(migrated) | set(summaries)):
            summary = summaries.get(name)
            metadata = migrated.get(name)
            if metadata is None:
                assert summary is not None
                if summary.status == pb.PARSE_STATUS_BROKEN:
                    counts["blocked"] += 1
                    first = summary.errors[0].message if summary.errors else ""
                    rows.append(Row(name, "blocked", parse_status="BROKEN",
                                    notes=" ".join(first.split())))
                else:
                    counts["not migrated"] += 1
                continue
            status = "migrated" if metadata.rollback_date is None else "rolled back"
            counts[status] += 1
            if error:
                parse_status = "UNKNOWN"
            elif summary is None:
                parse_status = "MISSING"
            else:
                parse_status = pb.ParseStatus.Name(summary.status).removeprefix("PARSE_STATUS_")
            if parse_status in _UNWELL:
                counts["stale or broken now"] += 1
            schedule = None
            if summary is not None and summary.HasField("schedule"):
                schedule = (summary.schedule.reference_time.seconds,
                            summary.schedule.recurrence_seconds)
            elif (cluster, name) in latest:
                record = latest[cluster, name]
                schedule = (record.reference, record.recurrence_seconds)
            then = migrated_at.get((cluster, name))
            rows.append(Row(
                name,
                status,
                migration_date=_iso(metadata.migration_epoch),
                handover=_handover_text(metadata, schedule),
                parse_status=parse_status,
                fingerprint_then=then.fingerprint if then else "",
                fingerprint_now=summary.fingerprint if summary else "",
            ))
        clusters.append((cluster, rows, error))
    return Report(now, counts, clusters, _timeline(records), list(problems))


# --- rendering ----------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1f2933;background:#f7f9fb}
h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.2rem;margin:2rem 0 .6rem}
.sub{color:#616e7c;margin:0 0 1.5rem}
.cards{display:flex;gap:.8rem;flex-wrap:wrap}
.card{background:#fff;border-radius:8px;padding:.8rem 1.1rem;min-width:120px;
box-shadow:0 1px 3px rgba(0,0,0,.12);border-top:4px solid var(--c)}
.card b{display:block;font-size:1.8rem}.card span{color:#52606d}
.chart{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:.6rem}
table{border-collapse:collapse;width:100%;background:#fff;border-radius:8px;overflow:hidden;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#eef2f6;font-weight:600}
.badge{border-radius:10px;padding:.05rem .5rem;font-size:.85em;white-space:nowrap;
background:var(--c);color:#fff}
code{font-size:.9em}.error{color:#b42318}
"""
_COLOURS = {
    "migrated": "#2f855a",
    "rolled back": "#b7791f",
    "blocked": "#c53030",
    "stale or broken now": "#9b2c2c",
    "not migrated": "#718096",
    "OK": "#2f855a",
    "STALE": "#b7791f",
    "BROKEN": "#c53030",
    "MISSING": "#9b2c2c",
    "UNKNOWN": "#718096",
}


def _badge(text: str) -> str:
    colour = _COLOURS.get(text, "#718096")
    return f'<span class="badge" style="--c:{colour}">{escape(text)}</span>'


def _chart(points: Sequence[tuple[int, int]], now: int) -> str:
    """A step chart of the workflows in Airflow over time, as inline SVG."""
    width, height, left, right, top, bottom = 720, 240, 48, 16, 16, 36
    if not points:
        return ('<svg id="migrations-chart" role="img" aria-label="no migrations yet" '
                f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
                f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" fill="#616e7c">'
                'no migrations recorded yet</text></svg>')
    start, end = points[0][0], max(now, points[-1][0])
    span = max(end - start, 1)
    peak = max(max(count for _, count in points), 1)

    def x(t: int) -> float:
        return left + (t - start) * (width - left - right) / span

    def y(count: int) -> float:
        return top + (peak - count) * (height - top - bottom) / peak

    path = [f"M{x(start):.1f},{y(0):.1f}"]
    for when, count in points:
        path.append(f"H{x(when):.1f}V{y(count):.1f}")
    path.append(f"H{x(end):.1f}")
    line = "".join(path)
    area = f"{line}V{y(0):.1f}Z"
    ticks = sorted({0, peak // 2, peak})
    grid = "".join(
        f'<line x1="{left}" x2="{width - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
        f'stroke="#e4e7eb"/><text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" '
        f'font-size="11" fill="#616e7c">{t}</text>'
        for t in ticks
    )
    dots = "".join(
        f'<circle cx="{x(when):.1f}" cy="{y(count):.1f}" r="3" fill="#2b6cb0">'
        f"<title>{escape(_iso(when))}: {count} in Airflow</title></circle>"
        for when, count in points
    )
    label = f"workflows in Airflow over time, now {points[-1][1]}"
    return (
        f'<svg id="migrations-chart" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {width} {height}" width="100%" height="{height}" '
        'xmlns="http://www.w3.org/2000/svg">'
        f"{grid}"
        f'<path class="area" d="{area}" fill="#2b6cb0" fill-opacity=".12"/>'
        f'<path class="line" d="{line}" fill="none" stroke="#2b6cb0" stroke-width="2"/>'
        f"{dots}"
        f'<text x="{left}" y="{height - 10}" font-size="11" fill="#616e7c">'
        f"{escape(_iso(start)[:10])}</text>"
        f'<text x="{width - right}" y="{height - 10}" text-anchor="end" font-size="11" '
        f'fill="#616e7c">{escape(_iso(end)[:10])}</text></svg>'
    )


def _table(rows: Sequence[Row]) -> str:
    head = ("<tr><th>Workflow</th><th>Status</th><th>Migration date</th><th>Handover</th>"
            "<th>Parse status now</th><th>Fingerprint since migration</th><th>Notes</th></tr>")
    body = []
    for row in rows:
        change = row.fingerprint_change
        if change == "changed":
            change = f"changed <code>{escape(row.fingerprint_then[:12])}</code> &rarr; " \
                     f"<code>{escape(row.fingerprint_now[:12])}</code>"
        elif change == "unchanged":
            change = f"unchanged <code>{escape(row.fingerprint_now[:12])}</code>"
        body.append(
            f"<tr><td>{escape(row.workflow)}</td><td>{_badge(row.status)}</td>"
            f"<td>{escape(row.migration_date)}</td><td>{escape(row.handover)}</td>"
            f"<td>{_badge(row.parse_status) if row.parse_status else ''}</td>"
            f"<td>{change if row.status != 'blocked' else ''}</td>"
            f"<td>{escape(row.notes)}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def render_html(report: Report) -> str:
    cards = "".join(
        f'<div class="card" data-status="{escape(status)}" style="--c:{_COLOURS[status]}">'
        f"<b>{count}</b><span>{escape(status)}</span></div>"
        for status, count in report.counts.items()
    )
    sections = []
    for cluster, rows, error in report.clusters:
        note = f'<p class="error">server: {escape(error)}</p>' if error else ""
        table = _table(rows) if rows else "<p>nothing migrated or blocked</p>"
        sections.append(f"<h2>Cluster {escape(cluster)}</h2>{note}{table}")
    problems = "".join(f"<li>{escape(problem)}</li>" for problem in report.problems)
    problems = f'<h2>Problems</h2><ul class="error">{problems}</ul>' if problems else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>token-fetcher migration report</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Migration report</h1>"
        f'<p class="sub">Pinball to Airflow, as of {escape(_iso(report.generated))}</p>'
        f'<div class="cards">{cards}</div>'
        '<h2>Workflows in Airflow over time</h2>'
        f'<div class="chart">{_chart(report.timeline, report.generated)}</div>'
        f"{''.join(sections)}{problems}"
        "</body></html>\n"
    )


def write_html(path: str | os.PathLike[str], report: Report) -> None:
    atomic_write_text(os.path.abspath(path), render_html(report))
