"""report.html opened once in headless Chromium (Debian's ``chromium``): it renders, offline, without
JavaScript errors. CI installs Chromium (``apt-get install -y chromium``); elsewhere this skips."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


def _dump_dom(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after the page's scripts ran, and Chromium's log (console messages included)."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
        "--dump-dom", page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout, done.stderr


def test_report_renders_without_javascript_errors(written_report: Path, tmp_path: Path) -> None:
    dom, log = _dump_dom(written_report, tmp_path / "profile")
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert console == [], "the page logged to the console:\n" + "\n".join(console)
    assert "Uncaught" not in log
    # plotly drew every figure: each plot div gets the js-plotly-plot class and an SVG
    assert len(re.findall(r'class="[^"]*js-plotly-plot', dom)) == 5
    assert 'class="main-svg"' in dom
    assert 'id="pareto-table"' in dom
