"""Tests for unet_seg.data.transforms: normalisation, augmentation invariants."""

from __future__ import annotations

import numpy as np
import pytest

from unet_seg.data.transforms import normalize_percentile


def test_normalize_percentile_maps_percentiles_to_0_and_1(rng: np.random.Generator) -> None:
    image = rng.normal(100.0, 20.0, size=(64, 64)).astype(np.uint16)
    out = normalize_percentile(image, 1.0, 99.8)
    assert out.dtype == np.float32
    assert out.shape == image.shape
    np.testing.assert_allclose(np.percentile(out, [1.0, 99.8]), [0.0, 1.0], atol=1e-5)
    assert out.min() < 0.0 and out.max() > 1.0  # no clipping beyond the percentiles


def test_normalize_percentile_exact_on_ramp() -> None:
    ramp = np.arange(101, dtype=np.float64)
    out = normalize_percentile(ramp, 0.0, 100.0)
    np.testing.assert_allclose(out, ramp / 100.0, atol=1e-7)


def test_normalize_percentile_constant_and_bad_input() -> None:
    assert np.all(normalize_percentile(np.full((4, 4), 7.0)) == 0.0)
    with pytest.raises(ValueError, match="low < high"):
        normalize_percentile(np.zeros(3), 50.0, 10.0)
    with pytest.raises(ValueError, match="NaN"):
        normalize_percentile(np.array([0.0, np.nan, 1.0]))
