"""What the benchmark scripts share to publish their results: a section of ``benchmarks/RESULTS.md`` between
two markers (replaced on each run, so a rerun never duplicates it), and a PNG of a plotly page by headless
Chromium (RESULTS.md is read on GitHub, where HTML plots do not render)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, title: str, text: str, *, results: Path = RESULTS) -> None:
    """Replace the section between ``<!-- name:begin -->`` and ``<!-- name:end -->`` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    current = results.read_text() if results.is_file() else "# Benchmark results\n"
    section = f"{begin}\n## {title}\n\n{text.rstrip()}\n{end}"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + section + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(current)


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 1080) -> bool:
    """Save the top of ``html`` as ``png``; False (and a line printed) where no Chromium is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print(f"no Chromium on PATH: {png.name} was not written")
        return False
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}",
                    "--virtual-time-budget=5000", f"--screenshot={png}", html.resolve().as_uri()],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return True
