"""``train(cfg)`` end to end on the sample data: fast_dev_run, checkpoints, publishing, resume,
a short run that must learn, and a multirun sweep through the console script."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.test_configs import compose_train
from unet_seg.training.module import SegmentationModule
from unet_seg.training.train import train, trainer_config

# Few small batches on CPU without worker processes: seconds instead of minutes.
QUICK = ["trainer.accelerator=cpu", "trainer.devices=1", "data.num_workers=0"]
# For runs that test the run's bookkeeping, not what it learns: unet_small_2d at a quarter of
# its width (the same four levels, so the same valid patch sizes), no sanity validation.
NARROW = ["model.features=[4,8,16,32]", "+trainer.num_sanity_val_steps=0"]


@pytest.fixture(autouse=True)
def _needs_samples(samples_dir: Path) -> None:
    if not (samples_dir / "2d" / "images").is_dir():
        pytest.skip("data_samples/ not generated (python -m unet_seg.data.samples)")


@pytest.mark.parametrize(
    ("experiment", "extra"),
    [
        ("sample_2d", []),
        ("sample_3d", []),
        ("sample_2d", ["trainer.precision=bf16-mixed"]),
        ("sample_2d", ["data.target=boundary"]),  # the model follows: 3 classes
    ],
)
def test_fast_dev_run(tmp_path: Path, experiment: str, extra: list[str]) -> None:
    cfg = compose_train(tmp_path, f"experiment={experiment}", "debug=fast_dev_run", *QUICK, *extra)
    metrics = train(cfg).metrics
    assert {"train/loss_step", "val/loss", "val/dice", "val/iou", "val/pixel_error",
            "val/rand_error", "val/vi", "val/ap", "val/ap50", "val/pq"} <= set(metrics)  # fmt: skip
    assert 0.0 <= metrics["val/dice"] <= 1.0 and metrics["val/loss"] > 0
    assert cfg.model.num_classes == (3 if "data.target=boundary" in extra else 2)
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["experiment"] == experiment and summary["global_step"] == 1
    assert summary["best_checkpoint"] is None  # fast_dev_run saves no checkpoint ...
    assert not (tmp_path / "runs" / experiment / "model.ckpt").exists()  # ... and publishes none
    assert (tmp_path / "out" / "config_resolved.yaml").is_file()


def test_checkpoints_publish_and_resume(tmp_path: Path) -> None:
    # One validation image (not limit_val_batches: that is a debug run, which never publishes).
    short = ["experiment=sample_2d", "augment=none", "data.samples_per_epoch=8",
             "data.val_names=[nuclei_08]", *NARROW, *QUICK]  # fmt: skip
    first = compose_train(tmp_path, *short, "trainer.max_epochs=2")
    made = train(first)
    out = tmp_path / "out"
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("epoch") for n in ckpts), ckpts
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["epochs"] == 2 and summary["global_step"] == 4
    assert summary["best_score"] == pytest.approx(summary["metrics"]["val/dice"])

    published = tmp_path / "runs" / "sample_2d" / "model.ckpt"
    assert made.published == published and made.best == Path(summary["best_checkpoint"])
    raw = torch.load(published, weights_only=True)
    assert raw["hyper_parameters"]["normalization"] == {"low": 1.0, "high": 99.8}
    module = SegmentationModule.load_from_checkpoint(
        published, map_location="cpu", weights_only=True
    )
    assert module.hparams.model["features"] == [4, 8, 16, 32]  # the run's, not the default
    assert [p.name for p in published.parent.iterdir() if p.name.startswith(".")] == []

    assert (out / "csv" / "metrics.csv").is_file()
    with Image.open(out / "curves.png") as curves:  # losses, 8 validation figures, learning rate
        assert curves.format == "PNG" and curves.size == (3 * 300, 4 * 300)
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert "val/overlay_0" in events.Tags()["images"]
    assert "val/dice" in events.Tags()["scalars"]

    resumed = compose_train(
        tmp_path, *short, "trainer.max_epochs=3", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
        f"output_dir={tmp_path / 'resumed'}",
    )  # fmt: skip
    train(resumed)
    resumed_summary = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert resumed_summary["epochs"] == 3 and resumed_summary["global_step"] == 6  # continued
    # The best score survives the resume: one more epoch can only keep or beat it.
    assert resumed_summary["best_score"] >= summary["best_score"]
    assert Path(resumed_summary["best_checkpoint"]).parent == tmp_path / "resumed" / "checkpoints"
    assert (out / "checkpoints" / Path(summary["best_checkpoint"]).name).is_file()  # untouched
    score = torch.load(published, weights_only=True)["publication"]["score"]
    assert score == pytest.approx(resumed_summary["best_score"])


def test_debug_run_does_not_publish(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "experiment=sample_2d", "debug=limit", "trainer.max_epochs=1",
                        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                        "validate_best=false", "logger=csv", "callbacks.overlays=null",
                        *NARROW, *QUICK)  # fmt: skip
    made = train(cfg)
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["best_checkpoint"] is not None  # it did save one ...
    assert not (tmp_path / "runs" / "sample_2d" / "model.ckpt").exists()  # ... and kept it home
    assert made.best == Path(summary["best_checkpoint"]) and made.published is None


@pytest.mark.slow
def test_short_run_learns_the_sample(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path, "experiment=sample_2d", "trainer.max_epochs=3", "data.samples_per_epoch=32",
        *QUICK,
    )  # fmt: skip
    metrics = train(cfg).metrics
    assert metrics["val/dice"] >= 0.8, metrics  # held-out images nuclei_08 and nuclei_09


@pytest.mark.slow
def test_multirun_sweep_from_the_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "unet-seg-train"
    command = [str(script), "-m", "experiment=sample_2d", "debug=fast_dev_run", "loss=ce,dice_ce",
               f"paths.runs_dir={tmp_path / 'runs'}", "data.num_workers=0"]  # fmt: skip
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweeps = list((tmp_path / "runs" / "sample_2d").glob("multirun_*"))
    assert len(sweeps) == 1
    jobs = sorted(p.parent.name for p in sweeps[0].glob("*/metrics.json"))
    assert jobs == ["0", "1"]
    dice_weights = [
        OmegaConf.load(sweeps[0] / j / "config_resolved.yaml").loss.dice_weight for j in jobs
    ]
    assert dice_weights == [0.0, 1.0]  # loss=ce, then loss=dice_ce
    assert not (tmp_path / "runs" / "sample_2d" / "model.ckpt").exists()  # jobs don't overwrite


def test_ddp_config_drops_sync_batchnorm_without_cuda(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_train(tmp_path, "experiment=sample_2d", "trainer=ddp")
    assert cfg.trainer.sync_batchnorm and cfg.trainer.strategy == "ddp"
    options = trainer_config(cfg)
    assert options.sync_batchnorm is False and options.accelerator == "auto"
    assert cfg.trainer.sync_batchnorm  # the composed config itself is left alone


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path: Path) -> None:
    # The multi-node path on a CPU machine: Lightning relaunches the CLI once per process (gloo).
    command = [sys.executable, "-m", "unet_seg.cli.train", "experiment=sample_2d", "trainer=ddp",
               "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
               "+trainer.limit_val_batches=1", "data.num_workers=0", "logger=csv",
               "callbacks.overlays=null", f"paths.runs_dir={tmp_path / 'runs'}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "distributed_backend=gloo" in output
    assert "Starting with 2 processes" in output
    runs = list((tmp_path / "runs" / "sample_2d").glob("*/metrics.json"))
    assert len(runs) == 1
    summary = json.loads(runs[0].read_text())
    assert summary["global_step"] == 2 and summary["best_checkpoint"]


def test_only_lightnings_healthy_run_noise_is_silenced(caplog) -> None:
    from pytorch_lightning.utilities import rank_zero_warn

    from unet_seg.training.train import lightning_noise_silenced

    connector = logging.getLogger("pytorch_lightning.trainer.connectors.checkpoint_connector")
    with pytest.warns(UserWarning, match="something real") as caught, lightning_noise_silenced():
        rank_zero_warn('.fit(ckpt_path="last") is set, but there is no last checkpoint available.')
        rank_zero_warn("`.fit(ckpt_path=None)` was called without a model.")
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", UserWarning, stacklevel=1)
        warnings.warn("something real", UserWarning, stacklevel=1)
        with caplog.at_level(logging.INFO, logger=connector.name):
            connector.info("`weights_only` was not set, defaulting to `False`.")  # Ctrl-C's save
            connector.info("a real note")
    assert [str(w.message) for w in caught] == ["something real"]
    assert [r.getMessage() for r in caplog.records] == ["a real note"]
    assert connector.filters == []  # nothing silenced after the run


def test_enable_progress_bar_false_drops_the_configured_bar() -> None:
    from omegaconf import OmegaConf

    from unet_seg.training.train import training_callbacks

    group = OmegaConf.create({
        "bar": {"_target_": "pytorch_lightning.callbacks.TQDMProgressBar"},
        "lr": {"_target_": "pytorch_lightning.callbacks.LearningRateMonitor"},
    })  # fmt: skip
    kinds = [
        [type(c).__name__ for c in training_callbacks(group, OmegaConf.create(trainer))]
        for trainer in ({}, {"enable_progress_bar": True}, {"enable_progress_bar": False})
    ]
    assert kinds[0] == kinds[1] == ["TQDMProgressBar", "LearningRateMonitor"]
    assert kinds[2] == ["LearningRateMonitor"]
