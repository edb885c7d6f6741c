"""The fixed intensity window (nnU-Net's CT scheme): its values exactly, the same in every reader
(in memory, lazily for training, block by block for prediction), and its checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unet_seg.data.lazy_regions import TargetRule, open_regions
from unet_seg.data.regions import build_regions
from unet_seg.inference.inputs import input_layout, region_reader
from unet_seg.io import Volume, write_volume
from unet_seg.normalization import (
    check_normalization,
    fixed_window,
    intensity_range,
    normalize,
)

# Exactly representable numbers: the expected values below are exact in float32 too.
WINDOW = {"low": 1.0, "high": 99.8, "window": [-100.0, 300.0], "mean": 40.0, "std": 80.0}


def test_the_window_clips_then_z_scores_exactly():
    raw = np.array([[-1024, -100, -99, 0], [40, 120, 300, 3071]], np.int16)
    expected = np.array([[-1.75, -1.75, -1.7375, -0.5], [0.0, 1.0, 3.25, 3.25]], np.float32)
    out = normalize(raw, WINDOW)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    # Percentile mode is untouched by the new keys' absence.
    np.testing.assert_array_equal(
        normalize(raw, {"low": 0.0, "high": 100.0}), (raw + 1024) / np.float32(4095)
    )


def test_the_window_reads_nothing_from_the_image():
    def never(low, high):
        raise AssertionError("a fixed window must not sample the image")

    assert intensity_range(WINDOW, never) == (40.0, 120.0, (-100.0, 300.0))
    assert intensity_range({"low": 2.0, "high": 98.0}, lambda a, b: (a, b)) == (2.0, 98.0, None)


@pytest.mark.parametrize(
    ("norm", "message"),
    [
        ({"window": [5, 5], "mean": 0, "std": 1}, "low < high"),
        ({"window": [0, 5], "mean": 0, "std": 0}, "std > 0"),
        ({"window": [0, float("nan")], "mean": 0, "std": 1}, "finite"),
        ({"window": [0, 5], "mean": 0}, "needs window: \\[low, high\\], mean and std"),
        ({"window": "wide", "mean": 0, "std": 1}, "needs window"),
    ],
)
def test_a_bad_window_is_refused(norm, message):
    with pytest.raises(ValueError, match=message):
        fixed_window(norm)


def test_the_stored_form_keeps_one_mode():
    assert check_normalization(WINDOW) == {"window": [-100.0, 300.0], "mean": 40.0, "std": 80.0}
    assert check_normalization(None) == {"low": 1.0, "high": 99.8}
    assert check_normalization({"low": 0.5, "high": 99.5, "window": None}) == {
        "low": 0.5, "high": 99.5}  # fmt: skip


def test_training_and_prediction_readers_apply_the_same_window(tmp_path: Path, rng):
    image = rng.integers(-1024, 3000, (2, 40, 36)).astype(np.int16)
    label = rng.integers(0, 2, (2, 40, 36)).astype(np.uint8)
    write_volume(tmp_path / "im.tif", Volume(image))
    write_volume(tmp_path / "lab.tif", Volume(label))
    pairs = [(tmp_path / "im.tif", tmp_path / "lab.tif")]
    expected = normalize(image, WINDOW)
    (loaded,) = build_regions(pairs, 3, 2, "train", normalization=WINDOW)
    np.testing.assert_array_equal(loaded.image[0], expected)  # (C, Z, Y, X)
    (lazy,) = open_regions(pairs, 3, 2, "train", TargetRule(), normalization=WINDOW)
    box = (slice(0, 2), slice(0, 40), slice(0, 36))
    np.testing.assert_array_equal(lazy.read_image(box)[0], expected)

    class Net:
        spatial_dims, in_channels = 2, 1

    layout = input_layout(tmp_path / "im.tif", image.shape, Net(), 0)
    lo, hi, clip = intensity_range(WINDOW, lambda a, b: (0.0, 0.0))
    read = region_reader(image, layout, lo, hi, clip)
    np.testing.assert_array_equal(read((slice(0, 2), slice(0, 40), slice(0, 36)))[0], expected)
