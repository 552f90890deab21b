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
