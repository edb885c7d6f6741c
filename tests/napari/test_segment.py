"""The widget's work without Qt: the same labels as ``unet-seg-predict``, the model kept."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.io.zarr.convert import convert_to_ome_zarr
from unet_seg.napari.segment import (
    ModelCache,
    SegmentSettings,
    segment,
    segment_steps,
    zarr_source,
)

from .conftest import predict_config

SCALE = (2.0, 0.5, 0.5)


def test_labels_equal_the_cli(cli_outputs, ckpt_2d, stack_file):
    volume = read_volume(stack_file)
    result = segment(volume.array, volume.spacing, SegmentSettings(ckpt_2d))
    expected = read_volume(cli_outputs / "stack_labels.tif").array
    assert result.labels.dtype == expected.dtype and result.labels.shape == (3, 40, 52)
    np.testing.assert_array_equal(result.labels, expected)
    assert result.instances is None
    assert 0 < expected.mean() < 1  # both classes present: the comparison means something


def test_instances_and_objects_equal_the_cli(cli_outputs, ckpt_2d, stack_file):
    volume = read_volume(stack_file)
    settings = SegmentSettings(ckpt_2d, instances=True, instances_method="cc")
    result = segment(volume.array, volume.spacing, settings)
    np.testing.assert_array_equal(
        result.instances, read_volume(cli_outputs / "stack_instances.tif").array
    )
    assert set(result.objects["label"].tolist()) == set(np.unique(result.instances)) - {0}
    assert result.objects["voxels"].sum() == np.count_nonzero(result.instances)


def test_the_model_is_loaded_once_until_its_file_changes(ckpt_2d, stack_file):
    cache = ModelCache()
    image = read_volume(stack_file).array[:1]
    first = segment(image, (2.0, 0.5, 0.5), SegmentSettings(ckpt_2d), cache)
    second = segment(image, (2.0, 0.5, 0.5), SegmentSettings(ckpt_2d), cache)
    assert cache.loads == 1
    np.testing.assert_array_equal(first.labels, second.labels)
    stat = ckpt_2d.stat()
    os.utime(ckpt_2d, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    segment(image, (2.0, 0.5, 0.5), SegmentSettings(ckpt_2d), cache)
    assert cache.loads == 2


def test_steps_are_named_and_stopping_early_leaves_nothing(
    ckpt_2d, stack_file, tmp_path, monkeypatch
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    steps = segment_steps(read_volume(stack_file).array, (2.0, 0.5, 0.5),
                          SegmentSettings(ckpt_2d), ModelCache())  # fmt: skip
    assert next(steps) == "loading the model"
    assert next(steps) == "writing the layer"
    assert [p.name[:16] for p in tmp_path.iterdir()] == ["unet-seg-napari-"]
    steps.close()  # what napari's worker does on quit: the temporary folder goes
    assert list(tmp_path.iterdir()) == []


def test_missing_model_names_the_file(tmp_path, stack_file):
    with pytest.raises(FileNotFoundError, match=r"nothing\.ckpt"):
        segment(
            np.zeros((20, 20), np.uint8), (1.0, 1.0), SegmentSettings(tmp_path / "nothing.ckpt")
        )


@pytest.mark.slow  # a conversion and a block-wise prediction of the store
def test_a_layer_of_an_ome_zarr_store_is_predicted_from_the_store(cli_outputs, ckpt_2d,
                                                                 stack_file, tmp_path):  # fmt: skip
    store = convert_to_ome_zarr(stack_file, tmp_path / "stack.ome.zarr")
    assert zarr_source(str(store), (3, 40, 52)) == str(store)
    assert zarr_source(str(store), (40, 52)) is None  # one slice or channel of it: a copy
    assert zarr_source(str(stack_file), (3, 40, 52)) is None  # files: the layer's array
    result = segment(None, SCALE, SegmentSettings(ckpt_2d), source=store)
    np.testing.assert_array_equal(result.labels,
                                  read_volume(cli_outputs / "stack_labels.tif").array)  # fmt: skip


@pytest.mark.slow  # one more prediction through the batch
def test_a_2d_layer_gives_the_cli_labels_of_the_2d_file(ckpt_2d, stack_file, tmp_path):
    from unet_seg.prediction.batch import predict

    plane = read_volume(stack_file).array[1]
    image = write_volume(tmp_path / "plane.tif", Volume(plane, spacing=(0.5, 0.5)))
    predict(predict_config(input=image, output_dir=tmp_path / "out", checkpoint=ckpt_2d,
                           **{"outputs.preview": False}))  # fmt: skip
    result = segment(plane, (0.5, 0.5), SegmentSettings(ckpt_2d))
    assert result.labels.shape == (40, 52)
    expected = read_volume(tmp_path / "out" / "plane_labels.tif").array
    np.testing.assert_array_equal(result.labels, expected)


@pytest.mark.slow  # the console script in its own process
def test_labels_equal_the_console_script(ckpt_2d, stack_file, tmp_path):
    script = Path(sys.executable).with_name("unet-seg-predict")
    subprocess.run([str(script), f"input={stack_file}", f"output_dir={tmp_path}",
                    f"checkpoint={ckpt_2d}", "progress=false"], check=True,
                   capture_output=True)  # fmt: skip
    volume = read_volume(stack_file)
    result = segment(volume.array, volume.spacing, SegmentSettings(ckpt_2d))
    np.testing.assert_array_equal(result.labels, read_volume(tmp_path / "stack_labels.tif").array)


@pytest.mark.slow  # three exports and six predictions
@pytest.mark.parametrize("fmt,name", [("torchscript", "tiny2d.pt"), ("onnx", "tiny2d.onnx"),
                                      ("bioimageio", "tiny2d.bioimageio.zip")])  # fmt: skip
def test_exported_models_give_the_cli_labels(ckpt_2d, stack_file, tmp_path, fmt, name):
    pytest.importorskip("onnxruntime")
    from hydra import compose, initialize_config_dir

    from unet_seg.config import config_dir
    from unet_seg.export.run import export
    from unet_seg.prediction.batch import predict

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("export", overrides=[f"checkpoint={ckpt_2d}", f"output_dir={tmp_path}"])
    cfg.format = fmt
    export(cfg)
    model = tmp_path / name
    predict(predict_config(input=stack_file, output_dir=tmp_path / "out", checkpoint=model,
                           **{"outputs.preview": False}))  # fmt: skip
    volume = read_volume(stack_file)
    result = segment(volume.array, volume.spacing, SegmentSettings(model))
    expected = read_volume(tmp_path / "out" / "stack_labels.tif").array
    np.testing.assert_array_equal(result.labels, expected)
