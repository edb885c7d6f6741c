"""Loading a network from a training checkpoint without Lightning (unet_seg.models.checkpoint)."""

from __future__ import annotations

import pytest
import torch

from unet_seg.models.checkpoint import load_model
from unet_seg.training.module import SegmentationModule

TINY = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [4, 8],
        "padding": "valid", "norm": "batch", "dropout": 0.0}  # fmt: skip


def _save(module: SegmentationModule, path):
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_restores_the_same_network_and_percentiles(tmp_path):
    torch.manual_seed(0)
    module = SegmentationModule(model=TINY, normalization={"low": 2.0, "high": 99.0}).eval()
    with torch.no_grad():  # batch-norm statistics must travel too
        module.model.inc[1].running_mean.fill_(0.3)
    model, norm = load_model(_save(module, tmp_path / "m.ckpt"))
    assert norm == {"low": 2.0, "high": 99.0} and not model.training
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), module(x), rtol=0, atol=0)


def test_missing_and_broken_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt"):
        load_model(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.ckpt: not a PyTorch checkpoint"):
        load_model(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "empty.ckpt")
    with pytest.raises(ValueError, match=r"empty\.ckpt: no network configuration"):
        load_model(tmp_path / "empty.ckpt")


def test_weights_that_do_not_fit_are_a_named_error(tmp_path):
    module = SegmentationModule(model=TINY)
    content = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    content["hyper_parameters"]["model"] = {**TINY, "features": [8, 16]}
    torch.save(content, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"other\.ckpt: the weights do not fit"):
        load_model(tmp_path / "other.ckpt")


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickled_object_is_refused_not_run(tmp_path, capsys):
    torch.save({"hyper_parameters": {"model": TINY}, "state_dict": {}, "x": _Payload()},
               tmp_path / "evil.ckpt")  # fmt: skip
    with pytest.raises(ValueError, match=r"evil\.ckpt: refused"):
        load_model(tmp_path / "evil.ckpt")
    assert "this ran" not in capsys.readouterr().out
