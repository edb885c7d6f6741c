"""Tuning an ensemble of folds on out-of-fold predictions: each fold's own validation cases,
pooled into one search, the result stored in every fold, which predict then uses."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.tuning.test_write_back import config, sample_data, save_checkpoint
from unet_seg.errors import UsageError
from unet_seg.instances.methods import TUNED_KEY
from unet_seg.models.ensemble import load_ensemble
from unet_seg.tuning import write_back
from unet_seg.tuning.write_back import tune_command


def fold_folder(tmp_path, folds=3, members=(0, 1, 2), **cv):
    """A model folder of ``fold_k/model.ckpt`` over 3 sample images in ``folds`` folds."""
    data = sample_data(tmp_path / "data")
    data.pop("val_names")
    root = tmp_path / "model"
    for k in members:
        (root / f"fold_{k}").mkdir(parents=True)
        settings = {"folds": folds, "fold": k, "seed": 0, "test_names": [], **cv}
        save_checkpoint(root / f"fold_{k}" / "model.ckpt", {**data, "cv": settings})
    return root


@pytest.mark.slow  # three folds' validation images predicted and searched, ~4 s on 2 idle cores
def test_folds_are_tuned_on_their_pooled_out_of_fold_cases(tmp_path, monkeypatch):
    root = fold_folder(tmp_path)
    searched = {}
    real_tune = write_back.tune

    def recording_tune(probs, truths, *args, **kwargs):
        searched["truths"] = truths
        return real_tune(probs, truths, *args, **kwargs)

    monkeypatch.setattr(write_back, "tune", recording_tune)
    result = tune_command(config(checkpoint=root, methods="[cc]"))
    # 3 images, 3 folds: each fold validates one, so the search saw every image exactly once.
    assert len(searched["truths"]) == 3
    pairs = itertools.combinations(searched["truths"], 2)
    assert not any(a.shape == b.shape and (a == b).all() for a, b in pairs)  # three images
    stored = [torch.load(p, weights_only=True)[TUNED_KEY] for p in root.glob("fold_*/*.ckpt")]
    assert len(stored) == 3 and all(s == result for s in stored)
    assert load_ensemble(root)[2] == result  # the members agree: the ensemble uses it


def test_what_cannot_be_tuned_together_is_refused(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    data = sample_data(tmp_path / "data")
    for name in ("a", "b"):
        save_checkpoint(plain / f"{name}.ckpt", data)
    with pytest.raises(UsageError, match=r"trained without cv\.folds"):
        tune_command(config(checkpoint=plain, methods="[cc]"))
    root = fold_folder(tmp_path / "same", members=(0,))
    twice = [str(root / "fold_0" / "model.ckpt")] * 2
    with pytest.raises(UsageError, match="are both fold 0"):
        tune_command(config(checkpoint=f"[{','.join(twice)}]", methods="[cc]"))
    with pytest.raises(UsageError, match="leave output=null"):
        tune_command(config(checkpoint=fold_folder(tmp_path / "out"), output="x.ckpt"))
