"""A bad instance file (``*_instances``: ``pred_instance_suffix``, ``gt_instance_suffix``,
``gt_instance_dir``) is named as the instance file it is, never as the prediction: unreadable,
holding values that are no object ids, or of another shape than its labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from tests.cli.test_errors import run_script
from unet_seg.config import config_dir
from unet_seg.evaluation.evaluate import evaluate
from unet_seg.io import Volume, write_volume

LABELS = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1]], np.uint8)
IDS = np.array([[0, 1, 1], [2, 0, 0], [0, 0, 3]], np.uint16)
PRED_ROLE = "the prediction's instance file (pred_instance_suffix=_instances)"
GT_ROLE = "the ground truth's instance file (gt_instance_suffix=_instances)"
# what the file holds -> what the message says of it
BAD = {
    "unreadable": (b"not a tiff", "cannot open .tif file"),
    "fractions": (np.array([[0, 1.5, 1], [1, 0, 0], [0, 0, 2]], np.float32), "e.g. [1.5]"),
    "negative": (np.array([[0, -1, 1], [1, 0, 0], [0, 0, 2]], np.int16), "found -1"),
    "other shape": (np.zeros((2, 2), np.uint16), "shape (2, 2) differs from its labels' (3, 3)"),
}


def _folders(root: Path, side: str, content, instance_dir: bool = False) -> tuple[Path, ...]:
    """``pred``, ``gt`` (and ``gt_instances``) folders of one pair, key ``a``, whose ``side``
    instance file holds ``content`` (bytes, or an array)."""
    pred, gt, ids = root / "pred", root / "gt", root / "gt_instances"
    write_volume(pred / "a_labels.tif", Volume(LABELS))
    write_volume(gt / "a_labels.tif", Volume(LABELS))
    write_volume(pred / "a_instances.tif", Volume(IDS))
    truth = ids / "a.tif" if instance_dir else gt / "a_instances.tif"
    write_volume(truth, Volume(IDS))
    bad = pred / "a_instances.tif" if side == "pred" else truth
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        write_volume(bad, Volume(content))
    return pred, gt, bad


@pytest.mark.parametrize("side", ["pred", "gt"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_instance_file_is_named_as_the_instance_file(tmp_path, side, case) -> None:
    content, says = BAD[case]
    pred, gt, bad = _folders(tmp_path, side, content)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"pred_dir={pred}", f"gt_dir={gt}",
                                             "progress=false"])  # fmt: skip
    summary = evaluate(cfg)
    (failure,) = summary["failed"]
    role = PRED_ROLE if side == "pred" else GT_ROLE
    assert failure["error"].startswith(f"ValueError: {bad}: {role}: "), failure["error"]
    assert says in failure["error"]
    assert summary["evaluated"] == 0


def test_the_cli_names_a_bad_instance_file_of_gt_instance_dir(tmp_path, monkeypatch, capsys):
    """Through ``unet-seg-evaluate``: exit 1, one line naming the file and the options that
    chose it."""
    pred, gt, bad = _folders(tmp_path, "gt", BAD["negative"][0], instance_dir=True)
    code, err = run_script(
        "evaluate",
        [f"pred_dir={pred}", f"gt_dir={gt}", f"gt_instance_dir={bad.parent}",
         "gt_instance_suffix=''", f"output_dir={tmp_path / 'out'}", "progress=false"],
        monkeypatch, capsys,
    )  # fmt: skip
    lines = [line for line in err if "failed:" in line]
    assert code == 1
    assert lines == [
        f"unet-seg-evaluate: failed: {pred / 'a_labels.tif'}: ValueError: {bad}: the ground "
        f"truth's instance file (gt_instance_suffix='', gt_instance_dir={bad.parent}): object "
        "ids must be >= 0, found -1"
    ]
