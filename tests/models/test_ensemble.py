"""Ensembles: which checkpoints a folder names, members that must agree, the mean softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.prediction.test_predict import TINY_2D, save_checkpoint
from unet_seg.errors import InputNotFoundError, UsageError
from unet_seg.models.ensemble import (
    EnsembleNetwork,
    checkpoint_spec,
    load_ensemble,
    resolve_checkpoints,
)
from unet_seg.models.unet import UNet


def test_a_model_folder_names_its_folds_in_natural_order(tmp_path):
    for k in (0, 2, 10):
        (tmp_path / f"fold_{k}").mkdir()
        (tmp_path / f"fold_{k}" / "model.ckpt").write_bytes(b"")
    (tmp_path / "other.ckpt").write_bytes(b"")  # the folds win over loose checkpoints
    found = resolve_checkpoints(tmp_path)
    assert [p.parent.name for p in found] == ["fold_0", "fold_2", "fold_10"]
    assert checkpoint_spec(str(tmp_path)) == tuple(str(p) for p in found)


def test_loose_checkpoints_a_list_and_one_file(tmp_path):
    for name in ("b.ckpt", "a.ckpt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in resolve_checkpoints(tmp_path)] == ["a.ckpt", "b.ckpt"]
    one = str(tmp_path / "a.ckpt")
    assert checkpoint_spec(one) == one  # a single checkpoint stays a plain path
    assert checkpoint_spec([one]) == one
    assert checkpoint_spec([one, tmp_path]) == (one, one, str(tmp_path / "b.ckpt"))


def test_empty_folder_and_empty_list_are_refused(tmp_path):
    with pytest.raises(InputNotFoundError, match=r"fold_\*/model.ckpt or \*.ckpt"):
        resolve_checkpoints(tmp_path)
    with pytest.raises(InputNotFoundError, match="no checkpoint"):
        resolve_checkpoints([])


def test_output_is_the_log_of_the_mean_softmax():
    torch.manual_seed(0)
    members = [UNet(**TINY_2D).eval() for _ in range(3)]
    x = torch.randn(2, 1, 44, 52)
    with torch.no_grad():
        got = EnsembleNetwork(members)(x)
        expected = torch.stack([m(x).softmax(1) for m in members]).mean(0).log()
    assert got.shape == expected.shape == (2, 2, 28, 36)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(2, 28, 36))


def test_identical_members_give_the_one_networks_probabilities():
    torch.manual_seed(1)
    model = UNet(**TINY_2D).eval()
    x = torch.randn(1, 1, 60, 60)
    with torch.no_grad():
        one = model(x).softmax(1)
        many = EnsembleNetwork([model, model, model])(x).softmax(1)
    np.testing.assert_allclose(many.numpy(), one.numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"num_classes": 3}, "num_classes differ \\(2 vs 3\\)"),
        ({"in_channels": 2}, "in_channels differ"),
        ({"spatial_dims": 3}, "spatial_dims differ"),
        ({"features": [4, 8, 16]}, "input sizes and output margin differ"),
        ({"padding": "same"}, "input sizes and output margin differ"),
    ],
)
def test_members_that_disagree_are_refused_naming_both(tmp_path, change, what):
    a = save_checkpoint(tmp_path / "a.ckpt", TINY_2D, seed=0)
    b = save_checkpoint(tmp_path / "b.ckpt", {**TINY_2D, **change}, seed=0)
    with pytest.raises(UsageError, match=f"^{a} and {b} cannot be ensembled: .*{what}"):
        load_ensemble([a, b])


def test_other_normalisation_is_refused_and_agreeing_members_load(tmp_path):
    a = save_checkpoint(tmp_path / "a.ckpt", TINY_2D, seed=0)
    b = save_checkpoint(tmp_path / "b.ckpt", TINY_2D, seed=1)
    c = save_checkpoint(tmp_path / "c.ckpt", TINY_2D, seed=0, normalization={"low": 0, "high": 99})
    with pytest.raises(UsageError, match="normalisation differs"):
        load_ensemble([a, c])
    model, norm, tuning = load_ensemble([a, b])
    assert isinstance(model, EnsembleNetwork) and len(model.members) == 2
    assert (model.num_classes, model.in_channels, model.spatial_dims) == (2, 1, 2)
    assert model.output_shape((44, 52)) == (28, 36)
    assert norm == {"low": 1.0, "high": 99.8} and tuning is None
