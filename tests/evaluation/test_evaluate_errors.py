"""Evaluation of awkward folders: every problem named with its file and values, nothing dropped
silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from unet_seg.config import config_dir
from unet_seg.errors import UsageError
from unet_seg.evaluation.evaluate import evaluate
from unet_seg.io import Volume, write_volume

LABELS = np.array([[0, 1], [1, 0]], np.uint8)


def config(pred: Path, gt: Path):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("evaluate", overrides=[f"pred_dir={pred}", f"gt_dir={gt}",
                                              "progress=false"])  # fmt: skip


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name in ("a", "b"):
        write_volume(pred / f"{name}_labels.tif", Volume(LABELS))
        write_volume(gt / f"{name}_labels.tif", Volume(LABELS))
    return pred, gt


def test_bad_labels_name_the_file_and_values(folders) -> None:
    pred, gt = folders
    write_volume(gt / "a_labels.tif", Volume(np.array([[0, 7], [1, 9]], np.uint8)))
    write_volume(pred / "b_labels.tif", Volume(np.array([[0, 0.5], [1, 0]], np.float32)))
    summary = evaluate(config(pred, gt))
    errors = {Path(f["prediction"]).name: f["error"] for f in summary["failed"]}
    assert str(gt / "a_labels.tif") in errors["a_labels.tif"]
    assert "label values [7, 9] are outside the classes 0..1" in errors["a_labels.tif"]
    assert str(pred / "b_labels.tif") in errors["b_labels.tif"]
    assert "labels must be integers" in errors["b_labels.tif"] and "0.5" in errors["b_labels.tif"]
    assert summary["evaluated"] == 0


def test_integral_float_labels_are_accepted(folders) -> None:
    pred, gt = folders
    write_volume(pred / "a_labels.tif", Volume(LABELS.astype(np.float32)))
    summary = evaluate(config(pred, gt))
    assert summary["evaluated"] == 2 and summary["failed"] == []


def test_ground_truth_without_prediction_is_reported(folders) -> None:
    pred, gt = folders
    (pred / "b_labels.tif").unlink()
    summary = evaluate(config(pred, gt))
    assert summary["evaluated"] == 1
    assert summary["failed"] == [{"ground_truth": str(gt / "b_labels.tif"),
                                  "error": f"no prediction b_labels.* in {pred}"}]  # fmt: skip


@pytest.mark.parametrize("other", ["a_labels.nii.gz", "a_labels.TIF"])
def test_two_files_with_one_key_are_an_error(folders, other: str) -> None:
    pred, gt = folders
    write_volume(pred / other, Volume(LABELS))
    with pytest.raises(UsageError, match=r"a_labels\.\w+(\.gz)? and .*a_labels.* both pair as 'a'"):
        evaluate(config(pred, gt))


@pytest.mark.parametrize(
    "setting,value,message",
    [("num_classes", 1, r"num_classes \(background and a class\) must be a whole number >= 2"),
     ("num_classes", "abc", "a whole number"),
     ("foreground_class", 2, r"foreground_class must be one of the classes 0\.\.1, got 2"),
     ("report_slices", 0, "report_slices must be a whole number >= 1, got 0")],
)  # fmt: skip
def test_bad_numbers_are_named_before_any_file_is_read(folders, setting, value, message) -> None:
    pred, gt = folders
    cfg = config(pred, gt)
    cfg[setting] = value
    with pytest.raises(UsageError, match=message):
        evaluate(cfg)
    assert not (pred / "evaluation.json").exists() and not list(pred.glob("*.csv"))


def test_unsigned_64_bit_values_are_quoted_exactly(folders) -> None:
    """2**64 - 1 in a uint64 file is that value in the message, not -1 (a cast to int64)."""
    pred, gt = folders
    write_volume(gt / "a_labels.tif", Volume(np.array([[0, 2**64 - 1], [1, 0]], np.uint64)))
    summary = evaluate(config(pred, gt))
    (failure,) = summary["failed"]
    assert str(gt / "a_labels.tif") in failure["error"]
    assert "label values [18446744073709551615] exceed 2**63 - 1" in failure["error"]
    # (The path is left out: pytest's folders are numbered, e.g. pytest-138.)
    rest = failure["error"].replace(str(gt / "a_labels.tif"), "").replace("2**63 - 1", "")
    assert "-1" not in rest
