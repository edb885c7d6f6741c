"""Round trips, lazy access and error messages of unet_seg.data.io."""

from __future__ import annotations

import logging
import pickle

import nibabel as nib
import numpy as np
import pytest
import tifffile

from unet_seg.io import (
    SUPPORTED_SUFFIXES,
    Volume,
    check_pair,
    open_volume,
    read_volume,
    write_volume,
)


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if np.issubdtype(np.dtype(dtype), np.floating):
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, min(np.iinfo(dtype).max, 60000), size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "int64", "int32"])
@pytest.mark.parametrize("shape", [(17, 23), (5, 17, 23)])
def test_tiff_round_trip_keeps_array_dtype_spacing(tmp_path, rng, dtype, shape):
    spacing = (2.0, 0.5, 0.25)[-len(shape) :]
    array = _random(rng, shape, dtype)
    out = write_volume(tmp_path / "a.tif", Volume(array, spacing=spacing))
    volume = read_volume(out)
    assert volume.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.spacing == pytest.approx(spacing)
    assert volume.path == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]  # no temporary left behind


def test_tiff_spacing_read_from_imagej_and_ome(tmp_path, rng):
    array = _random(rng, (3, 8, 9), "uint8")
    tifffile.imwrite(
        tmp_path / "ij.tif",
        array,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.4),
        metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"},
    )
    assert read_volume(tmp_path / "ij.tif").spacing == pytest.approx((1.5, 0.4, 0.2))
    tifffile.imwrite(
        tmp_path / "ome.ome.tif",
        array,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.6, "PhysicalSizeZ": 2.0},
    )
    ome = read_volume(tmp_path / "ome.ome.tif")
    np.testing.assert_array_equal(ome.array, array)
    assert ome.spacing == pytest.approx((2.0, 0.6, 0.3))


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
def test_nifti_round_trip_keeps_affine_and_maps_axes(tmp_path, rng, name):
    array = _random(rng, (4, 6, 7), "int16")  # (z, y, x)
    affine = np.array([[0, 0.5, 0, 10], [0.25, 0, 0, -3], [0, 0, 2.0, 7], [0, 0, 0, 1]])
    # Written by nibabel directly in NIfTI's (x, y, z) order: io must give (z, y, x).
    nib.save(nib.Nifti1Image(array.T.copy(), affine), tmp_path / name)
    volume = read_volume(tmp_path / name)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.array[1, 2, 3] == array.T[3, 2, 1]
    np.testing.assert_allclose(volume.affine, affine)
    assert volume.spacing == pytest.approx((2.0, 0.5, 0.25))  # zooms (x, y, z) reversed

    again = read_volume(write_volume(tmp_path / f"copy_{name}", volume))
    np.testing.assert_array_equal(again.array, array)
    assert again.array.dtype == np.int16
    np.testing.assert_allclose(again.affine, affine)
    assert nib.load(tmp_path / f"copy_{name}").shape == (7, 6, 4)


def test_nifti_written_from_plain_volume_has_spacing_affine(tmp_path, rng):
    array = _random(rng, (4, 6, 7), "float32")
    write_volume(tmp_path / "v.nii.gz", Volume(array, spacing=(3.0, 1.0, 0.5)))
    img = nib.load(tmp_path / "v.nii.gz")
    assert img.header.get_zooms() == pytest.approx((0.5, 1.0, 3.0))
    np.testing.assert_allclose(np.diag(img.affine), [0.5, 1.0, 3.0, 1.0])


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_png_round_trip(tmp_path, rng, dtype):
    grey = _random(rng, (13, 21), dtype)
    np.testing.assert_array_equal(read_volume(write_volume(tmp_path / "g.png", grey)).array, grey)
    rgb = _random(rng, (3, 13, 21), "uint8")  # channel first
    back = read_volume(write_volume(tmp_path / "c.png", Volume(rgb, spacing=(1.0, 1.0))))
    np.testing.assert_array_equal(back.array, rgb)
    assert back.array.dtype == np.uint8


