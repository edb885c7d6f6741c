"""The experiment file: readable (a comment per value), composed by Hydra from --config-dir, and
it trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.planning.conftest import fingerprint, object_grid, write_dataset
from unet_seg.config import config_dir
from unet_seg.planning.experiment_file import experiment_yaml, write_experiment
from unet_seg.planning.fingerprint import fingerprint_data
from unet_seg.planning.machine import Budget, Machine
from unet_seg.planning.plan import make_plan

CPU = Machine("cpu", 2**30, 5e9, 2)


def compose_planned(plans: Path, name: str, tmp_path: Path, *overrides: str):
    """``conf/train.yaml`` with ``experiment=name`` found in ``plans`` (as ``--config-dir``)."""
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        overrides = (f"hydra.searchpath=[file://{plans}]", f"experiment={name}",
                     f"paths.runs_dir={tmp_path / 'runs'}", f"output_dir={tmp_path / 'out'}",
                     *overrides)  # fmt: skip
        return compose("train", overrides=list(overrides))


def test_every_value_carries_its_reason():
    plan = make_plan(fingerprint(), CPU, Budget(seconds=900))
    text = experiment_yaml(plan, "cells", "/plans/cells.fingerprint.json")
    assert text.startswith("# @package _global_\n")
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    values = [line for line in body if line.startswith("  ") and not line.startswith("  - ")]
    assert values and all("  # " in line for line in values)
    assert "  patch_size: " in text and "# patch: " in text
    parsed = yaml.safe_load(text)
    assert parsed["data"]["patch_size"] == plan.settings()["data.patch_size"]
    assert parsed["model"]["features"] == plan.settings()["model.features"]
    assert {"override /data": "folder"} in parsed["defaults"]


def test_the_written_file_composes_with_hydra(tmp_path):
    images, labels = write_dataset(tmp_path / "cells", [object_grid((64, 96), (10, 12), 0)] * 3,
                                   (0.5, 0.5))  # fmt: skip
    plan = make_plan(fingerprint_data(str(images), str(labels)), CPU, Budget(seconds=900))
    write_experiment(plan, tmp_path / "plans", "cells")
    cfg = compose_planned(tmp_path / "plans", "cells", tmp_path)
    settings = plan.settings()
    assert cfg.name == "cells" and cfg.data.images == str(images)
    assert list(cfg.data.patch_size) == settings["data.patch_size"]
    assert list(cfg.model.features) == settings["model.features"]
    assert cfg.data.target == "boundary" and cfg.data.label_map == "objects"
    assert cfg.trainer.max_time == "00:00:15:00" and cfg.trainer.max_epochs == -1
    assert cfg.scheduler._target_.endswith("TimeCosineLR") and cfg.scheduler.seconds == 900
    assert cfg.callbacks.early_stopping is None and cfg.callbacks.on_interrupt is not None
    assert cfg.data._target_ == "unet_seg.data.datamodule.SegmentationDataModule"


@pytest.mark.slow  # Lightning starts and trains one step: several seconds
def test_the_written_file_trains(tmp_path):
    from unet_seg.training.train import train

    images, labels = write_dataset(tmp_path / "cells", [object_grid((64, 96), (10, 12), 0)] * 3,
                                   (0.5, 0.5))  # fmt: skip
    plan = make_plan(fingerprint_data(str(images), str(labels)), CPU, Budget(seconds=900))
    write_experiment(plan, tmp_path / "plans", "cells")
    cfg = compose_planned(tmp_path / "plans", "cells", tmp_path, "debug=fast_dev_run",
                          "trainer.enable_progress_bar=false", "data.num_workers=0")  # fmt: skip
    made = train(cfg)
    assert 0.0 <= made.metrics["val/dice"] <= 1.0
    assert cfg.model.num_classes == 3  # background, interior, boundary: the boundary target
