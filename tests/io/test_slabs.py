"""Slab writers round-trip shape, values and geometry in every format (unet_seg.io.slabs)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from unet_seg.io import Volume, open_volume, read_volume, write_volume
from unet_seg.io.files import format_suffix
from unet_seg.io.slabs import SlabWriter


def write_in_slabs(path, array, geometry, spatial_dims, step=2):
    with SlabWriter(path, array.shape, array.dtype, geometry, spatial_dims) as writer:
        depth = array.shape[-3] if spatial_dims == 3 else 1
        for z0 in range(0, depth, step):
            block = (
                array[..., z0 : z0 + step, :, :] if spatial_dims == 3 else array[..., None, :, :]
            )
            writer.write(z0, block)
    return path


@pytest.mark.parametrize("suffix", [".tif", ".nii", ".nii.gz"])
def test_label_volume_round_trips_with_geometry(tmp_path, rng, suffix):
    source = Volume(rng.integers(0, 50, (5, 6, 7)).astype(np.uint8), spacing=(2.5, 0.5, 0.25))
    src_path = write_volume(tmp_path / f"in{suffix}", source)
    geometry = open_volume(src_path)
    labels = rng.integers(0, 3, (5, 6, 7)).astype(np.uint8)
    out = write_in_slabs(tmp_path / f"out{suffix}", labels, geometry, 3)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, labels)
    assert back.spacing == pytest.approx((2.5, 0.5, 0.25))
    np.testing.assert_allclose(back.affine, geometry.affine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src_path.name, out.name])


def test_nifti_keeps_input_header_and_oblique_affine(tmp_path, rng):
    affine = np.array([[0, -0.5, 0, 10], [0.7, 0, 0, -3], [0, 0, 2.0, 1], [0, 0, 0, 1]])
    img = nib.Nifti1Image(rng.random((7, 6, 5)).astype(np.float32), affine)  # (x, y, z)
    img.header["descrip"] = b"scanner 7"
    nib.save(img, tmp_path / "in.nii.gz")
    geometry = open_volume(tmp_path / "in.nii.gz")
    probs = rng.integers(0, 256, (2, 5, 6, 7)).astype(np.uint8)  # NIfTI has no float16
    out = write_in_slabs(tmp_path / "probs.nii.gz", probs, geometry, 3, step=3)
    loaded = nib.load(out)
    np.testing.assert_allclose(loaded.affine, affine, atol=1e-6)
    assert loaded.header["descrip"].tobytes().startswith(b"scanner 7")
    assert loaded.shape == (7, 6, 5, 2)  # NIfTI (x, y, z, C) == our C-order (C, z, y, x)
    np.testing.assert_array_equal(np.asanyarray(loaded.dataobj).T, probs)


def test_float16_probabilities_tiff_channels_first(tmp_path, rng):
    geometry = Volume(np.zeros((4, 5, 6), np.uint8), spacing=(3.0, 0.5, 0.5))
    probs = rng.random((2, 4, 5, 6)).astype(np.float16)
    out = write_in_slabs(tmp_path / "p.tif", probs, geometry, 3, step=3)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, probs)
    assert back.spacing == pytest.approx((3.0, 0.5, 0.5))


def test_png_image(tmp_path, rng):
    labels = rng.integers(0, 2, (9, 11)).astype(np.uint8)
    geometry = Volume(labels)
    out = write_in_slabs(tmp_path / "a.png", labels, geometry, 2)
    np.testing.assert_array_equal(read_volume(out).array, labels)


@pytest.mark.parametrize("suffix", [".tif", ".nii", ".nii.gz", ".png"])
def test_exception_leaves_no_partial_file(tmp_path, suffix):
    geometry = Volume(np.zeros((3, 4, 5), np.uint8), spacing=(1.0, 1.0, 1.0))
    shape, dims = ((3, 4, 5), 3) if suffix != ".png" else ((4, 5), 2)
    with pytest.raises(RuntimeError, match="boom"):
        with SlabWriter(tmp_path / f"x{suffix}", shape, np.uint8, geometry, dims) as writer:
            writer.write(0, np.ones((1, 4, 5), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_format_suffix():
    assert format_suffix("a/B.NII.GZ") == ".nii.gz"
    with pytest.raises(ValueError, match="unsupported file type"):
        format_suffix("x.jpg")


@pytest.mark.parametrize("suffix", [".tif", ".nii", ".nii.gz", ".png"])
def test_boxes_written_in_any_order_give_the_whole_array(tmp_path, rng, suffix):
    # How a block-wise prediction writes: every box once, not in raster order, channels first.
    dims = 2 if suffix == ".png" else 3
    shape = (6, 7) if dims == 2 else (2, 5, 6, 7)
    array = rng.integers(0, 250, shape).astype(np.uint8)
    spatial = array.shape[-dims:]
    source = write_volume(tmp_path / f"in{suffix}", Volume(np.zeros(spatial, np.uint8)))
    starts = np.ndindex(*[-(-s // 3) for s in spatial])
    boxes = [tuple(slice(3 * i, 3 * i + 3) for i in start) for start in starts]
    target = tmp_path / f"out{suffix}"
    with SlabWriter(target, array.shape, array.dtype, open_volume(source), dims) as writer:
        for box in reversed(boxes):
            writer.write_box(box, array[(Ellipsis, *box)])
            np.testing.assert_array_equal(writer.read_box(box), array[(Ellipsis, *box)])
    np.testing.assert_array_equal(read_volume(target).array, array)
