"""Predict on an nnU-Net ``imagesTs`` folder: a case's channel files are one input, and the
outputs carry the case's name, as nnU-Net's own prediction names them."""

from __future__ import annotations

import json

import numpy as np

from tests.prediction.test_predict import TINY_2D, config, save_checkpoint, stack
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.prediction.batch import predict


def test_two_channel_cases_predict_as_their_stacked_image(tmp_path, rng):
    ckpt = save_checkpoint(tmp_path / "m2.ckpt", {**TINY_2D, "in_channels": 2}, seed=0)
    images, stacked = tmp_path / "imagesTs", tmp_path / "stacked"
    for case in ("cell_001", "cell_002"):
        channels = [stack(rng, (37, 45)) for _ in range(2)]
        for c, array in enumerate(channels):
            write_volume(images / f"{case}_{c:04d}.tif", Volume(array))
        write_volume(stacked / f"{case}.tif", Volume(np.stack(channels)))  # (C, Y, X)
    summary = predict(config(input=images, output_dir=tmp_path / "out", checkpoint=ckpt,
                             **{"outputs.probabilities": True}))  # fmt: skip
    assert summary["ok"] == 2 and summary["failed"] == 0, summary["files"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == [
        "cell_001_labels.tif", "cell_001_probs.tif", "cell_002_labels.tif", "cell_002_probs.tif"
    ]  # fmt: skip
    assert summary["files"][0]["input"].endswith("cell_001_0000.tif+cell_001_0001.tif")
    reference = predict(config(input=stacked, output_dir=tmp_path / "ref", checkpoint=ckpt,
                               **{"outputs.probabilities": True}))  # fmt: skip
    assert reference["ok"] == 2
    for name in ("cell_001_labels.tif", "cell_002_probs.tif"):
        np.testing.assert_array_equal(read_volume(tmp_path / "out" / name).array,
                                      read_volume(tmp_path / "ref" / name).array)  # fmt: skip
    # A rerun finds the case's outputs complete and skips them.
    again = predict(config(input=images, output_dir=tmp_path / "out", checkpoint=ckpt,
                           **{"outputs.probabilities": True}))  # fmt: skip
    assert again["skipped"] == 2
    written = json.loads((tmp_path / "out" / "predict_summary.json").read_text())
    assert all(f["status"] == "skipped" for f in written["files"])


def test_one_channel_cases_lose_the_channel_suffix_and_time_points_keep_theirs(tmp_path, rng):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", TINY_2D, seed=0)
    image = stack(rng, (3, 37, 45))
    write_volume(tmp_path / "nn" / "case_0000.tif", Volume(image))
    write_volume(tmp_path / "plain" / "case.tif", Volume(image))
    for t in range(2):  # a 1-channel model and t_0000, t_0001: two images, not one case
        write_volume(tmp_path / "times" / f"t_{t:04d}.tif", Volume(image[t]))
    for folder in ("nn", "plain", "times"):
        summary = predict(config(input=tmp_path / folder, output_dir=tmp_path / f"out_{folder}",
                                 checkpoint=ckpt))  # fmt: skip
        assert summary["failed"] == 0, summary["files"]
    grouped = read_volume(tmp_path / "out_nn" / "case_labels.tif").array
    np.testing.assert_array_equal(
        grouped, read_volume(tmp_path / "out_plain" / "case_labels.tif").array
    )
    assert not (tmp_path / "out_nn" / "case_0000_labels.tif").exists()
    assert {p.name for p in (tmp_path / "out_times").glob("*_labels.tif")} == {
        "t_0000_labels.tif", "t_0001_labels.tif"
    }  # fmt: skip
