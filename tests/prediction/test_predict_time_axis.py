"""Predict keeps an input's time axis of length 1 as the input has it: an OME-Zarr ``t`` (with
its unit and step) stays in front of the labels' and probabilities' axes, in NGFF order
``t, c, z, y, x``, and the values are those of the same image without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from tests.io.test_ngff_schemas import check
from tests.prediction.test_predict import TINY_3D, config, save_checkpoint
from unet_seg.prediction.batch import predict

SPACE = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
TIME = {"name": "t", "type": "time", "unit": "second"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m3.ckpt", TINY_3D, seed=0)


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 200, (8, 36, 36)).astype(np.uint8)


def ome_zarr_input(path, axes: list[dict], scale: list[float], version: str):
    """An OME-Zarr image written with zarr alone (not through the project's writer): the
    image, with a length-1 axis in front for each axis before z."""
    fmt = 2 if version == "0.4" else 3
    array = _image().reshape((1,) * (len(axes) - 3) + (8, 36, 36))
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    group.create_array("0", data=array, chunks=array.shape)
    multiscale = {
        "name": "raw",
        "axes": axes,
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        ],
    }
    if fmt == 2:
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    return path


def _multiscale(store, version: str) -> dict:
    return check(store, version, "image")["multiscales"][0]


@pytest.mark.parametrize(
    ("version", "with_channel"),
    # two predicts each, ~3 s on 2 busy cores
    [("0.5", True), pytest.param("0.4", False, marks=pytest.mark.slow)],
)
def test_a_time_axis_of_length_1_stays_in_front_of_the_outputs(
    tmp_path, checkpoint, version, with_channel
):
    channel = [{"name": "c", "type": "channel"}] if with_channel else []
    axes = [TIME, *channel, *SPACE]
    scale = [2.5, *[1.0] * with_channel, 2.0, 0.5, 0.5]
    source = ome_zarr_input(tmp_path / "raw.ome.zarr", axes, scale, version)
    outputs = {"outputs.probabilities": "true"}
    summary = predict(config(input=source, output_dir=tmp_path / "out", tile_size=32,
                             checkpoint=checkpoint, **outputs))  # fmt: skip
    assert summary["ok"] == 1, summary
    labels_store = tmp_path / "out" / "raw_labels.ome.zarr"
    labels = _multiscale(labels_store, version)
    assert labels["axes"] == [TIME, *SPACE]
    level0 = labels["datasets"][0]["coordinateTransformations"][0]
    assert level0 == {"type": "scale", "scale": [2.5, 2.0, 0.5, 0.5]}
    probs = _multiscale(tmp_path / "out" / "raw_probs.ome.zarr", version)
    assert [a["name"] for a in probs["axes"]] == ["t", "c", "z", "y", "x"]
    assert probs["axes"][0] == TIME and probs["axes"][2:] == SPACE
    level0 = probs["datasets"][0]["coordinateTransformations"][0]
    assert level0["scale"] == [2.5, 1.0, 2.0, 0.5, 0.5]
    stored = zarr.open_array(str(labels_store / "0"), mode="r")
    assert stored.shape == (1, 8, 36, 36)
    assert zarr.open_array(str(tmp_path / "out" / "raw_probs.ome.zarr" / "0")).shape[:2] == (1, 2)
    if version == "0.5":
        meta = json.loads((labels_store / "0" / "zarr.json").read_text())
        assert meta["dimension_names"] == ["t", "z", "y", "x"]
    # the same image without the time axis gives the same labels
    plain = ome_zarr_input(tmp_path / "plain.ome.zarr", [*channel, *SPACE], scale[1:], version)
    predict(config(input=plain, output_dir=tmp_path / "out2", tile_size=32,
                   checkpoint=checkpoint))  # fmt: skip
    expected = zarr.open_array(str(tmp_path / "out2" / "plain_labels.ome.zarr" / "0"), mode="r")
    np.testing.assert_array_equal(stored[0], expected[...])
