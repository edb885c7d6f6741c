"""What the 4th axis of a NIfTI holds, decided from its header, and a time axis of length 1 read
past and written back with its step and unit."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from unet_seg.io import open_volume, read_volume, write_volume
from unet_seg.io.nifti import fourth_axis


def header(shape, time_unit: str, step: float) -> nib.Nifti1Header:
    h = nib.Nifti1Header()
    h.set_data_shape(shape)
    h.set_xyzt_units("mm", time_unit)
    h.set_zooms((1.0, 1.0, 1.0, step)[: len(shape)])
    return h


@pytest.mark.parametrize(
    ("unit", "step", "kind"),
    [("sec", 2.0, "time"), ("msec", 0.5, "time"), ("usec", 3.0, "time"),
     ("sec", 1.0, "channels"),  # ITK's mark on any 4D file: the Decathlon's modalities
     ("sec", 0.0, "channels"), ("unknown", 2.0, "channels"), ("hz", 2.0, "channels")],
)  # fmt: skip
def test_the_4th_axis_is_time_only_with_a_time_unit_and_a_step(unit, step, kind):
    assert fourth_axis(header((4, 5, 6, 3), unit, step)) == kind
    assert fourth_axis(header((4, 5, 6), unit, 1.0)) is None


def test_a_time_axis_of_length_1_is_read_past_and_written_back(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6, 1)  # (x, y, z, t)
    img = nib.Nifti1Image(data, np.diag([0.5, 0.6, 2.0, 1.0]))
    img.header.set_xyzt_units("micron", "msec")
    img.header.set_zooms((0.5, 0.6, 2.0, 40.0))
    nib.save(img, tmp_path / "a.nii")
    volume = read_volume(tmp_path / "a.nii")
    assert volume.array.shape == (6, 5, 4) and volume.metadata["axes"] == "ZYX"
    np.testing.assert_array_equal(volume.array, data[..., 0].T)
    assert volume.metadata["nifti_time"] == {"step": 40.0, "unit": "msec"}
    with open_volume(tmp_path / "a.nii") as lazy:
        assert lazy.shape == (6, 5, 4)
        np.testing.assert_array_equal(lazy[1:3, :, 2], data[2, :, 1:3, 0].T)
    write_volume(tmp_path / "b.nii.gz", volume)
    back = nib.load(tmp_path / "b.nii.gz")
    assert back.shape == (4, 5, 6, 1)
    assert back.header.get_zooms() == (0.5, 0.6, 2.0, 40.0)
    assert back.header.get_xyzt_units() == ("micron", "msec")
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)


def test_time_points_read_as_tzyx(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.uint8), np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((1.0, 1.0, 1.0, 2.0))
    nib.save(img, tmp_path / "t.nii")
    assert read_volume(tmp_path / "t.nii").metadata["axes"] == "TZYX"
    assert open_volume(tmp_path / "t.nii").shape == (3, 6, 5, 4)
