"""Every experiment and config option composes, and its objects instantiate (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from unet_seg.config import CONFIG_DIR, config_dir
from unet_seg.normalization import DEFAULT_PERCENTILES
from unet_seg.training.train import (
    build_datamodule,
    build_module,
    instantiate_group,
    trainer_config,
)

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# Experiments on one's own data need its paths; the samples stand in, and name the run.
OWN_DATA = {
    "own_2d": (["data.images=${paths.data_dir}/2d/images",
                "data.labels=${paths.data_dir}/2d/labels"], "2d"),
    "own_3d": (["data.images=${paths.data_dir}/3d/image.nii.gz",
                "data.labels=${paths.data_dir}/3d/label.nii.gz", "data.val_slices=[32,48]"],
               "image"),
}  # fmt: skip


def compose_train(tmp_path: Path, *overrides: str) -> DictConfig:
    """``conf/train.yaml`` with the run paths in ``tmp_path`` (no Hydra run, so no ${hydra:})."""
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        return compose(
            "train",
            overrides=[f"paths.runs_dir={tmp_path / 'runs'}", f"output_dir={tmp_path / 'out'}",
                       *overrides],
        )  # fmt: skip


def test_the_four_experiments_exist() -> None:
    assert {"sample_2d", "sample_3d", "isbi2012", "isbi2012_fast"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_instantiates(tmp_path: Path, experiment: str) -> None:
    data, name = OWN_DATA.get(experiment, ([], experiment))
    cfg = compose_train(tmp_path, f"experiment={experiment}", *data)
    assert cfg.name == name
    assert cfg.publish_checkpoint == str(tmp_path / "runs" / name / "model.ckpt")
    module = build_module(cfg)
    # The patch must fit the model: valid mode rejects sizes whose pooled maps are odd.
    out = module.model.output_shape(list(cfg.data.patch_size))
    assert all(o > 0 for o in out)
    assert module.hparams.normalization == DEFAULT_PERCENTILES  # conf/train.yaml = the code's
    optimizers = module.configure_optimizers()
    assert optimizers is not None
    trainer = instantiate(
        trainer_config(cfg),  # resolves precision=auto, as train() does
        callbacks=instantiate_group(cfg.callbacks),
        logger=instantiate_group(cfg.logger),
    )
    assert trainer.checkpoint_callback.monitor == "val/dice"
    datamodule = build_datamodule(cfg)
    if not Path(cfg.data.images).exists():
        pytest.skip(f"data for {experiment} not found at {cfg.data.images}")
    if experiment.startswith("isbi"):
        return  # reading and weighting 30 ISBI sections takes long; test_train covers data
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape[2:] == tuple(cfg.data.patch_size)
    assert batch["image"].shape[1] == cfg.model.in_channels


@pytest.mark.parametrize(
    "override",
    ["loss=ce", "loss=dice", "loss=dice_ce", "optimizer=sgd", "optimizer=adamw",
     "scheduler=cosine", "scheduler=plateau", "trainer=cpu", "trainer=gpu", "trainer=ddp",
     "debug=fast_dev_run", "debug=overfit", "debug=limit", "debug=profiler", "logger=csv",
     "callbacks=none", "augment=none", "augment=paper"],
)  # fmt: skip
def test_options_compose(tmp_path: Path, override: str) -> None:
    cfg = compose_train(tmp_path, override)
    if override.startswith(("optimizer=", "scheduler=")):
        assert build_module(cfg).configure_optimizers() is not None
    if override.startswith("trainer="):
        assert {"devices", "num_nodes", "strategy", "precision"} <= set(cfg.trainer)
    if override == "optimizer=sgd":
        assert cfg.optimizer.momentum == 0.99


def test_paper_experiment_is_the_paper(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "experiment=isbi2012")
    assert list(cfg.model.features) == [64, 128, 256, 512, 1024] and cfg.model.padding == "valid"
    assert list(cfg.data.patch_size) == [572, 572] and cfg.data.batch_size == 1
    assert cfg.data.weight_map.w0 == 10.0 and cfg.data.weight_map.sigma == 5.0
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.99
    assert cfg.loss.ce_weight == 1.0 and cfg.loss.dice_weight == 0.0 and cfg.loss.use_weight_map
    assert build_module(cfg).model.output_shape([572, 572]) == (388, 388)
