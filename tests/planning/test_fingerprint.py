"""The fingerprint of synthetic data with known spacing, sizes and objects, of sampled zarr stores,
and of bad data (one error naming the file)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.planning.conftest import object_grid, write_dataset
from unet_seg.io import Volume, write_volume
from unet_seg.io.zarr.output import write_zarr
from unet_seg.io.zarr.store import ZarrVolume
from unet_seg.planning.fingerprint import Fingerprint, fingerprint_data


def test_touching_nuclei_in_2d(tmp_path):
    label = object_grid((64, 96), (10, 12), gap=0)
    images, labels = write_dataset(tmp_path, [label] * 3, spacing=(0.5, 0.5))
    fp = fingerprint_data(str(images), str(labels))
    assert (fp.cases, fp.spatial_dims, fp.channels, fp.dtype) == (3, 2, 1, "uint16")
    assert fp.median_shape == [64.0, 96.0] and fp.median_spacing == [0.5, 0.5]
    assert fp.anisotropy == 1.0
    assert fp.labels["kind"] == "objects"  # 40 ids: more than the 10 values classes may have
    objects = fp.objects
    assert objects["count"] == 3 * int(label.max())
    assert objects["median_extent"] == objects["p90_extent"] == [10.0, 12.0]
    assert objects["median_voxels"] == 120.0 and objects["touching_fraction"] == 1.0
    foreground = (label > 0).mean()
    assert fp.labels["class_fraction"] == pytest.approx({"0": 1 - foreground, "1": foreground})
    channel = fp.intensity[0]
    assert (channel["min"], channel["max"]) == (100.0, 1000.0)
    assert channel["foreground_percentiles"]["0.5"] == 1000.0
    assert not fp.sampling["sampled"]
    assert fp.sampling["voxels_read"] == fp.sampling["voxels_total"] == 3 * 64 * 96


def test_separate_objects_in_anisotropic_3d(tmp_path):
    label = object_grid((24, 48, 48), (4, 10, 10), gap=3)
    images, labels = write_dataset(tmp_path, [label, label], spacing=(2.0, 0.5, 0.5))
    fp = fingerprint_data(str(images), str(labels), label_map="objects")
    assert fp.spatial_dims == 3 and fp.median_spacing == [2.0, 0.5, 0.5]
    assert fp.anisotropy == 4.0
    assert fp.objects["median_extent"] == [4.0, 10.0, 10.0]
    assert fp.objects["touching_fraction"] == 0.0
    assert fp.labels["kind_reason"] == "label_map=objects: the labels are object ids"


def test_the_fingerprint_round_trips_through_json(tmp_path):
    images, labels = write_dataset(tmp_path, [object_grid((32, 32), (5, 5), 2)] * 2, (1.0, 1.0))
    fp = fingerprint_data(str(images), str(labels))
    path = fp.write(tmp_path / "fp.json")
    assert Fingerprint.read(path) == Fingerprint.from_dict(fp.to_dict())
    assert Fingerprint.read(path).objects == fp.objects


def test_a_large_store_is_sampled_never_read_whole(tmp_path, monkeypatch):
    label = object_grid((32, 256, 256), (4, 12, 12), gap=4)
    image = np.where(label > 0, 900, 50).astype(np.uint16)
    for folder, array in (("images", image), ("labels", label)):
        (tmp_path / folder).mkdir()
        write_zarr(tmp_path / folder / "big.zarr", array, chunks=(8, 64, 64))
    reads: list[tuple[int, ...]] = []
    original = ZarrVolume._read

    def recording(self, index):
        out = original(self, index)
        reads.append(out.shape)
        return out

    monkeypatch.setattr(ZarrVolume, "_read", recording)
    kwargs = {"whole_voxels": 100_000, "boxes": 4}
    fp = fingerprint_data(str(tmp_path / "images"), str(tmp_path / "labels"), **kwargs)
    box = (32, 64, 64)  # 8-slice chunks grown to 64 slices, but the store has 32
    assert reads and all(shape == box for shape in reads)
    # 4 boxes of the image, of the label, and label boxes until the values say "object ids"
    assert 2 * 4 < len(reads) <= 3 * 4
    assert fp.sampling["sampled"] and fp.sampling["cases_sampled"] == 1
    assert fp.sampling["voxels_read"] == 4 * 32 * 64 * 64 < fp.sampling["voxels_total"]
    again = fingerprint_data(str(tmp_path / "images"), str(tmp_path / "labels"), **kwargs)
    assert again == fp  # the same seed: the same boxes, the same fingerprint


def test_an_image_that_does_not_match_its_label_is_named(tmp_path):
    images, labels = write_dataset(tmp_path, [np.zeros((20, 30), np.uint8)] * 2, (1.0, 1.0))
    write_volume(images / "case_1.tif", Volume(np.zeros((20, 31), np.uint16)))
    with pytest.raises(ValueError, match=r"case_1\.tif: image shape \(20, 31\) does not match"):
        fingerprint_data(str(images), str(labels))


def test_nan_in_an_image_is_named(tmp_path):
    images, labels = write_dataset(tmp_path, [np.zeros((20, 30), np.uint8)] * 2, (1.0, 1.0))
    bad = np.zeros((20, 30), np.float32)
    bad[3, 4] = np.nan
    write_volume(images / "case_0.tif", Volume(bad))
    with pytest.raises(ValueError, match=r"case_0\.tif: 1 NaN/Inf"):
        fingerprint_data(str(images), str(labels))


def test_object_ids_are_recognised_when_the_first_box_holds_none(tmp_path):
    label = np.zeros((64, 256, 256), np.uint16)
    label[:, 128:, 128:] = object_grid((64, 128, 128), (8, 12, 12), gap=4)  # only the last box
    images, labels = write_dataset(tmp_path, [label], (1.0, 1.0, 1.0))
    fp = fingerprint_data(str(images), str(labels), whole_voxels=1000, boxes=4)
    assert fp.sampling["sampled"] and fp.labels["kind"] == "objects"
    assert fp.labels["kind_reason"] == "case_0.tif holds more than 10 distinct non-zero values: " \
        "object ids"  # fmt: skip


def test_2d_and_3d_labels_mixed_are_refused_naming_the_file(tmp_path):
    images, labels = write_dataset(tmp_path, [np.zeros((20, 30), np.uint8)] * 2, (1.0, 1.0))
    write_volume(images / "case_1.tif", Volume(np.zeros((4, 20, 30), np.uint16)))
    write_volume(labels / "case_1.tif", Volume(np.zeros((4, 20, 30), np.uint8)))
    with pytest.raises(ValueError, match=r"case_1\.tif: 3D labels, but .*case_0\.tif is 2D"):
        fingerprint_data(str(images), str(labels))
