"""Evaluation figures on hand-made arrays, and the folder evaluation (unet_seg.evaluation)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from unet_seg.config import config_dir
from unet_seg.evaluation.evaluate import evaluate, evaluate_pair
from unet_seg.io import Volume, write_volume

# Two 2x2 objects touching only diagonally; the prediction misses 3 of their voxels.
GT = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]])
PRED = np.array([[0, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])


def entropy(counts) -> float:
    p = np.asarray(counts, float) / np.sum(counts)
    return float(-(p * np.log(p)).sum())


def test_hand_example_exact_values():
    row, counts = evaluate_pair(PRED, GT, num_classes=2)
    np.testing.assert_array_equal(counts, [[8, 3, 0], [5, 0, 3]])  # TP, FP, FN per class
    assert row["dice_1"] == pytest.approx(10 / 13) and row["iou_1"] == pytest.approx(5 / 8)
    assert row["dice_0"] == pytest.approx(16 / 19) and row["iou_0"] == pytest.approx(8 / 11)
    assert row["pixel_error"] == pytest.approx(3 / 16)
    # Objects: IoU 3/4 (top right) and 2/4 (bottom left), so AP is 1 at 0.5, 1/3 up to 0.75.
    assert row["ap50"] == 1.0 and row["ap75"] == pytest.approx(1 / 3)
    assert row["ap"] == pytest.approx((1 + 5 / 3) / 10)
    # Both objects matched at 0.5: precision, recall and F1 1; PQ = SQ = mean matched IoU.
    assert row["precision50"] == row["recall50"] == row["f1_50"] == 1.0
    assert row["sq"] == row["pq"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    # Adapted Rand over the 8 object voxels, the 3 missed ones singletons: segment sizes 3+1 and
    # 2+1+1 -> pair sums 8 joint, 8 predicted, 24 true; precision 1, recall 1/3, error 1/2.
    assert row["rand_error"] == pytest.approx(1 / 2)
    # VI over the object voxels, predicted background one segment: joint (3, 1, 2, 2),
    # truth (4, 4), prediction (3, 2, 3); 2 H(joint) - H(gt) - H(pred), in bits.
    vi = 2 * entropy([3, 1, 2, 2]) - entropy([4, 4]) - entropy([3, 2, 3])
    assert row["vi"] == pytest.approx(vi / np.log(2))


def test_perfect_prediction():
    row, _ = evaluate_pair(GT, GT, num_classes=3)
    assert row["dice_0"] == row["dice_1"] == row["dice_2"] == 1.0  # class 2 absent in both: 1
    assert row["pixel_error"] == row["rand_error"] == 0.0 and row["vi"] == pytest.approx(0.0)
    assert row["ap"] == 1.0


def test_shape_mismatch_and_bad_classes():
    with pytest.raises(ValueError, match="differs"):
        evaluate_pair(PRED, GT[:3], 2)
    with pytest.raises(ValueError, match="outside the classes"):
        evaluate_pair(PRED * 2, GT, 2)


def config(**overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("evaluate", overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_folder_evaluation_writes_csv_and_json(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_volume(pred_dir / "a_labels.tif", Volume(PRED.astype(np.uint8)))
    write_volume(gt_dir / "a_labels.tif", Volume(GT.astype(np.uint8)))
    write_volume(pred_dir / "b_labels.tif", Volume(GT.astype(np.uint8)))
    write_volume(gt_dir / "b_labels.tif", Volume(GT.astype(np.uint8)))
    # b also has instance files: the split prediction of one gt object halves its AP.
    write_volume(
        gt_dir / "b_instances.tif",
        Volume((GT * np.array([[1, 1, 1, 1]] * 2 + [[2] * 4] * 2)).astype(np.uint16)),
    )
    write_volume(
        pred_dir / "b_instances.tif",
        Volume(np.array([[0, 0, 1, 3]] * 2 + [[2, 2, 0, 0]] * 2, np.uint16)),
    )
    write_volume(pred_dir / "c_labels.tif", Volume(GT.astype(np.uint8)))  # no ground truth
    write_volume(gt_dir / "a.tif", Volume(GT.astype(np.uint8)))  # an image, ignored
    summary = evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, progress=False))
    assert summary["evaluated"] == 2 and len(summary["failed"]) == 1
    assert "c_labels.tif" in summary["failed"][0]["prediction"]
    a, b = summary["files"]
    assert a["segments"] == "components" and b["segments"] == "instances"
    # gt object 1 (4 px) vs predicted halves 1 and 3 (IoU 0.5 each): one match at 0.5, none above.
    assert b["ap50"] == pytest.approx(2 / 3) and b["ap75"] == pytest.approx(1 / 4)
    # ... and is one split (a half matched at IoU 0.5 does not make it a found object only).
    assert [b[k] for k in ("merges", "splits", "missed", "extra")] == [0, 1, 0, 0]
    for kind in ("merges", "splits", "missed", "extra"):
        assert summary["pooled"][kind] == a[kind] + b[kind]
    assert summary["mean"]["pixel_error"] == pytest.approx(3 / 32)
    assert summary["pooled"]["dice_1"] == pytest.approx(2 * 13 / (2 * 13 + 3))
    # Objects pooled over both files at 0.5: TP 2 + 2, FP 0 + 1 (b's second half), FN 0.
    assert summary["pooled"]["ap50"] == pytest.approx(4 / 5)
    assert summary["pooled"]["precision50"] == pytest.approx(4 / 5)
    assert summary["pooled"]["recall50"] == 1.0
    rows = list(csv.DictReader((pred_dir / "evaluation.csv").open()))
    assert [r["file"] for r in rows] == ["a", "b", "mean", "pooled"]
    assert float(rows[3]["ap50"]) == pytest.approx(4 / 5) and rows[3]["vi"] == ""
    assert float(rows[0]["dice_1"]) == pytest.approx(10 / 13)
    assert json.loads((pred_dir / "evaluation.json").read_text())["evaluated"] == 2


def test_file_without_objects_is_null_in_json_and_left_out_of_the_mean(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_volume(pred_dir / "a_labels.tif", Volume(PRED.astype(np.uint8)))
    write_volume(gt_dir / "a_labels.tif", Volume(GT.astype(np.uint8)))
    write_volume(pred_dir / "empty_labels.tif", Volume(np.zeros_like(GT, np.uint8)))
    write_volume(gt_dir / "empty_labels.tif", Volume(np.zeros_like(GT, np.uint8)))
    summary = evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, progress=False))
    assert summary["mean"]["rand_error"] == pytest.approx(1 / 2)  # file a's value alone
    # Strict JSON (no NaN token), so any tool can read it.
    saved = json.loads((pred_dir / "evaluation.json").read_text(), parse_constant=pytest.fail)
    empty = next(row for row in saved["files"] if row["file"] == "empty")
    assert empty["rand_error"] is None and empty["vi"] is None


def test_label_maps_score_255_masks_and_a_boundary_models_classes(tmp_path):
    """0/255 truth and a boundary model's 0/1/2 labels (2: boundary, part of the object)."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    boundary_pred = PRED * np.array([[1, 1, 2, 1]] * 4)  # some object voxels predicted boundary
    write_volume(pred_dir / "a_labels.tif", Volume(boundary_pred.astype(np.uint8)))
    write_volume(gt_dir / "a_labels.tif", Volume((GT * 255).astype(np.uint8)))
    unmapped = evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, report=False, progress=False))
    assert "gt_label_map" in unmapped["failed"][0]["error"]  # the error says how to fix it
    maps = {"gt_label_map": "{0:0,255:1}", "pred_label_map": "{0:0,1:1,2:1}"}
    summary = evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, report=False, progress=False,
                              **maps))  # fmt: skip
    (row,) = summary["files"]
    expected, _ = evaluate_pair(PRED, GT, num_classes=2)
    assert row["dice_1"] == pytest.approx(expected["dice_1"]) == pytest.approx(10 / 13)
    assert row["ap"] == pytest.approx(expected["ap"])
    partial = {**maps, "gt_label_map": "{255:1}"}  # 0 not listed
    partial = evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, report=False, progress=False,
                              **partial))  # fmt: skip
    assert "label values [0] are not in label_map" in partial["failed"][0]["error"]
    with pytest.raises(ValueError, match="gt_label_map must map"):
        evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, gt_label_map="[255]"))


