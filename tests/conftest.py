"""Shared fixtures: sample data, the ISBI 2012 data beside the checkout, a seeded RNG."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.slurm_cluster import slurm  # noqa: F401  (a fixture: the session's single-node SLURM)
from unet_seg.config import PROJECT_ROOT

SAMPLES_DIR = PROJECT_ROOT / "data_samples"
ISBI_DIR = PROJECT_ROOT.parent / "shared" / "datasets" / "isbi2012"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n N``), each worker gets its share of the cores: N workers with
    torch's default of one thread per core would oversubscribe them N times over. Subprocesses
    the tests start inherit the share through ``OMP_NUM_THREADS``."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def samples_dir() -> Path:
    return SAMPLES_DIR


@pytest.fixture
def isbi_dir() -> Path:
    if not (ISBI_DIR / "train-volume.tif").is_file():
        pytest.skip(f"ISBI 2012 data not found at {ISBI_DIR}")
    return ISBI_DIR


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nothing can be written into: a read-only tmpfs where we are root and may mount,
    a chmod 555 folder where we are not root (root ignores permissions), else the test skips."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
