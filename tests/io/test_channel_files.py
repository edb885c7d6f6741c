"""nnU-Net's one file per channel (``<case>_0000``, ``<case>_0001``): grouped into one input per
case, read as one ``(C, *spatial)`` volume, named after the case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unet_seg.io import Volume, open_volume, write_volume
from unet_seg.io.channel_files import (
    ChannelFiles,
    describe,
    group_channel_files,
    naming_path,
)


def names(inputs) -> list:
    return [p.name if isinstance(p, Path) else tuple(q.name for q in p) for p in inputs]


def test_cases_are_grouped_only_where_the_folder_is_laid_out_for_the_model(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    nnunet = [a / f"{case}_{c:04d}.nii.gz" for case in ("x", "y") for c in (0, 1)]
    assert names(group_channel_files(nnunet, 2)) == [
        ("x_0000.nii.gz", "x_0001.nii.gz"), ("y_0000.nii.gz", "y_0001.nii.gz")
    ]  # fmt: skip
    # A one-channel model: every file is a case's channel 0000, named without it.
    ones = [a / "x_0000.tif", a / "y_0000.tif"]
    assert names(group_channel_files(ones, 1)) == [("x_0000.tif",), ("y_0000.tif",)]
    assert naming_path(group_channel_files(ones, 1)[0]) == a / "x.tif"
    # Time points of one stack, a missing channel, or a folder with another file: as they are.
    times = [b / f"t_{i:04d}.tif" for i in range(3)]
    assert group_channel_files(times, 1) == times and group_channel_files(times, 2) == times
    assert group_channel_files(nnunet[:3], 2) == nnunet[:3]
    mixed = [*nnunet, a / "notes.tif"]
    assert group_channel_files(mixed, 2) == mixed
    # Each folder on its own: the grouped one is grouped, the other left alone.
    grouped = group_channel_files([*times, *nnunet], 2)
    assert grouped[:3] == times and len(grouped) == 5
    assert describe(grouped[3]) == f"{a / 'x_0000.nii.gz'}+x_0001.nii.gz"


def test_channel_files_read_as_one_volume_with_the_first_files_geometry(tmp_path, rng):
    channels = [rng.integers(0, 500, (3, 9, 11)).astype(np.uint16) for _ in range(2)]
    paths = [
        write_volume(tmp_path / f"x_{c:04d}.nii.gz", Volume(a, spacing=(2.0, 0.5, 0.5)))
        for c, a in enumerate(channels)
    ]  # fmt: skip
    volume = ChannelFiles([open_volume(p) for p in paths])
    stacked = np.stack(channels)
    assert volume.shape == (2, 3, 9, 11) and volume.metadata["axes"] == "CZYX"
    assert volume.spacing == pytest.approx((2.0, 0.5, 0.5))
    np.testing.assert_array_equal(volume[...], stacked)
    np.testing.assert_array_equal(volume[:, 1, 2:5], stacked[:, 1, 2:5])
    np.testing.assert_array_equal(volume[1, :, 3], stacked[1, :, 3])


def test_channel_files_of_different_shapes_are_refused_naming_both(tmp_path):
    a = write_volume(tmp_path / "x_0000.tif", np.zeros((9, 11), np.uint8))
    b = write_volume(tmp_path / "x_0001.tif", np.zeros((9, 12), np.uint8))
    with pytest.raises(ValueError, match=r"x_0001\.tif: channel file of shape .*x_0000\.tif has"):
        ChannelFiles([open_volume(a), open_volume(b)])
