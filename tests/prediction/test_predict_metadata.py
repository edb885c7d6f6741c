"""Predict's outputs keep the axes and units their input has, and invent none: a stack of time
points stays ``TYX`` (never ``ZYX``), a unit stays as it was (``nm``), and an input without a
unit gives outputs without one (never an invented micrometer), in TIFF and OME-Zarr."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from tests.prediction.test_predict import TINY_2D, TINY_3D, config, save_checkpoint
from unet_seg.io import read_volume
from unet_seg.io.zarr.output import write_zarr
from unet_seg.prediction.batch import predict


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {2: save_checkpoint(root / "m2.ckpt", TINY_2D, seed=0),
            3: save_checkpoint(root / "m3.ckpt", TINY_3D, seed=0),
            "2 channels": save_checkpoint(root / "c2.ckpt", {**TINY_2D, "in_channels": 2}),
            }  # fmt: skip


def _image(shape) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 200, shape).astype(np.uint8)


def _tiff_metadata(path) -> tuple[str, dict]:
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].axes, dict(tif.imagej_metadata or tif.shaped_metadata[0])


@pytest.mark.parametrize(
    ("axes", "unit", "dims"),
    [("TYX", None, 2), ("ZYX", None, 3), ("ZYX", "nm", 3), ("TYX", "um", 2)],
)
def test_tiff_outputs_keep_the_input_axes_and_unit(tmp_path, checkpoints, axes, unit, dims):
    source = tmp_path / "in.tif"
    meta = {"axes": axes, **({"unit": unit} if unit else {})}
    tifffile.imwrite(source, _image((3, 36, 36)), imagej=True, resolution=(2.0, 2.0),
                     metadata=meta)  # fmt: skip
    summary = predict(config(input=source, output_dir=tmp_path / "out", tile_size=32,
                             checkpoint=checkpoints[dims],
                             **{"outputs.probabilities": "true"}))  # fmt: skip
    assert summary["ok"] == 1, summary
    written, stored = _tiff_metadata(tmp_path / "out" / "in_probs.tif")
    assert written == "C" + axes and stored.get("unit") == unit  # C: the classes
    written, stored = _tiff_metadata(tmp_path / "out" / "in_labels.tif")
    assert written == axes
    assert stored.get("unit") == unit  # None: no unit written, none invented
    labels = read_volume(tmp_path / "out" / "in_labels.tif")
    assert labels.metadata["axes"] == axes and labels.metadata["unit"] == unit
    assert labels.spacing[-2:] == (0.5, 0.5)


@pytest.mark.parametrize(("model", "read_as"), [(3, "space"), ("2 channels", "channels")])
def test_time_points_are_never_read_as_space_or_channels(tmp_path, checkpoints, model, read_as):
    """A TYX stack of 2 time points fails for a 3D model (it would convolve across time) and for
    a 2-channel model (the time points would be its channels), naming the axes."""
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, _image((2, 36, 36)), imagej=True, metadata={"axes": "TYX"})
    summary = predict(config(input=source, output_dir=tmp_path / "out", tile_size=32,
                             checkpoint=checkpoints[model]))  # fmt: skip
    (entry,) = summary["files"]
    assert entry["status"] == "failed"
    assert entry["error"].startswith(f"ValueError: {source}: axes TYX: the leading axis holds 2 "
                                     f"time points, which a ")  # fmt: skip
    assert f"would read as {read_as}" in entry["error"]
    assert not list((tmp_path / "out").glob("in_*"))


def _ome_axes(store) -> list[dict]:
    attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    return (attrs.get("ome") or attrs)["multiscales"][0]["axes"]


@pytest.mark.parametrize("unit", [None, "nanometer"])
def test_ome_zarr_outputs_keep_the_input_axes_and_units(tmp_path, checkpoints, unit):
    space = [{"name": n, "type": "space", **({"unit": unit} if unit else {})} for n in "zyx"]
    axes = [{"name": "c", "type": "channel"}, *space]
    ome = {"version": "0.5", "axes": axes, "scale": (2.0, 0.5, 0.5), "name": "raw"}
    source = write_zarr(tmp_path / "raw.ome.zarr", _image((1, 8, 36, 36)), chunks=(1, 8, 36, 36),
                        ome=ome)  # fmt: skip
    summary = predict(config(input=source, output_dir=tmp_path / "out", tile_size=32,
                             checkpoint=checkpoints[3],
                             **{"outputs.probabilities": "true"}))  # fmt: skip
    assert summary["ok"] == 1, summary
    assert _ome_axes(tmp_path / "out" / "raw_labels.ome.zarr") == space
    probabilities = _ome_axes(tmp_path / "out" / "raw_probs.ome.zarr")
    assert probabilities[1:] == space and probabilities[0]["type"] == "channel"
    assert "unit" not in probabilities[0]
