"""The reader: our outputs open as Labels / image layers with the file's scale, units, colours,
features and class names (plain layer data: no napari needed)."""

from __future__ import annotations

import numpy as np
import pytest

from unet_seg.instances.object_table import read_object_table
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.io.zarr.convert import convert_to_ome_zarr
from unet_seg.io.zarr.ngff import CLASS_COLOURS
from unet_seg.napari.reader import get_reader, output_kind, read

from .conftest import predict_config

SCALE = (2.0, 0.5, 0.5)
UNITS = ("micrometer",) * 3


def test_only_our_outputs_are_taken(cli_outputs, stack_file, tmp_path):
    assert get_reader(str(stack_file)) is None  # an input: napari's own readers open it
    assert get_reader(str(cli_outputs / "stack_labels.tif")) is read
    assert get_reader([str(cli_outputs / "stack_instances.tif")]) is read
    assert get_reader(str(cli_outputs / "stack_objects.csv")) is None
    assert output_kind(tmp_path / "x_probs.nii.gz") == "probabilities"
    assert output_kind(tmp_path / "plain.zarr") is None  # no such store: not OME-Zarr


def test_labels_are_a_labels_layer_with_the_class_colours(cli_outputs):
    [(data, meta, kind)] = read(str(cli_outputs / "stack_labels.tif"))
    expected = read_volume(cli_outputs / "stack_labels.tif").array
    assert kind == "labels" and data.dtype == expected.dtype
    np.testing.assert_array_equal(data, expected)
    assert meta["scale"] == SCALE and meta["units"] == UNITS
    assert meta["name"] == "stack_labels"
    np.testing.assert_allclose(meta["colormap"][1], [*np.array(CLASS_COLOURS[0]) / 255, 1])
    assert meta["colormap"][0][3] == 0  # background transparent


def test_a_plain_zarr_labels_array_opens_as_labels(tmp_path):
    labels = np.zeros((2, 8, 9), np.uint8)
    labels[:, 2:5, 3:7] = 1
    path = write_volume(tmp_path / "x_labels.zarr", Volume(labels, spacing=(3.0, 1.0, 1.0)))
    assert get_reader(str(path)) is read
    [(data, meta, kind)] = read(str(path))
    assert kind == "labels" and meta["scale"] == (1.0, 1.0, 1.0)  # plain zarr keeps no spacing
    np.testing.assert_array_equal(data, labels)


def test_instances_carry_the_object_table_as_features(cli_outputs):
    [(data, meta, kind)] = read(str(cli_outputs / "stack_instances.tif"))
    assert kind == "labels" and np.issubdtype(data.dtype, np.integer)
    assert meta["scale"] == SCALE
    features = meta["features"]
    table = read_object_table(cli_outputs / "stack_objects.csv")
    np.testing.assert_array_equal(features["index"], table["label"])
    assert sorted(features["index"].tolist()) == sorted(set(np.unique(data).tolist()) - {0})
    for label, voxels in zip(features["index"], features["voxels"], strict=True):
        assert np.count_nonzero(data == label) == voxels


def test_probabilities_are_one_image_per_named_class(cli_outputs):
    [(data, meta, kind)] = read(str(cli_outputs / "stack_probs.tif"))
    assert kind == "image" and data.shape == (2, 3, 40, 52) and meta["channel_axis"] == 0
    assert meta["name"] == ["stack_probs p(background)", "stack_probs p(class 1)"]
    assert meta["scale"] == SCALE and meta["contrast_limits"] == [(0.0, 255.0)] * 2


@pytest.mark.slow  # a conversion and a block-wise prediction into the store
def test_ome_zarr_labels_groups_open_as_labels(tmp_path, ckpt_2d, stack_file, cli_outputs):
    from unet_seg.prediction.batch import predict

    image = convert_to_ome_zarr(stack_file, tmp_path / "stack.ome.zarr")
    cfg = predict_config(input=image, output_dir=tmp_path / "out", checkpoint=ckpt_2d,
                         **{"outputs.into_input": True, "outputs.preview": False})  # fmt: skip
    assert predict(cfg)["ok"] == 1
    layers = read(str(image))
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    (_, image_meta, _), (labels, meta, _) = layers
    assert image_meta["scale"] == meta["scale"] == SCALE and meta["units"] == UNITS
    level0 = labels[0] if isinstance(labels, list) else labels
    np.testing.assert_array_equal(
        np.asarray(level0), read_volume(cli_outputs / "stack_labels.tif").array
    )
    assert get_reader(str(image / "labels" / "unet-seg")) is read  # the group alone, too
    [(_, alone, kind)] = read(str(image / "labels" / "unet-seg"))
    assert kind == "labels" and alone["scale"] == SCALE


def test_a_big_ome_zarr_image_opens_lazily_level_by_level(tmp_path):
    import dask.array as da

    image = np.arange(2 * 512 * 520, dtype=np.uint32).reshape(2, 512, 520).astype(np.uint16)
    source = write_volume(tmp_path / "big.tif", Volume(image, spacing=(3.0, 0.5, 0.5)))
    store = convert_to_ome_zarr(source, tmp_path / "big.ome.zarr")
    [(levels, meta, kind)] = read(str(store))
    assert kind == "image" and meta["multiscale"] and meta["scale"] == (3.0, 0.5, 0.5)
    assert [level.shape for level in levels] == [(2, 512, 520), (2, 256, 260)]
    assert all(isinstance(level, da.Array) for level in levels)  # nothing read yet
    np.testing.assert_array_equal(levels[0][1, 100:103, 7].compute(), image[1, 100:103, 7])
