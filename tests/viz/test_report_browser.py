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
from hydra import compose, initialize_config_dir
from PIL import Image

from unet_seg.config import config_dir
from unet_seg.evaluation.evaluate import evaluate
from unet_seg.io import Volume, write_volume

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
def report(tmp_path_factory) -> tuple[Path, list[dict]]:
    """``unet-seg-evaluate``'s report of 12 small volumes of growing error, and its rows."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("evaluation")
    truth = np.zeros((6, 64, 80), np.uint8)
    truth[:, 10:40, 20:60] = 1
    for i in range(12):
        pred = np.where(rng.random(truth.shape) < i / 40, 1 - truth, truth).astype(np.uint8)
        write_volume(root / "pred" / f"volume_{i:02d}_labels.tif", Volume(pred))
        write_volume(root / "gt" / f"volume_{i:02d}_labels.tif", Volume(truth))
        image = rng.normal(100, 20, truth.shape) + 80 * truth
        write_volume(root / "gt" / f"volume_{i:02d}.tif", Volume(image.astype(np.uint16)))
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        overrides = [f"pred_dir={root / 'pred'}", f"gt_dir={root / 'gt'}", "progress=false"]
        cfg = compose("evaluate", overrides=overrides)
    summary = evaluate(cfg)
    assert summary["evaluated"] == 12
    return root / "pred" / "report.html", summary["files"]


def test_report_in_headless_chromium(chromium, report, tmp_path):
    path, rows = report
    shot = tmp_path / "report.png"
    # Sorted on load by pixel error, descending (report.html#sort=-pixel_error); one run dumps
    # the DOM after the script ran and takes a screenshot.
    action = ["--dump-dom", f"--screenshot={shot}"]
    result = browse(chromium, f"{path.as_uri()}#sort=-pixel_error", action, tmp_path)
    assert console_messages(result) == []
    dom = result.stdout
    assert re.search(r'<html[^>]*data-report-ready="12"', dom), dom[:300]
    table = dom[dom.index('<table id="files"') :]
    listed = re.findall(r'<td data-v="(volume_\d\d)">', table[: table.index("</table>")])
    assert sorted(listed) == [r["file"] for r in rows]  # every evaluated file, once
    by_error = sorted(rows, key=lambda r: -r["pixel_error"])  # stable, as the page's sort
    assert listed == [r["file"] for r in by_error] != sorted(listed)
    with Image.open(shot) as png:
        assert png.size == WINDOW
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    # The embedded histograms were decoded and drawn: their bar colour is on the page.
    assert np.all(np.abs(pixels.astype(int) - HIST_BLUE) <= 2, axis=1).sum() > 1000
