"""Predict keeps an input's time axis of length 1 as the input has it: an OME-Zarr ``t`` (with
its unit and step) stays in front of the labels' and probabilities' axes, in NGFF order
``t, c, z, y, x``, and the values are those of the same image without it."""

from __future__ import annotations

import json

import nibabel as nib
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


def nifti_input(path, data_xyzt: np.ndarray, time_unit: str, step: float):
    """A 4D NIfTI of ``(x, y, z, n)`` data, voxels 0.5 x 0.5 x 2 mm, 4th axis ``step`` apart in
    ``time_unit`` ("unknown" for none)."""
    img = nib.Nifti1Image(data_xyzt, np.diag([0.5, 0.5, 2.0, 1.0]))
    img.header.set_xyzt_units("mm", time_unit)
    img.header.set_zooms((0.5, 0.5, 2.0, step))
    nib.save(img, path)
    return path


def _xyz() -> np.ndarray:
    return np.ascontiguousarray(_image().T)  # (x, y, z) = (36, 36, 8)


def test_a_nifti_time_axis_of_length_1_stays_with_its_step_and_unit(tmp_path, checkpoint):
    source = nifti_input(tmp_path / "in.nii.gz", _xyz()[..., None], "sec", 2.5)
    outputs = {"outputs.probabilities": "true"}
    summary = predict(config(input=source, output_dir=tmp_path / "out", tile_size=32,
                             checkpoint=checkpoint, **outputs))  # fmt: skip
    assert summary["ok"] == 1, summary
    labels = nib.load(tmp_path / "out" / "in_labels.nii.gz")
    assert labels.shape == (36, 36, 8, 1)
    assert labels.header.get_zooms() == (0.5, 0.5, 2.0, 2.5)
    assert labels.header.get_xyzt_units() == ("mm", "sec")
    probs = nib.load(tmp_path / "out" / "in_probs.nii.gz")
    assert probs.shape == (36, 36, 8, 1, 2)  # the classes after the time axis
    assert probs.header.get_zooms()[:4] == (0.5, 0.5, 2.0, 2.5)
    assert probs.header.get_intent()[0] == "vector"
    # the same volume as a 3D file gives the same labels
    plain = tmp_path / "plain.nii.gz"
    nib.save(nib.Nifti1Image(_xyz(), np.diag([0.5, 0.5, 2.0, 1.0])), plain)
    predict(config(input=plain, output_dir=tmp_path / "out2", tile_size=32,
                   checkpoint=checkpoint))  # fmt: skip
    expected = np.asarray(nib.load(tmp_path / "out2" / "plain_labels.nii.gz").dataobj)
    np.testing.assert_array_equal(np.asarray(labels.dataobj)[..., 0], expected)
    np.testing.assert_array_equal(np.asarray(probs.dataobj)[..., 0, :].argmax(-1), expected)


def test_nifti_time_points_are_refused_naming_the_axes(tmp_path, checkpoint):
    data = np.stack([_xyz()] * 3, axis=-1)
    source = nifti_input(tmp_path / "fmri.nii.gz", data, "sec", 2.0)
    summary = predict(config(input=source, output_dir=tmp_path / "out", tile_size=32,
                             checkpoint=checkpoint))  # fmt: skip
    (entry,) = summary["files"]
    assert entry["status"] == "failed"
    assert entry["error"] == (
        f"ValueError: {source}: axes TZYX: the leading axis holds 3 time points, which a 3D "
        "model with 1 input channel(s) would read as channels; save one file per time point"
    )
    assert not list((tmp_path / "out").glob("fmri_*"))


@pytest.mark.parametrize(
    ("unit", "step"),
    [("sec", 1.0), *[pytest.param(u, s, marks=pytest.mark.slow)  # ~2 s each
                     for u, s in (("unknown", 0.0), ("hz", 3.0))]],
)  # fmt: skip
def test_modalities_in_the_4th_nifti_axis_stay_channels(tmp_path, unit, step):
    """The Decathlon / nnU-Net layout: modalities in the 4th axis, which ITK marks "s" with a
    step of 1; no time unit, or a step of 1, keeps them channels, as before."""
    model = save_checkpoint(tmp_path / "c2.ckpt", {**TINY_3D, "in_channels": 2}, seed=0)
    source = nifti_input(tmp_path / "case.nii.gz", np.stack([_xyz(), _xyz()[::-1]], -1), unit,
                         step)  # fmt: skip
    outputs = {"outputs.probabilities": "true"}
    summary = predict(config(input=source, output_dir=tmp_path / "out", tile_size=32,
                             checkpoint=model, **outputs))  # fmt: skip
    assert summary["ok"] == 1, summary
    labels = nib.load(tmp_path / "out" / "case_labels.nii.gz")
    assert labels.shape == (36, 36, 8) and labels.header.get_zooms() == (0.5, 0.5, 2.0)
    probs = nib.load(tmp_path / "out" / "case_probs.nii.gz")
    assert probs.shape == (36, 36, 8, 2)
    assert probs.header.get_zooms() == (0.5, 0.5, 2.0, step)  # the input's, not invented
