"""Training a fold: the split stored with the run and the checkpoint, each fold published in
the model folder, the per-fold summary; slabs for a single volume; a sweep of all folds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_configs import compose_train
from tests.training.test_train import QUICK
from unet_seg.data.training_data import TrainingData
from unet_seg.errors import UsageError
from unet_seg.training.folds import format_table, main, summarize_folds
from unet_seg.training.train import build_datamodule, train

SAMPLE_2D = [f"nuclei_{i:02d}" for i in range(10)]


@pytest.fixture(autouse=True)
def _needs_samples(samples_dir: Path) -> None:
    if not (samples_dir / "2d" / "images").is_dir():
        pytest.skip("data_samples/ not generated (python -m unet_seg.data.samples)")


@pytest.mark.slow  # one short training, ~5 s on 2 idle cores
def test_a_fold_is_stored_with_the_run_and_published_in_the_model_folder(tmp_path):
    cfg = compose_train(tmp_path, "experiment=sample_2d", "cv.folds=8", "cv.fold=3",
                        "cv.test_names=[nuclei_00]", "trainer.max_epochs=1", "logger=csv",
                        "data.samples_per_epoch=4", "callbacks.overlays=null",
                        "validate_best=false", *QUICK)  # fmt: skip
    made = train(cfg)
    split = json.loads((tmp_path / "out" / "folds.json").read_text())
    assert split["folds"] == 8 and split["fold"] == 3 and split["mode"] == "cases"
    assert split["test"] == ["nuclei_00"] and len(split["val"]) in (1, 2)  # 9 cases, 8 folds
    assert sorted(split["train"] + split["val"]) == SAMPLE_2D[1:]
    folder = tmp_path / "runs" / "sample_2d"
    assert made.published == folder / "fold_3" / "model.ckpt"
    stored = torch.load(made.published, weights_only=True)["datamodule_hyper_parameters"]
    assert stored["cv"] == {"folds": 8, "fold": 3, "seed": 0, "test_names": ["nuclei_00"]}
    assert not (folder / "model.ckpt").exists()  # folds never replace the single model
    fold_metrics = json.loads((folder / "fold_3" / "metrics.json").read_text())["metrics"]
    summary = json.loads((folder / "folds.json").read_text())
    assert summary["folds"] == {"fold_3": pytest.approx(fold_metrics)}
    assert summary["summary"]["val/dice"] == pytest.approx(
        {"mean": fold_metrics["val/dice"], "std": 0.0, "n": 1}
    )


def test_the_data_modules_validation_is_the_fold(tmp_path):
    seen = []
    for fold in range(3):
        cfg = compose_train(tmp_path, "experiment=sample_2d", "cv.folds=3", f"cv.fold={fold}",
                            "cv.seed=1")  # fmt: skip
        train_pairs, val_pairs = build_datamodule(cfg).data.split()
        names = [p[1].stem for p in val_pairs]
        assert not set(names) & {p[1].stem for p in train_pairs}
        seen += names
    assert sorted(seen) == SAMPLE_2D


def test_one_volume_is_cut_into_slabs(tmp_path):
    """The 3D sample is one case: 3 folds cut it along its longest axis."""
    parts = {}
    for role in ("train", "val"):
        cfg = compose_train(tmp_path, "experiment=sample_3d", "cv.folds=3", "cv.fold=2")
        datamodule = build_datamodule(cfg)
        pairs = datamodule.data.split()[role == "val"]
        datamodule.data.lazy = False
        parts[role] = datamodule.data.regions(pairs, role)
    (val,) = parts["val"]
    (rest,) = parts["train"]
    # 48 x 96 x 96: y is the first longest axis; fold 2 of 3 validates on its last third.
    assert (val.shape, rest.shape) == ((48, 32, 96), (48, 64, 96))
    assert val.name.endswith("y[64:96]") and rest.name.endswith("y[0:64]")


def test_slabs_need_the_images_in_memory_and_cv_takes_no_val_images(tmp_path):
    cfg = compose_train(tmp_path, "experiment=sample_3d", "cv.folds=3", "data.lazy=true")
    datamodule = build_datamodule(cfg)
    pairs = datamodule.data.split()[0]
    with pytest.raises(UsageError, match=r"needs them in memory: set data\.lazy=false"):
        datamodule.data.regions(pairs, "train")
    images = str(tmp_path)
    cfg = compose_train(tmp_path, "experiment=sample_2d", "cv.folds=3", "data.val_names=null",
                        f"+data.val_images={images}", f"+data.val_labels={images}")  # fmt: skip
    with pytest.raises(Exception, match=r"set data\.val_images=null"):
        build_datamodule(cfg)


def test_the_summary_gives_mean_and_spread_per_figure(tmp_path, capsys):
    for k, dice in enumerate([0.8, 0.9, 0.7]):
        (tmp_path / f"fold_{k}").mkdir()
        metrics = {"val/dice": dice, "val/loss": 0.1 * (k + 1), "train/loss": 1.0}
        (tmp_path / f"fold_{k}" / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    summary = summarize_folds(tmp_path)
    assert list(summary["folds"]) == ["fold_0", "fold_1", "fold_2"]
    assert summary["summary"]["val/dice"] == pytest.approx({"mean": 0.8, "std": 0.1, "n": 3})
    assert "train/loss" not in summary["summary"]
    assert json.loads((tmp_path / "folds.json").read_text()) == summary
    table = format_table(summary).splitlines()
    assert table[0].split() == ["figure", "fold_0", "fold_1", "fold_2", "mean", "std"]
    assert table[1].split() == ["val/dice", "0.8000", "0.9000", "0.7000", "0.8000", "0.1000"]
    assert main([str(tmp_path)]) == 0 and "val/loss" in capsys.readouterr().out
    assert main([str(tmp_path / "fold_0")]) == 2
    assert "no fold_*/metrics.json" in capsys.readouterr().err


@pytest.mark.slow  # two short trainings through the console script, ~40 s on 2 cores
def test_all_folds_as_a_multirun_sweep_fill_the_model_folder(tmp_path):
    script = Path(sys.executable).parent / "unet-seg-train"
    command = [str(script), "-m", "experiment=sample_2d", "cv.folds=2", "cv.fold=0,1",
               "trainer.max_epochs=1", "data.samples_per_epoch=4", "callbacks.overlays=null",
               f"paths.runs_dir={tmp_path / 'runs'}", "data.num_workers=0"]  # fmt: skip
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "runs" / "sample_2d"
    assert sorted(p.parent.name for p in folder.glob("fold_*/model.ckpt")) == ["fold_0", "fold_1"]
    summary = json.loads((folder / "folds.json").read_text())
    assert summary["summary"]["val/dice"]["n"] == 2
    splits = [json.loads(p.read_text()) for p in folder.glob("multirun_*/*/folds.json")]
    assert sorted(n for s in splits for n in s["val"]) == SAMPLE_2D


def test_tuning_reads_the_folds_own_validation_cases(tmp_path):
    """The checkpoint keeps ``cv`` with the data settings: unet-seg-tune, which rebuilds the
    data from them, tunes on the fold's validation cases (out of fold)."""
    cfg = compose_train(tmp_path, "experiment=sample_2d", "cv.folds=5", "cv.fold=2")
    stored = {k: v for k, v in build_datamodule(cfg).hparams.items() if k != "pin_memory"}
    val = [p[1].stem for p in TrainingData(**stored).split()[1]]
    regions = TrainingData(**stored).validation_regions()
    assert len(val) == 2 and sorted(r.name for r in regions) == sorted(val)
