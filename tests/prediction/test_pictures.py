"""Pictures made by the pipeline: predict's ``<stem>_preview.png`` from the written labels and
evaluate's ``report.html`` (``curves.png`` is checked in test_train)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from tests.prediction.test_predict import TINY_2D, TINY_3D, save_checkpoint, stack
from tests.prediction.test_predict import config as predict_config
from unet_seg.config import config_dir
from unet_seg.evaluation.evaluate import evaluate
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.prediction.batch import predict
from unet_seg.viz import previews as previews_module
from unet_seg.viz.figures import PANEL_PX
from unet_seg.viz.previews import SlicePreview


@pytest.fixture(scope="module")
def ckpt_2d(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model2d.ckpt", TINY_2D)


@pytest.fixture
def previews(monkeypatch) -> list[SlicePreview]:
    """The previews predict draws, kept for a look at what they chose."""
    made: list[SlicePreview] = []

    class Recording(SlicePreview):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(previews_module, "SlicePreview", Recording)  # imported when drawn
    return made


@pytest.mark.parametrize("slice_axis", [0, 1])
def test_preview_comes_from_the_written_labels(tmp_path, rng, ckpt_2d, previews, slice_axis):
    image = write_volume(tmp_path / "in" / "s.tif", Volume(stack(rng, (6, 5, 40))))
    out = tmp_path / "out"
    options = {"input": image, "output_dir": out, "checkpoint": ckpt_2d, "slice_axis": slice_axis,
               "outputs.instances": True, "block_size": "[2,3,16]"}  # fmt: skip
    (entry,) = predict(predict_config(**options))["files"]
    assert entry["status"] == "ok" and entry["preview"] == str(out / "s_preview.png")
    assert entry["blocks"]["total"] > 1  # the counts are summed over blocks
    assert str(out / "s_preview.png") not in entry["outputs"]  # outputs are volumes
    (preview,) = previews
    labels = read_volume(out / "s_labels.tif").array
    depth = (6, 5)[slice_axis]
    assert preview.shape[0] == depth and len(preview.chosen()) == 4
    planes = np.moveaxis(labels, slice_axis, 0).reshape(depth, -1)
    np.testing.assert_array_equal(preview.foreground, np.count_nonzero(planes, axis=1))
    with Image.open(out / "s_preview.png") as png:  # 4 slices x (image, labels, instances)
        assert png.format == "PNG" and png.size == (4 * PANEL_PX, 3 * PANEL_PX)
    # The preview is an output: a rerun skips the file while all are there.
    assert predict(predict_config(**options))["skipped"] == 1


def test_preview_of_an_image_a_3d_volume_and_switched_off(tmp_path, rng, ckpt_2d):
    png = write_volume(tmp_path / "in" / "im.png", Volume(stack(rng, (33, 40)).astype(np.uint8)))
    out = tmp_path / "out"
    assert predict(predict_config(input=png, output_dir=out, checkpoint=ckpt_2d))["ok"] == 1
    with Image.open(out / "im_preview.png") as preview:
        assert preview.size == (PANEL_PX, 2 * PANEL_PX)  # one slice: image and labels
    ckpt_3d = save_checkpoint(tmp_path / "model3d.ckpt", TINY_3D)
    nifti = write_volume(tmp_path / "in3d" / "v.nii.gz", Volume(stack(rng, (3, 21, 30))))
    assert predict(predict_config(input=nifti, output_dir=out, checkpoint=ckpt_3d))["ok"] == 1
    with Image.open(out / "v_preview.png") as preview:
        assert preview.size == (3 * PANEL_PX, 2 * PANEL_PX)  # all 3 slices of a thin volume
    summary = predict(predict_config(input=png, output_dir=tmp_path / "off", checkpoint=ckpt_2d,
                                     **{"outputs.preview": False}))  # fmt: skip
    assert "preview" not in summary["files"][0]
    assert not (tmp_path / "off" / "im_preview.png").exists()


def evaluate_config(**overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("evaluate", overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_evaluation_writes_a_report_of_every_file(tmp_path, rng):
    pred_dir, gt_dir, image_dir = tmp_path / "pred", tmp_path / "gt", tmp_path / "images"
    truth = np.zeros((4, 24, 30), np.uint8)
    truth[:, 4:16, 6:20] = 1
    for name, flips in [("a", 0.0), ("b", 0.2), ("c", 0.05)]:
        pred = np.where(rng.random(truth.shape) < flips, 1 - truth, truth).astype(np.uint8)
        write_volume(pred_dir / f"{name}_labels.tif", Volume(pred))
        write_volume(gt_dir / f"{name}.tif", Volume(truth))
    write_volume(image_dir / "a.tif", Volume(stack(rng, truth.shape)))
    write_volume(image_dir / "b.tif", Volume(stack(rng, (3, 24, 30))))  # does not fit: no image
    summary = evaluate(evaluate_config(pred_dir=pred_dir, gt_dir=gt_dir, gt_suffix="''",
                                       image_dir=image_dir, progress=False))  # fmt: skip
    assert summary["evaluated"] == 3
    page = (pred_dir / "report.html").read_text()
    listed = re.findall(r'<td data-v="([abc])">', page)
    assert listed == ["a", "b", "c"]  # every evaluated file in the table
    sections = re.findall(r'<section class="file" id="f\d+"><h3>(\w+) ', page)
    assert sections == ["b", "c", "a"]  # pictures worst Dice first
    assert page.count('alt="errors"') == 3 * 3  # three slices per file, b without its image
    assert "http://" not in page and "https://" not in page
    evaluate(evaluate_config(pred_dir=pred_dir, gt_dir=gt_dir, gt_suffix="''", report=False,
                             output_dir=tmp_path / "no_report", progress=False))  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "no_report").iterdir()) == [
        "evaluation.csv", "evaluation.json"
    ]  # fmt: skip
