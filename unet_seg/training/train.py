"""``train(cfg)``: one training run from a composed Hydra config, apart from the CLI wrapper so
tests call it directly.

The run writes into ``cfg.output_dir`` (the Hydra run directory): the resolved config,
``checkpoints/`` (best by ``val/dice`` and ``last.ckpt``, from ``conf/callbacks``), CSV and
TensorBoard logs, ``curves.png`` (losses and validation figures per epoch, from the CSV log) and
``metrics.json``. On completion the best checkpoint is written atomically to
``cfg.publish_checkpoint`` (``${paths.runs_dir}/<experiment>/model.ckpt``, predict's default) when
it beats the model published there, and never from a debug run (``unet_seg.training.publish``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import OnExceptionCheckpoint, ProgressBar
from pytorch_lightning.loggers import CSVLogger

from unet_seg.config import plain, whole
from unet_seg.errors import UsageError
from unet_seg.io.atomic import write_json_atomic
from unet_seg.models.checkpoint import read_checkpoint
from unet_seg.training.folds import (
    fold_spec,
    fold_target,
    format_table,
    summarize_folds,
    write_split,
)
from unet_seg.training.module import SegmentationModule
from unet_seg.training.planned_device import warn_if_planned_elsewhere
from unet_seg.training.precision import AUTO, resolve_training_precision
from unet_seg.training.publish import debug_reason, publish_if_better
from unet_seg.viz.curves import write_curves

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a config group such as ``callbacks``."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


def training_callbacks(group: DictConfig | None, trainer_cfg: DictConfig) -> list[Any]:
    """The callbacks of ``group``, without the progress bar where ``trainer.enable_progress_bar``
    is false (Lightning refuses a bar it was told not to show: cluster logs ask for none)."""
    callbacks = instantiate_group(group)
    if trainer_cfg.get("enable_progress_bar", True) is False:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def follow_the_data(cfg: DictConfig, datamodule: Any) -> None:
    """Set ``cfg.model.in_channels`` and ``num_classes`` to the data's (what the data module
    reports: channels of the images, classes of the labels), since a network of other sizes could
    not train on them; logged when it changes the config."""
    for key in ("in_channels", "num_classes"):
        value = getattr(datamodule, key, None)
        if value is not None and cfg.model.get(key) != int(value):
            log.info("model.%s=%s follows the data: %d", key, cfg.model.get(key), value)
            cfg.model[key] = int(value)


def check_window_sizes(model: Any, datamodule: Any) -> None:
    """``UsageError`` naming ``data.patch_size`` or ``data.val_size`` where the network cannot
    take that window (before training starts, not in Lightning's sanity check)."""
    for key in ("patch_size", "val_size"):
        size = getattr(datamodule, key, None)
        if size is None:
            continue
        try:
            model.output_shape(size)
        except ValueError as err:
            raise UsageError(f"data.{key} {list(size)} does not suit the network: {err}") from err


def build_module(cfg: DictConfig) -> SegmentationModule:
    """The LightningModule of ``cfg.model``, ``.loss``, ``.optimizer`` and ``.scheduler``."""
    return SegmentationModule(
        model=plain(cfg.model),
        loss=plain(cfg.loss) if cfg.get("loss") else None,
        optimizer=instantiate(cfg.optimizer) if cfg.get("optimizer") else None,
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        normalization=plain(cfg.get("normalization")),
        region_class=cfg.get("region_class", 1),
        scheduler_monitor=cfg.get("scheduler_monitor", "val/loss"),
    )


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The data module of ``cfg.data``, given the augmenter built from ``cfg.augment``."""
    augment = instantiate(cfg.augment) if cfg.get("augment") else None
    # Folds replace the data config's split, and are stored with its settings in checkpoints.
    spec = fold_spec(cfg)
    folds = {} if spec is None else {"cv": spec.record()}
    # Plain containers: the data module's hparams go into checkpoints, which must load with
    # weights_only=True, and Lightning compares them with the module's (normalization).
    return instantiate(cfg.data, augment=augment, _convert_="all", **folds)


def write_training_curves(trainer: pl.Trainer, output_dir: Path, title: str) -> Path | None:
    """``curves.png`` from the run's CSV log (none without a CSV logger, e.g. ``fast_dev_run``);
    a figure that cannot be drawn is logged, never fatal to the run."""
    for logger in trainer.loggers:
        csv_log = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if csv_log is not None and csv_log.is_file():
            try:
                return write_curves(csv_log, output_dir / "curves.png", title)
            except ValueError as err:
                log.warning("no curves.png: %s", err)
    return None


# Trainer options Lightning takes as whole numbers (-1: unlimited where it allows it); it checks
# some only deep inside fit, with a bare AssertionError.
TRAINER_INTEGERS = {"max_epochs": -1, "min_epochs": 0, "max_steps": -1, "min_steps": 0,
                    "num_nodes": 1, "accumulate_grad_batches": 1, "log_every_n_steps": 0,
                    "check_val_every_n_epoch": 1, "num_sanity_val_steps": -1}  # fmt: skip


def check_trainer_numbers(trainer_cfg: DictConfig) -> None:
    """``UsageError`` naming ``trainer.<key>`` where one of :data:`TRAINER_INTEGERS` is not a
    whole number at or above its least value (None leaves Lightning's default); ``"5"`` and
    ``5.0`` become ``5``."""
    for key, least in TRAINER_INTEGERS.items():
        value = trainer_cfg.get(key)
        if value is None:
            continue
        trainer_cfg[key] = whole(f"trainer.{key}", value, least)  # Lightning takes ints only


def trainer_config(cfg: DictConfig) -> DictConfig:
    """``cfg.trainer``, with synchronised batch norm turned off where there is no CUDA (it needs
    CUDA, and ``trainer=ddp`` on CPU processes (gloo) would fail with it) and ``precision=auto``
    resolved (:mod:`unet_seg.training.precision`)."""
    trainer_cfg = cfg.trainer.copy()
    check_trainer_numbers(trainer_cfg)
    if trainer_cfg.get("sync_batchnorm") and not torch.cuda.is_available():
        log.warning("no CUDA device: training without synchronised batch norm")
        trainer_cfg.sync_batchnorm = False
    if trainer_cfg.get("precision") == AUTO:
        devices = trainer_cfg.get("devices")
        nodes = int(trainer_cfg.get("num_nodes") or 1)
        processes = (devices if isinstance(devices, int) else 1) * nodes
        trainer_cfg.precision = resolve_training_precision(
            AUTO, trainer_cfg.get("accelerator"), processes
        )
    return trainer_cfg


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextlib.contextmanager
def lightning_noise_silenced() -> Iterator[None]:
    """Silence the warnings Lightning prints on every healthy run, and only those."""
    with warnings.catch_warnings():
        # With an OnExceptionCheckpoint, Lightning reads a fresh run's ckpt_path=None as "last"
        # and warns twice that no last checkpoint exists.
        warnings.filterwarnings("ignore", message=r".*ckpt_path=(None|\"last\")")
        # Lightning's own use of a torch pytree API that torch 2.13 deprecates.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        # The interrupted.ckpt of Ctrl-C is a full checkpoint (for ckpt_path=) by design.
        connector = logging.getLogger("pytorch_lightning.trainer.connectors.checkpoint_connector")
        connector.addFilter(_quiet_full_checkpoint)
        try:
            yield
        finally:
            connector.removeFilter(_quiet_full_checkpoint)


def _quiet_full_checkpoint(record: logging.LogRecord) -> bool:
    """False for Lightning's note that a checkpoint it saves holds more than the weights."""
    return not record.getMessage().startswith("`weights_only` was not set")


def fit_interruptible(
    trainer: pl.Trainer, module: Any, datamodule: Any, ckpt_path: str | None
) -> None:
    """``trainer.fit``, with Ctrl-C and SIGTERM turned into ``KeyboardInterrupt``.

    Lightning stops an interrupted fit with ``SystemExit``: ``SIGTERMException`` (whose code is
    0, so a killed run would exit as if it had succeeded) or ``sys.exit(1)`` after Ctrl-C. Both
    mark the trainer interrupted; re-raised as ``KeyboardInterrupt``, the CLI exits 130 and
    nothing is published. The state at the interruption is kept by the ``on_interrupt``
    callback (``checkpoints/interrupted.ckpt``) for ``ckpt_path=``.
    """
    try:
        with lightning_noise_silenced():
            # weights_only=True explicitly: the default yields to
            # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        if not trainer.interrupted:
            raise
        for callback in trainer.callbacks:  # where the config put it, not a second copy
            if isinstance(callback, OnExceptionCheckpoint) and Path(callback.ckpt_path).is_file():
                log.warning("interrupted: resume with ckpt_path=%s", callback.ckpt_path)
        raise KeyboardInterrupt from None


# ckpt_path values Lightning resolves itself rather than as a file.
LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")


def check_resumable(ckpt_path: str) -> None:
    """``ckpt_path`` loads safely as a Lightning training checkpoint, checked before any work:
    ``FileNotFoundError`` / ``ValueError`` naming the file otherwise (a truncated or foreign
    file, never PyTorch's advice to turn the safe loader off)."""
    if str(ckpt_path) in LIGHTNING_CKPT_KEYWORDS or str(ckpt_path).startswith("registry:"):
        return
    content = read_checkpoint(ckpt_path)
    if "state_dict" not in content or "epoch" not in content:
        raise ValueError(
            f"{ckpt_path}: not a training checkpoint to resume from (no state_dict and epoch); "
            "pass a .ckpt that unet-seg-train wrote, e.g. <run>/checkpoints/last.ckpt"
        )


@dataclass(frozen=True)
class TrainingRun:
    """What :func:`train` made: ``metrics`` as plain floats (``"val/dice"``, ``"val/loss"``,
    ...; those of the best checkpoint when there is one), the ``best`` checkpoint of the run
    (None without one), and ``published``: where this run published it (None when it did not:
    a debug run, a sweep, or a model already there that scored better)."""

    metrics: dict[str, float]
    best: Path | None = None
    published: Path | None = None


def train(cfg: DictConfig) -> TrainingRun:
    """Fit, validate the best checkpoint, write ``metrics.json``, publish the best checkpoint;
    returns what it made (:class:`TrainingRun`), so callers need not read it back from disk."""
    if cfg.get("ckpt_path"):
        check_resumable(cfg.ckpt_path)  # before any work, naming the file
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    spec = fold_spec(cfg)
    if spec is not None:
        log.info("fold %d of %d: split written to %s", spec.fold, spec.folds,
                 write_split(datamodule.data, spec, output_dir))  # fmt: skip
    follow_the_data(cfg, datamodule)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)
    module = build_module(cfg)
    check_window_sizes(module.model, datamodule)
    loggers = instantiate_group(cfg.get("logger"))
    trainer_cfg = trainer_config(cfg)
    trainer: pl.Trainer = instantiate(
        trainer_cfg,
        callbacks=training_callbacks(cfg.get("callbacks"), trainer_cfg),
        logger=loggers or False,
    )
    if trainer.is_global_zero:
        warn_if_planned_elsewhere(plain(cfg.get("planned_for")), trainer.strategy.root_device)
    fit_interruptible(trainer, module, datamodule, cfg.get("ckpt_path"))
    if trainer.is_global_zero:
        # Before validating the best checkpoint, whose figures would log as one more epoch.
        write_training_curves(trainer, output_dir, str(cfg.get("name") or ""))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if best and cfg.get("validate_best", True):
        # The last epoch's figures are not the best's; report those of the published model.
        with lightning_noise_silenced():
            results = trainer.validate(
                module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
            )
        metrics.update({k: float(v) for k, v in results[0].items()})

    published = None
    if trainer.is_global_zero:
        summary = {
            "experiment": cfg.get("name"),
            "best_checkpoint": best or None,
            "best_score": float(checkpoint.best_model_score)
            if checkpoint is not None and checkpoint.best_model_score is not None
            else None,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "metrics": metrics,
        }
        path = write_json_atomic(output_dir / "metrics.json", summary)
        log.info("metrics written to %s", path)
        target = cfg.get("publish_checkpoint")
        if target and spec is not None:
            target = fold_target(target, spec)  # each fold its own, so a sweep publishes too
        debug = debug_reason(trainer)
        if best and target and debug:
            log.info("debug run (%s): not publishing %s to %s", debug, best, target)
        elif best and target and is_multirun() and spec is None:
            # Jobs of a sweep would overwrite each other's model; each keeps its own in its run dir.
            log.info("multirun: not publishing %s to %s", best, target)
        elif best and target:
            if publish_if_better(
                best, summary["best_score"], target, checkpoint.monitor, checkpoint.mode
            ):
                published = Path(target)
                if spec is not None:  # the published fold's figures, for the summary
                    write_json_atomic(published.parent / "metrics.json", summary)
                    table = format_table(summarize_folds(published.parent.parent))
                    log.info("folds of %s:\n%s", published.parent.parent, table)
    return TrainingRun(metrics, Path(best) if best else None, published)
