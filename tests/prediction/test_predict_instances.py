"""Instances in ``unet-seg-predict``: the seeded watershed on stored probabilities, and tuned
post-processing from the checkpoint unless overridden."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from tests.prediction.test_predict import TINY_2D, config, save_checkpoint
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import predict_tiled
from unet_seg.instances.methods import resolve, seeded_from
from unet_seg.instances.seeded import foreground_and_interior
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.models.checkpoint import load_model
from unet_seg.normalization import normalize_percentile
from unet_seg.prediction.batch import predict
from unet_seg.prediction.ownership import REGISTER_NAME
from unet_seg.training.module import SegmentationModule
from unet_seg.tuning.write_back import store_tuning


def confident_checkpoint(path, classes: int):
    """A random network made confident (scaled head): its probabilities span [0, 1]."""
    torch.manual_seed(1234)  # the same network whatever ran before
    module = SegmentationModule(model={**TINY_2D, "num_classes": classes})
    with torch.no_grad():
        module.model.head.weight.mul_(30.0)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def ckpt_3class(tmp_path_factory):
    return confident_checkpoint(tmp_path_factory.mktemp("ckpt") / "boundary.ckpt", 3)


def blobs(rng, shape) -> np.ndarray:
    """Smooth bright blobs: the random network's probabilities vary over whole regions."""
    smooth = ndi.gaussian_filter(rng.standard_normal(shape), (0, 3, 3))
    return np.clip((smooth - smooth.min()) * 4000, 0, 60000).astype(np.uint16)


def in_memory_probabilities(array: np.ndarray, checkpoint) -> np.ndarray:
    model, _ = load_model(checkpoint)
    norm = normalize_percentile(array)[None]  # the whole stack is small: exact percentiles
    return predict_tiled(norm, model, ModelRunner(model, "cpu"), tile_size=512)


# One block; several blocks with a halo wider than the image (every flood sees whole objects).
@pytest.mark.parametrize("blocking", [{}, {"block_size": "[1,16,24]", "instances.halo": 100}])
def test_seeded_instances_equal_the_in_memory_watershed(tmp_path, rng, ckpt_3class, blocking):
    array = blobs(rng, (3, 40, 52))
    image = write_volume(tmp_path / "s.tif", Volume(array, spacing=(2.0, 0.5, 0.5)))
    probs = in_memory_probabilities(array, ckpt_3class)
    fg, interior = (m.astype(np.float16) for m in foreground_and_interior(probs))  # as stored
    # A random network: thresholds from its own maps, so that there are several objects.
    fg_threshold = float(np.quantile(fg, 0.3))
    chosen = {"method": "seeded", "min_size": 3, "foreground_threshold": fg_threshold,
              "seed_threshold": float(np.quantile(interior[fg > fg_threshold], 0.8))}  # fmt: skip
    expected = seeded_from(fg, interior, resolve(overrides=chosen))
    assert expected.max() >= 3  # the comparison means something
    overrides = {f"instances.{k}": v for k, v in chosen.items()}
    summary = predict(config(input=image, output_dir=tmp_path / "out", checkpoint=ckpt_3class,
                             **overrides, **blocking, **{"outputs.labels": False,
                                             "outputs.instances": True}))  # fmt: skip
    assert summary["ok"] == 1 and summary["instances"]["method"] == "seeded"
    assert (summary["files"][0]["blocks"]["total"] > 1) == bool(blocking)
    # Only the instances and their table: the label and probability maps were scratch files.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        REGISTER_NAME, "predict_summary.json", "s_instances.tif", "s_objects.csv", "s_preview.png"
    ]  # fmt: skip
    written = read_volume(tmp_path / "out" / "s_instances.tif")
    assert written.spacing == pytest.approx((2.0, 0.5, 0.5))
    np.testing.assert_array_equal(written.array, expected)
    with open(tmp_path / "out" / "s_objects.csv", newline="") as handle:
        sizes = {int(r["label"]): int(r["voxels"]) for r in csv.DictReader(handle)}
    counts = np.bincount(expected.ravel())
    assert sizes == {label: int(counts[label]) for label in np.flatnonzero(counts) if label}


