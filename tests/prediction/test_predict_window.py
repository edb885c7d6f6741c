"""A model trained with a fixed intensity window predicts with that window: from its checkpoint,
and from its TorchScript and bioimage.io exports."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.prediction.test_predict import TINY_2D, config, save_checkpoint
from unet_seg.config import config_dir
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import predict_tiled
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.models.exported import load_exported
from unet_seg.normalization import normalize, normalize_percentile
from unet_seg.prediction.batch import predict
from unet_seg.training.module import SegmentationModule

# As train.yaml's percentiles merged with a planned experiment's window.
WINDOW = {"low": 1.0, "high": 99.8, "window": [-200.0, 400.0], "mean": 50.0, "std": 120.0}
STORED = {"window": [-200.0, 400.0], "mean": 50.0, "std": 120.0}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "window.ckpt"
    return save_checkpoint(path, TINY_2D, seed=5, normalization=WINDOW, perturb=0.1)


@pytest.fixture
def ct_stack(tmp_path, rng) -> tuple[Path, np.ndarray]:
    array = rng.integers(-1024, 1500, (2, 40, 45)).astype(np.int16)
    return write_volume(tmp_path / "ct.tif", Volume(array)), array


def in_memory_labels(ckpt: Path, normalised: np.ndarray) -> np.ndarray:
    module = SegmentationModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    model = module.model.eval()
    return predict_tiled(normalised[None], model, ModelRunner(model, "cpu"), 512).argmax(0)


def test_the_checkpoint_predicts_with_its_window(tmp_path, ckpt, ct_stack):
    image, array = ct_stack
    summary = predict(config(input=image, output_dir=tmp_path / "out", checkpoint=ckpt,
                             tile_size=24, batch_size=3))  # fmt: skip
    assert summary["ok"] == 1
    labels = read_volume(tmp_path / "out" / "ct_labels.tif").array
    np.testing.assert_array_equal(labels, in_memory_labels(ckpt, normalize(array, WINDOW)))
    # Not what per-image percentiles would give: the window is what was applied.
    assert (labels != in_memory_labels(ckpt, normalize_percentile(array))).any()


def test_exports_carry_the_window(tmp_path, ckpt, ct_stack):
    from unet_seg.export.run import export

    image, _ = ct_stack
    reference = predict(config(input=image, output_dir=tmp_path / "ckpt", checkpoint=ckpt))
    expected = read_volume(Path(reference["files"][0]["outputs"][0])).array
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("export", overrides=[f"checkpoint={ckpt}", f"output_dir={tmp_path}",
                                           "format=torchscript"])  # fmt: skip
    export(cfg)
    _, stored = load_exported(tmp_path / "window.pt")
    assert stored == STORED
    summary = predict(config(input=image, output_dir=tmp_path / "pt",
                             checkpoint=tmp_path / "window.pt"))  # fmt: skip
    labels = read_volume(Path(summary["files"][0]["outputs"][0])).array
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.slow  # a bioimage.io package is validated by bioimageio.spec: seconds
def test_the_bioimageio_package_clips_and_z_scores(tmp_path, ckpt, ct_stack):
    pytest.importorskip("bioimageio.spec")
    from unet_seg.export.run import export

    image, _ = ct_stack
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("export", overrides=[f"checkpoint={ckpt}", f"output_dir={tmp_path}",
                                           "format=bioimageio"])  # fmt: skip
    export(cfg)
    package = tmp_path / "window.bioimageio.zip"
    with zipfile.ZipFile(package) as members:
        rdf = yaml.safe_load(members.read("rdf.yaml"))
    steps = [s for s in rdf["inputs"][0]["preprocessing"] if s["id"] != "ensure_dtype"]
    assert [s["id"] for s in steps] == ["clip", "fixed_zero_mean_unit_variance"]
    assert (steps[0]["kwargs"]["min"], steps[0]["kwargs"]["max"]) == (-200.0, 400.0)
    assert (steps[1]["kwargs"]["mean"], steps[1]["kwargs"]["std"]) == (50.0, 120.0)
    assert rdf["config"]["unet_seg"]["normalization"] == STORED
    reference = predict(config(input=image, output_dir=tmp_path / "ckpt", checkpoint=ckpt))
    summary = predict(config(input=image, output_dir=tmp_path / "zip", checkpoint=package))
    np.testing.assert_array_equal(
        read_volume(Path(summary["files"][0]["outputs"][0])).array,
        read_volume(Path(reference["files"][0]["outputs"][0])).array,
    )
