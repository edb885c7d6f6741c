"""``report.html`` in a real browser: headless Chromium loads it offline, runs its script without
a console message, lists every evaluated file, sorts the table, and renders the pictures.

Debian's ``chromium`` package is installed on first use when missing and this runs as root
(``apt-get``); otherwise the tests are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unet_seg.viz.report import ReportBuilder

WINDOW = (1280, 2400)
HIST_BLUE = (0x44, 0x77, 0xAA)  # the histograms' bar colour


def _install_chromium() -> str | None:
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    # The package lists may be missing or stale (a fresh container): update, then try again.
    for commands in ([install], [["apt-get", "update", "-q"], install]):
        try:
            for command in commands:
                subprocess.run(command, env=env, capture_output=True, timeout=900, check=True)
        except (subprocess.SubprocessError, OSError):
            continue
        break
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or _install_chromium()
    if path is None:
        pytest.skip("chromium is not installed and could not be installed (needs root and apt)")
    return path


def browse(chromium: str, url: str, action: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """One headless Chromium run; its stderr holds the page's console messages."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr",
               "--v=0", f"--window-size={WINDOW[0]},{WINDOW[1]}", *action, url]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def console_messages(result: subprocess.CompletedProcess) -> list[str]:
    """Every console line: the page logs nothing, so any message (an uncaught error, a
    warning, a resource that failed to load) is a fault."""
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    truth = np.zeros((6, 64, 80), np.uint8)
    truth[:, 10:40, 20:60] = 1
    builder, rows = ReportBuilder(), []
    for i in range(12):
        pred = np.where(rng.random(truth.shape) < i / 40, 1 - truth, truth)
        builder.add(f"volume_{i:02d}", pred, truth, rng.normal(size=truth.shape))
        rows.append({"file": f"volume_{i:02d}", "segments": "components",
                     "dice_1": float(1 - i / 30), "vi": float(i % 5)})  # fmt: skip
    summary = {"pred_dir": "preds", "gt_dir": "truth", "files": rows, "failed": [],
               "mean": {"dice_1": 0.8, "vi": 2.0}, "pooled": {"dice_1": 0.8}}  # fmt: skip
    path = builder.write(tmp_path_factory.mktemp("report") / "report.html", summary, "dice_1")
    return path, [r["file"] for r in rows]


def test_report_in_headless_chromium(chromium, report, tmp_path):
    path, files = report
    shot = tmp_path / "report.png"
    # Sorted on load by vi, descending (report.html#sort=-vi); one run dumps the DOM after the
    # script ran and takes a screenshot.
    action = ["--dump-dom", f"--screenshot={shot}"]
    result = browse(chromium, f"{path.as_uri()}#sort=-vi", action, tmp_path)
    assert console_messages(result) == []
    dom = result.stdout
    assert re.search(r'<html[^>]*data-report-ready="12"', dom), dom[:300]
    table = dom[dom.index('<table id="files"') :]
    listed = re.findall(r'<td data-v="(volume_\d\d)">', table[: table.index("</table>")])
    assert sorted(listed) == files  # every evaluated file, once
    vi = [i % 5 for i in range(12)]
    assert listed == [files[i] for i in sorted(range(12), key=lambda i: (-vi[i], i))]
    with Image.open(shot) as png:
        assert png.size == WINDOW
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    # The embedded histograms were decoded and drawn: their bar colour is on the page.
    assert np.all(np.abs(pixels.astype(int) - HIST_BLUE) <= 2, axis=1).sum() > 1000