def test_png_rejects_float(tmp_path, rng):
    with pytest.raises(ValueError, match=r"f\.png.*uint8/uint16"):
        write_volume(tmp_path / "f.png", rng.normal(size=(4, 4)).astype(np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("paged.tif", lambda p, a: write_volume(p, a)),  # zlib pages
        ("flat.tif", lambda p, a: tifffile.imwrite(p, a, imagej=True, metadata={"axes": "ZYX"})),
        ("v.nii.gz", lambda p, a: write_volume(p, a)),
        ("v.nii", lambda p, a: write_volume(p, a)),
    ],
)
def test_lazy_slices_equal_eager(tmp_path, rng, name, write):
    array = _random(rng, (6, 11, 13), "uint16")
    write(tmp_path / name, array)
    lazy = open_volume(tmp_path / name)
    assert (lazy.shape, lazy.dtype, lazy.ndim, len(lazy)) == (array.shape, array.dtype, 3, 6)
    for index in [
        (slice(1, 4),),
        (2,),
        (-1, slice(3, 9), 5),
        (slice(None, None, 2), Ellipsis, slice(2, 7)),
        (slice(4, 2),),
        ([0, 5], slice(1, 2)),  # fancy index: read whole, then index
    ]:
        np.testing.assert_array_equal(lazy[index], array[index], err_msg=f"{name} {index}")
    clone = pickle.loads(pickle.dumps(lazy))  # goes to dataloader workers
    np.testing.assert_array_equal(clone[3:5], array[3:5])
    lazy.close()
    with open_volume(tmp_path / name) as again:  # reopens after close; closes on exit
        np.testing.assert_array_equal(again[5], array[5])
    assert again._handle is None


def test_lazy_memmap_mode_for_uncompressed_tiff(tmp_path, rng):
    array = _random(rng, (3, 5, 7), "uint8")
    tifffile.imwrite(tmp_path / "flat.tif", array)
    assert open_volume(tmp_path / "flat.tif")._mode == "memmap"
    write_volume(tmp_path / "zip.tif", array)
    assert open_volume(tmp_path / "zip.tif")._mode == "pages"


def test_missing_file(tmp_path):
    for opener in (read_volume, open_volume):
        with pytest.raises(FileNotFoundError, match=r"nothere\.tif"):
            opener(tmp_path / "nothere.tif")


@pytest.mark.parametrize("name", ["a.jpg", "a.npy", "noext"])
def test_unsupported_suffix(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ValueError, match=rf"{name}.*unsupported"):
        read_volume(tmp_path / name)
    with pytest.raises(ValueError, match=rf"{name}.*unsupported"):
        write_volume(tmp_path / name, np.zeros((2, 2)))
    assert SUPPORTED_SUFFIXES == (".nii", ".nii.gz", ".tif", ".tiff", ".png", ".ome.zarr", ".zarr")


@pytest.mark.parametrize("name", ["bad.tif", "bad.nii.gz", "bad.nii", "bad.png"])
def test_corrupt_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(ValueError, match=r"bad\.(tif|nii|png)"):
        read_volume(tmp_path / name)


@pytest.mark.parametrize("name", ["cut.tif", "cut.nii.gz", "cut.nii", "cut.png"])
def test_truncated_file(tmp_path, rng, name):
    array = (
        _random(rng, (4, 32, 32), "uint8") if "png" not in name else _random(rng, (32, 32), "uint8")
    )
    path = write_volume(tmp_path / name, array)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\."):
        read_volume(path)


@pytest.mark.parametrize("tile", [None, (16, 16)])
def test_bit_packed_masks_read_whole_and_truncated_ones_fail(tmp_path, rng, tile):
    """1-bit TIFFs (masks from ImageJ, Fiji, scanners) pack 8 pixels a byte: not truncated."""
    mask = rng.random((3, 33, 37)) > 0.5  # rows of 37 bits end mid-byte
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, mask, tile=tile)
    assert tifffile.TiffFile(path).pages[0].bitspersample == 1
    np.testing.assert_array_equal(read_volume(path).array, mask)
    np.testing.assert_array_equal(open_volume(path)[...], mask)
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ValueError, match=r"mask\.tif"):
        read_volume(path)


def test_truncated_file_read_lazily_says_what_is_wrong(tmp_path, rng):
    path = write_volume(tmp_path / "cut.tif", _random(rng, (4, 32, 32), "uint8"))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cut\.tif") as info:
        open_volume(path)[...]
    assert "corrupt or truncated" in str(info.value) and "Ellipsis" not in str(info.value)