@pytest.mark.parametrize("target", ["boundary", "classes"])
def test_a_boundary_models_labels_are_scored_as_objects_without_being_told(tmp_path, target):
    """predict_summary.json names the checkpoint; its data settings say it learnt 0/1/2."""
    import torch

    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_volume(pred_dir / "a_labels.tif", Volume((PRED * np.array([[1, 1, 2, 1]] * 4)).astype(
        np.uint8)))  # fmt: skip
    write_volume(gt_dir / "a_labels.tif", Volume(GT.astype(np.uint8)))
    ckpt = tmp_path / "m.ckpt"
    torch.save({"datamodule_hyper_parameters": {"target": target}}, ckpt)
    (pred_dir / "predict_summary.json").write_text(json.dumps({"checkpoint": str(ckpt)}))
    summary = evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, report=False, progress=False))
    if target == "classes":  # a 3-class model's class 2 is not an object class: refused
        assert "pred_label_map" in summary["failed"][0]["error"]
        return
    (row,) = summary["files"]
    assert row["dice_1"] == pytest.approx(evaluate_pair(PRED, GT, num_classes=2)[0]["dice_1"])
    ckpt.unlink()  # the checkpoint moved away: nothing to go by, the usual error
    moved = evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, report=False, progress=False))
    assert "pred_label_map" in moved["failed"][0]["error"]


