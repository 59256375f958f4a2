"""report.html in a real browser: headless Chromium runs plotly.js and the chart renders
(an SVG plot with the verdict window annotated), offline, from the file alone."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import SAMPLES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/setup installs it)")
def test_report_renders_in_chromium(tmp_path):
    out = tmp_path / "o"
    subprocess.run(
        [sys.executable, "-m", "forensics", "triage", str(SAMPLES / "site-outage"), "-o", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert 'class="main-svg"' in dom, "plotly did not render the timeline"
    assert "[1] network.site_outage" in dom  # the verdict window's annotation in the chart
    assert "site depot-south" in dom and "CP-004" in dom
