"""The peak memory benchmarks and memory tests report: a subprocess's own, not its parent's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unet_seg.peak_memory import peak_rss_bytes, peak_rss_mib

MIB = 2**20
ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")


def child_peak(code: str) -> int:
    """The peak a fresh Python reports after running ``code``, in bytes."""
    script = f"{code}\nfrom unet_seg.peak_memory import peak_rss_bytes\nprint(peak_rss_bytes())"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=ROOT)  # fmt: skip
    return int(run.stdout.split()[-1])


@linux_only
def test_a_child_does_not_report_its_parents_memory():
    ballast = np.ones(400 * MIB // 8)  # resident in this process while the child starts
    assert peak_rss_bytes() >= ballast.nbytes
    # ru_maxrss would say at least 400 MiB here: the pages shared between fork and exec.
    assert child_peak("") < 200 * MIB


@linux_only
def test_a_childs_own_allocation_is_counted():
    alone = child_peak("")
    grown = child_peak("import numpy as np; a = np.ones(300 * 2**20 // 8)")
    assert grown - alone >= 290 * MIB


def test_mib_is_bytes_scaled():
    assert peak_rss_mib() == pytest.approx(peak_rss_bytes() / MIB, rel=0.01)