def test_wrong_dimensionality(tmp_path, rng):
    path = write_volume(tmp_path / "img.tif", _random(rng, (3, 8, 8), "uint8"))
    with pytest.raises(ValueError, match=r"img\.tif.*2 dimensions.*\(3, 8, 8\)"):
        read_volume(path, ndim=2)
    assert read_volume(path, ndim=(2, 3)).array.shape == (3, 8, 8)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_rejected(tmp_path, bad):
    array = np.zeros((4, 4), np.float32)
    array[1, 2] = bad
    path = write_volume(tmp_path / "nan.tif", array)
    with pytest.raises(ValueError, match=r"nan\.tif.*1 NaN/Inf"):
        read_volume(path)
    assert np.isnan(read_volume(path, finite=False).array[1, 2]) == np.isnan(bad)


def test_complex_data_is_refused_read_or_opened(tmp_path):
    tifffile.imwrite(tmp_path / "fft.tif", np.full((4, 4), 1 + 2j, np.complex64))
    for read in (read_volume, open_volume):
        with pytest.raises(ValueError, match=r"fft\.tif: complex values \(dtype complex64\)"):
            read(tmp_path / "fft.tif")


def test_a_4d_nifti_declares_its_fourth_axis_as_channels(tmp_path, rng):
    array = _random(rng, (3, 4, 5, 6), "float32")  # (t, z, y, x)
    nib.save(nib.Nifti1Image(array.T.copy(), np.eye(4)), tmp_path / "t.nii.gz")
    for volume in (read_volume(tmp_path / "t.nii.gz"), open_volume(tmp_path / "t.nii.gz")):
        assert np.shape(volume.array if isinstance(volume, Volume) else volume) == (3, 4, 5, 6)
        assert volume.metadata["axes"] == "CZYX"
    assert "axes" not in read_volume(write_volume(tmp_path / "z.nii", array[0])).metadata


def test_failed_write_keeps_previous_file(tmp_path):
    path = write_volume(tmp_path / "keep.png", np.full((3, 3), 7, np.uint8))
    with pytest.raises(ValueError):
        write_volume(path, np.zeros((3, 3), np.float64))
    np.testing.assert_array_equal(read_volume(path).array, np.full((3, 3), 7, np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_check_pair():
    image = np.zeros((1, 5, 6), np.float32)
    check_pair(image, np.array([[0, 1, -1, 0, 0, 1]] * 5), num_classes=2, path="ok.tif")
    with pytest.raises(ValueError, match=r"lab\.tif.*\(1, 5, 6\).*\(5, 7\)"):
        check_pair(image, np.zeros((5, 7), np.int64), num_classes=2, path="lab.tif")
    with pytest.raises(ValueError, match=r"lab\.tif.*\[2, 255\].*0\.\.1"):
        check_pair(image, np.array([[0, 2, 255, 0, 0, 1]] * 5), num_classes=2, path="lab.tif")
    with pytest.raises(ValueError, match=r"lab\.tif.*\[-1\]"):
        check_pair(
            image[0], -np.ones((5, 6), int), num_classes=2, path="lab.tif", ignore_index=None
        )
    with pytest.raises(ValueError, match=r"lab\.tif.*integers"):
        check_pair(image[0], np.zeros((5, 6), np.float32), num_classes=2, path="lab.tif")


def test_a_multi_series_tiff_reads_the_first_and_says_so(tmp_path, rng, caplog):
    first = rng.integers(0, 255, (3, 20, 24)).astype(np.uint8)
    with tifffile.TiffWriter(tmp_path / "positions.ome.tif", ome=True) as writer:
        writer.write(first, metadata={"axes": "ZYX"})
        writer.write(rng.integers(0, 255, (20, 24)).astype(np.uint8))
    with caplog.at_level(logging.WARNING, logger="unet_seg.io.tiff"):
        np.testing.assert_array_equal(read_volume(tmp_path / "positions.ome.tif").array, first)
        np.testing.assert_array_equal(open_volume(tmp_path / "positions.ome.tif")[...], first)
    (record,) = caplog.records  # once per file, however often it is opened
    expected = "2 image series; reading the first (ZYX (3, 20, 24)), not YX (20, 24)"
    assert record.getMessage().startswith(f"{tmp_path / 'positions.ome.tif'}: {expected}")
    caplog.clear()
    tifffile.imwrite(tmp_path / "one.tif", first)
    read_volume(tmp_path / "one.tif")
    assert not caplog.records
