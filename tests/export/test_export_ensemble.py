"""Exporting an ensemble: the file returns the log of the members' mean softmax (logits, as
every export does), in TorchScript and ONNX; bioimage.io packages one network only."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.prediction.test_predict import TINY_2D, save_checkpoint
from unet_seg.config import config_dir
from unet_seg.errors import UsageError
from unet_seg.export.run import ensemble_name, export
from unet_seg.models.checkpoint import load_model
from unet_seg.models.exported import load_exported


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "nuclei"
    for k in range(2):
        (root / f"fold_{k}").mkdir(parents=True)
        save_checkpoint(root / f"fold_{k}" / "model.ckpt", TINY_2D, seed=k)
    return root


def config(**overrides):
    args = [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("export", overrides=args)


def test_names_of_ensemble_exports(folds):
    one = folds / "fold_0" / "model.ckpt"
    assert ensemble_name(str(one)) == "fold_0"
    assert ensemble_name(str(folds)) == "nuclei_ensemble"
    assert ensemble_name([str(one), str(folds / "fold_1" / "model.ckpt")]) == "fold_0_ensemble"


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_exported_ensemble_returns_log_of_the_mean_softmax(tmp_path, folds, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    written = export(config(checkpoint=folds, format=fmt, output_dir=tmp_path))[fmt]
    assert written.name == f"nuclei_ensemble.{'pt' if fmt == 'torchscript' else 'onnx'}"
    network, norm = load_exported(written)
    assert norm == {"low": 1.0, "high": 99.8}
    members = [load_model(folds / f"fold_{k}" / "model.ckpt")[0] for k in range(2)]
    x = torch.randn(2, 1, 60, 76)
    with torch.no_grad():
        got = network(x)
        mean = torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0)
    assert got.shape == (2, 2, 44, 60)
    torch.testing.assert_close(got, mean.log(), atol=1e-5, rtol=0)


def test_a_bioimageio_ensemble_is_refused(tmp_path, folds):
    with pytest.raises(UsageError, match="format=bioimageio packages one U-Net"):
        export(config(checkpoint=folds, format="bioimageio", output_dir=tmp_path))
    assert not list(tmp_path.iterdir())
