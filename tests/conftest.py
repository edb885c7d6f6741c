"""Shared fixtures: sample data, the ISBI 2012 data beside the checkout, a seeded RNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unet_seg.config import PROJECT_ROOT

SAMPLES_DIR = PROJECT_ROOT / "data_samples"
ISBI_DIR = PROJECT_ROOT.parent / "shared" / "datasets" / "isbi2012"


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