def test_tuned_values_are_used_unless_overridden(tmp_path, rng, monkeypatch):
    ckpt = confident_checkpoint(tmp_path / "m.ckpt", 2)
    tuned = {"objective": "ap", "method": "cc", "score": 0.5,
             "roles": {"foreground_class": 1, "background_class": 0, "interior_class": 1},
             "methods": {"cc": {"min_size": 10**9}}, "scores": {"cc": 0.5}}  # fmt: skip
    store_tuning(ckpt, tuned)
    image = write_volume(tmp_path / "s.tif", Volume(blobs(rng, (2, 40, 52))))
    on = {"outputs.instances": True}
    reads = []
    monkeypatch.setattr(torch, "load", lambda *a, _load=torch.load, **k: reads.append(a[0])
                        or _load(*a, **k))  # fmt: skip
    summary = predict(config(input=image, output_dir=tmp_path / "a", checkpoint=ckpt, **on))
    assert summary["instances"]["method"] == "cc" and summary["instances"]["min_size"] == 10**9
    assert reads == [ckpt]  # the network and its tuning come from one read of the file
    assert read_volume(tmp_path / "a" / "s_instances.tif").array.max() == 0  # all too small
    predict(config(input=image, output_dir=tmp_path / "b", checkpoint=ckpt,
                   **on, **{"instances.min_size": 0}))  # fmt: skip
    labels = read_volume(tmp_path / "b" / "s_labels.tif").array
    components = ndi.label(labels == 1)[0]
    inst = read_volume(tmp_path / "b" / "s_instances.tif").array
    assert inst.max() == components.max() >= 1  # the tuned min_size no longer applies
    np.testing.assert_array_equal(inst > 0, components > 0)


def test_predict_warns_when_tuned_with_the_other_tta(tmp_path, rng, caplog):
    ckpt = confident_checkpoint(tmp_path / "m.ckpt", 2)
    tuned = {"objective": "ap", "method": "cc", "score": 0.5, "tta": True,
             "roles": {"foreground_class": 1, "background_class": 0, "interior_class": 1},
             "methods": {"cc": {"min_size": 1}}, "scores": {"cc": 0.5}}  # fmt: skip
    store_tuning(ckpt, tuned)
    image = write_volume(tmp_path / "s.tif", Volume(blobs(rng, (1, 24, 24))))
    on = {"outputs.instances": True}
    with caplog.at_level("WARNING", logger="unet_seg"):
        predict(config(input=image, output_dir=tmp_path / "a", checkpoint=ckpt, **on))
    assert "tuned with tta=true, this run predicts with tta=false" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="unet_seg"):
        predict(config(input=image, output_dir=tmp_path / "b", checkpoint=ckpt, tta=True, **on))
    assert "tuned with" not in caplog.text
    del tuned["tta"]  # a tuning stored before it recorded TTA: nothing to compare
    store_tuning(ckpt, tuned)
    with caplog.at_level("WARNING", logger="unet_seg"):
        predict(config(input=image, output_dir=tmp_path / "c", checkpoint=ckpt, **on))
    assert "tuned with" not in caplog.text


def test_bad_instance_method_is_reported(tmp_path, rng):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", TINY_2D)
    image = write_volume(tmp_path / "s.tif", Volume(blobs(rng, (1, 20, 20))))
    with pytest.raises(ValueError, match=r"instances\.method"):
        predict(config(input=image, output_dir=tmp_path, checkpoint=ckpt,
                       **{"outputs.instances": True, "instances.method": "magic"}))  # fmt: skip


ROLES_READ = [("cc", "foreground_class"), ("distance", "foreground_class"),
              ("seeded", "interior_class"), ("seeded", "background_class")]  # fmt: skip


@pytest.mark.parametrize("method,role", ROLES_READ)
def test_a_class_the_model_does_not_predict_is_refused_before_predicting(
    tmp_path, rng, ckpt_3class, method, role
):
    image = write_volume(tmp_path / "s.tif", Volume(blobs(rng, (1, 20, 20))))
    with pytest.raises(
        ValueError, match=rf"instances\.{role}=3, but the model predicts classes 0\.\.2"
    ):
        predict(
            config(
                input=image,
                output_dir=tmp_path / "out",
                checkpoint=ckpt_3class,
                **{"outputs.instances": True, "instances.method": method, f"instances.{role}": 3},
            )
        )
    assert not (tmp_path / "out").exists()  # nothing predicted, no folder made
