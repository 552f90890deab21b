"""index.html in headless Chromium (Debian's ``chromium``, installed by .ci/run): every
image loads from disk by its relative path, and a screenshot of the page is taken."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from harness.report import write_report
from harness.report.charts import CHARTS
from tests.report._results import write_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does)"
    ),
]

# Appended to a copy of index.html next to it (same relative paths): once everything has
# loaded, each image's naturalWidth goes into the DOM that --dump-dom prints.
_PROBE = """
<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-natural-width", String(img.naturalWidth));
  }
  document.body.setAttribute("data-probed", "yes");
});
</script>
"""


def _chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium in its own process group; stop that group by its PID if it
    outlives the timeout."""
    command = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--allow-file-access-from-files",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        *args,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium did not finish within 90 s: {command}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    write_results(out)
    write_report(out)
    return out / "index.html"


def test_every_image_of_the_page_loads(page, tmp_path):
    probe = page.with_name("_probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    assert 'data-probed="yes"' in dom, dom[:2000]
    images = re.findall(r'<img src="([^"]+)"[^>]*data-natural-width="(\d+)"', dom)
    charts = page.parent / "charts"
    drawn = {f"charts/{c.name}.png" for c in CHARTS if (charts / f"{c.name}.png").exists()}
    assert {src for src, _ in images} == drawn
    assert len(drawn) == len(CHARTS)  # the synthetic folder has data for every chart
    for src, width in images:
        assert int(width) > 0, f"{src} did not load"


def test_a_screenshot_of_the_page_is_taken(page, tmp_path):
    shot = tmp_path / "page.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,3000", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a page of tables and charts, not a blank one


# At a laptop's width: whether the page scrolls sideways, and where the verdict grid (the
# first table) starts, measured by the browser once the page has loaded.
_LAYOUT = """
<script>
window.addEventListener("load", () => {
  const grid = document.querySelector("table").getBoundingClientRect();
  const body = document.body;
  body.setAttribute("data-scroll-width", String(document.documentElement.scrollWidth));
  body.setAttribute("data-inner-width", String(window.innerWidth));
  body.setAttribute("data-grid-top", String(grid.top));
  body.setAttribute("data-inner-height", String(window.innerHeight));
});
</script>
"""


def _layout(page: Path, tmp_path: Path) -> dict[str, float]:
    probe = page.with_name("_layout.html")
    probe.write_text(page.read_text().replace("</body>", _LAYOUT + "</body>"))
    dom = _chromium(tmp_path, "--window-size=1366,768", "--dump-dom", probe.as_uri())
    found = dict(
        re.findall(r'data-(scroll-width|inner-width|grid-top|inner-height)="([\d.]+)"', dom)
    )
    assert len(found) == 4, dom[:2000]
    return {k: float(v) for k, v in found.items()}


def test_at_a_laptops_width_no_sideways_scroll_and_the_grid_in_view(page, tmp_path):
    layout = _layout(page, tmp_path)
    assert layout["scroll-width"] <= layout["inner-width"], layout
    assert layout["grid-top"] < layout["inner-height"] - 100, layout  # its first rows show


def test_every_link_resolves_and_each_grid_cell_has_its_scenario_page(page, tmp_path):
    """Every relative link of the report and of the scenario pages names a file that is
    there; each cell of the verdict grid links to its scenario's page, which has its chart
    (loaded in Chromium) and says what happened."""
    pages = [page, *sorted(page.parent.glob("*/index.html"))]
    assert len(pages) > 2
    for html in pages:
        for href in re.findall(r'href="([^"#:]+)"', html.read_text()):
            assert (html.parent / href).exists(), f"{html}: {href}"
    grid = page.read_text().split("<table>")[1]
    linked = set(re.findall(r'href="([^"/]+)/index.html"', grid))
    assert linked == {p.parent.name for p in pages[1:]}
    scenario = pages[1]
    probe = scenario.with_name("_probe.html")
    probe.write_text(scenario.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    assert re.search(r'<img src="timeline.png"[^>]*data-natural-width="[1-9]', dom), dom[:2000]
    assert "Verdict: " in dom
