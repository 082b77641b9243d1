"""The migration report in a real browser: it loads from a file with nothing fetched,
lays out its chart with a visible size, and renders to a screenshot."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from test_report import scenario

from token_fetcher.report import write_html

# Quiet, offline, no profile of the user's: a test browser that talks to nobody.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1200,1000"]
# Measures the chart as laid out and writes the numbers into the DOM that --dump-dom prints.
# Added to a copy of the page: the report itself has no scripts.
PROBE = """<script>
const chart = document.getElementById("migrations-chart");
const box = chart.getBoundingClientRect();
const line = chart.querySelector("path.line");
document.body.dataset.probe = JSON.stringify({
  width: box.width, height: box.height,
  line: line ? line.getTotalLength() : 0,
  dots: chart.querySelectorAll("circle").length,
  cards: document.querySelectorAll(".card").length,
  resources: performance.getEntriesByType("resource").length,
});
</script>"""


def run_browser(browser: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=90, check=True,
    )


def test_the_chart_is_laid_out(browser: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(page, scenario())
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_browser(browser, tmp_path, "--dump-dom", probed.as_uri()).stdout
    start = dom.index('data-probe="') + len('data-probe="')
    probe = json.loads(dom[start:dom.index('"', start)].replace("&quot;", '"'))
    assert probe["width"] > 300 and probe["height"] > 100, probe
    assert probe["line"] > 100, probe
    assert probe["dots"] == 5 and probe["cards"] == 5, probe
    assert probe["resources"] == 0, probe  # self-contained: nothing loaded from anywhere


def test_the_page_renders_to_a_screenshot(browser: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(page, scenario())
    shot = tmp_path / "report.png"
    run_browser(browser, tmp_path, f"--screenshot={shot}", page.as_uri())
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(data[16:20], "big") == 1200  # the width in the PNG header