def test_missing_predictions_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        evaluate(config(pred_dir=tmp_path / "none", gt_dir=tmp_path))


def test_instances_from_a_separate_folder(tmp_path):
    pred_dir, gt_dir, inst_dir = tmp_path / "pred", tmp_path / "gt", tmp_path / "inst"
    write_volume(pred_dir / "a_labels.tif", Volume(GT.astype(np.uint8)))
    write_volume(pred_dir / "a_instances.tif", Volume(np.array([[0, 0, 1, 1]] * 4, np.uint16)))
    write_volume(gt_dir / "a.tif", Volume(GT.astype(np.uint8)))
    write_volume(inst_dir / "a.tif", Volume(np.array([[0, 0, 1, 1]] * 4, np.uint16)))
    cfg = config(pred_dir=pred_dir, gt_dir=gt_dir, gt_suffix="''", gt_instance_dir=inst_dir,
                 gt_instance_suffix="''", progress=False)  # fmt: skip
    (row,) = evaluate(cfg)["files"]
    assert row["segments"] == "instances" and row["ap"] == 1.0 and row["dice_1"] == 1.0


def test_object_id_truth_is_class_and_instance_truth(tmp_path):
    """Cellpose-style truth ``a_masks.tif`` of object ids: gt_label_map=objects scores both."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    ids = np.array([[0, 0, 3, 3], [0, 0, 3, 3], [7, 0, 0, 0], [7, 7, 0, 0]], np.uint16)
    pred_ids = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 0], [2, 2, 0, 0]], np.uint16)
    write_volume(pred_dir / "a_labels.tif", Volume((pred_ids > 0).astype(np.uint8)))
    write_volume(pred_dir / "a_instances.tif", Volume(pred_ids))
    write_volume(gt_dir / "a_masks.tif", Volume(ids))
    plain = evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, report=False, progress=False))
    assert plain["failed"][0]["error"].endswith(
        "no ground truth a_labels.* in " + f"{gt_dir}: found a_masks.tif, pass gt_suffix=_masks"
    )  # the default suffix misses Cellpose's name, and the error says which one fits
    cfg = config(pred_dir=pred_dir, gt_dir=gt_dir, gt_suffix="_masks", gt_label_map="objects",
                 report=False, progress=False)  # fmt: skip
    (row,) = evaluate(cfg)["files"]
    expected, _ = evaluate_pair(pred_ids > 0, ids > 0, 2, 1, pred_ids, ids)
    assert row["segments"] == "instances"
    assert row["dice_1"] == pytest.approx(expected["dice_1"]) == pytest.approx(14 / 16)
    assert row["ap50"] == pytest.approx(expected["ap50"]) == 1.0  # IoU 1 and 3/5: both match
    assert row["ap75"] == pytest.approx(expected["ap75"]) == pytest.approx(1 / 3)  # 1 TP, FP, FN
    with pytest.raises(ValueError, match=r"gt_label_map must map .* or be 'objects', got 'ids'"):
        evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, gt_suffix="_masks", gt_label_map="ids"))


def test_zarr_predictions_pair_with_zarr_ground_truth(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_volume(pred_dir / "a_labels.ome.zarr", Volume(PRED.astype(np.uint8)[None]))
    write_volume(gt_dir / "a_labels.zarr", Volume(GT.astype(np.uint8)[None]))
    summary = evaluate(config(pred_dir=pred_dir, gt_dir=gt_dir, progress=False, report=False))
    assert summary["evaluated"] == 1 and not summary["failed"]
    assert summary["mean"]["pixel_error"] == pytest.approx(3 / 16)


def test_sparse_huge_instance_ids_score_as_their_compact_numbering() -> None:
    """Object ids of another tool can be anything (around 2**40 here): the figures are those
    of the same objects numbered 1..n, and nothing is allocated by the largest id."""
    from unet_seg.evaluation.evaluate import pair_figures

    rng = np.random.default_rng(0)
    gt_ids = np.zeros((40, 40), np.int64)
    pred_ids = np.zeros((40, 40), np.int64)
    for k, (y, x) in enumerate(rng.integers(0, 32, (6, 2)), start=1):
        gt_ids[y : y + 8, x : x + 8] = k
        pred_ids[y + 1 : y + 8, x : x + 7] = 7 - k
    classes_gt, classes_pred = (gt_ids > 0).astype(np.int64), (pred_ids > 0).astype(np.int64)
    compact, _, _ = pair_figures(classes_pred, classes_gt, 2, 1, pred_ids, gt_ids)
    sparse, _, _ = pair_figures(classes_pred, classes_gt, 2, 1,
                                np.where(pred_ids > 0, pred_ids * 2**40 + 5, 0),
                                np.where(gt_ids > 0, (7 - gt_ids) * 2**41, 0))  # fmt: skip
    assert sparse == pytest.approx(compact, nan_ok=True)
