"""``unet-seg-convert`` keeps the source's axes and unit and invents none: a TIFF stack of time
points becomes an OME-Zarr with a time axis (never a ``z``), a unit stays (``nm`` ->
``nanometer``, ImageJ's micron spellings -> ``micrometer``), and a source without a unit gives
axes without one (never an invented micrometer). The stores pass the NGFF schemas."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from tests.io.test_ngff_schemas import check
from unet_seg.io.zarr.convert import convert_to_ome_zarr
from unet_seg.io.zarr.store import ngff_unit

IMAGE = np.arange(3 * 20 * 24, dtype=np.uint16).reshape(3, 20, 24)


@pytest.mark.parametrize(
    ("axes", "unit", "expected"),
    [
        ("TYX", None, [{"name": "t", "type": "time"}, {"name": "y", "type": "space"},
                       {"name": "x", "type": "space"}]),
        ("ZYX", "nm", [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]),
        ("ZYX", "\\u00B5m", [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]),
        ("ZYX", None, [{"name": n, "type": "space"} for n in "zyx"]),
    ],
)  # fmt: skip
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_convert_keeps_the_source_axes_and_unit(tmp_path, axes, unit, expected, version):
    source = tmp_path / "in.tif"
    meta = {"axes": axes, **({"unit": unit} if unit else {})}
    tifffile.imwrite(source, IMAGE, imagej=True, metadata=meta)
    store = convert_to_ome_zarr(source, tmp_path / "in.ome.zarr", version=version)
    assert check(store, version, "image")["multiscales"][0]["axes"] == expected


def test_ngff_unit_names_only_what_the_file_says():
    assert [ngff_unit(u) for u in (None, "", "um", "µm", "nm", "mm", "pixel", "inch")] == [
        None, None, "micrometer", "micrometer", "nanometer", "millimeter", None, None,
    ]  # fmt: skip


@pytest.mark.parametrize("points", [1, 3])
def test_convert_keeps_a_nifti_time_axis_with_its_unit_and_step(tmp_path, points):
    import nibabel as nib

    data = np.arange(24 * 20 * 3 * points, dtype=np.int16).reshape(24, 20, 3, points)
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 2.0, 1.0]))
    img.header.set_xyzt_units("mm", "msec")
    img.header.set_zooms((0.5, 0.5, 2.0, 40.0))
    nib.save(img, tmp_path / "in.nii.gz")
    store = convert_to_ome_zarr(tmp_path / "in.nii.gz", tmp_path / "in.ome.zarr")
    multiscale = check(store, "0.5", "image")["multiscales"][0]
    space = [{"name": n, "type": "space", "unit": "millimeter"} for n in "zyx"]
    assert multiscale["axes"] == [{"name": "t", "type": "time", "unit": "millisecond"}, *space]
    transform = multiscale["datasets"][0]["coordinateTransformations"][0]
    assert transform["scale"] == [40.0, 2.0, 0.5, 0.5]
    stored = zarr.open_array(str(store / "0"), mode="r")
    assert stored.shape == (points, 3, 20, 24)
    np.testing.assert_array_equal(stored[...], data.T)
