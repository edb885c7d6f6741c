"""``unet-seg-tune``: choose a checkpoint's instance post-processing on its validation split.

The checkpoint carries its data module's settings (files, split, label map, target), so the
validation images it was selected on are found again without a config. Each whole validation
image is predicted (tiled, as ``unet-seg-predict`` does), the grid search of
:mod:`unet_seg.tuning.search` picks every method's parameters, and the result is written into
the checkpoint under ``TUNED_KEY`` as plain values (the file still loads with
``weights_only=True``). ``unet-seg-predict`` then uses them unless told otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.config import plain
from unet_seg.data.boundary import objects_of
from unet_seg.data.training_data import TrainingData
from unet_seg.errors import InputNotFoundError, UsageError
from unet_seg.inference.options import default_tile, tile_option
from unet_seg.inference.runner import ModelRunner, RunnerOptions
from unet_seg.inference.stream import predict_tiled
from unet_seg.instances.methods import METHODS, TUNED_KEY
from unet_seg.models.bioimageio_package import is_bioimageio_package
from unet_seg.models.checkpoint import network_from_checkpoint, read_checkpoint, write_checkpoint
from unet_seg.models.exported import is_exported
from unet_seg.tuning.search import check_request, tune

log = logging.getLogger(__name__)


def class_roles(target: str, object_class: int) -> dict[str, int]:
    """Which predicted class is the object, its interior and the background, for a model trained
    on ``target`` (``"classes"`` or ``"boundary"``) with objects of ``object_class``."""
    if target == "boundary":
        return {"foreground_class": 1, "background_class": 0, "interior_class": 1}
    background = 0 if object_class != 0 else 1
    return {"foreground_class": object_class, "background_class": background,
            "interior_class": object_class}  # fmt: skip


def predict_region(image: np.ndarray, model, runner: ModelRunner, tile) -> np.ndarray:
    """``(C, *spatial)`` normalised image -> ``(K, *spatial)`` probabilities (``tile``: None
    picks predict's default)."""
    volume = image[:, None] if image.ndim == 3 and model.spatial_dims == 2 else image
    tile = tile if tile is not None else default_tile(model, volume.shape[1:])  # as predict
    probs = predict_tiled(volume, model, runner, tile)
    return probs[:, 0] if volume is not image else probs


def tune_checkpoint(cfg: Any, model, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Tune ``model`` (the network of ``checkpoint``) on the checkpoint's validation split.

    ``cfg``: ``data`` (overrides of the stored data settings), ``methods``, ``objective``,
    ``tile_size``, ``device``, ``tta``, ``progress``. Returns the tuning result, with ``"tta"``:
    whether the validation images were predicted with TTA.
    """
    methods = tuple(cfg.get("methods") or METHODS)
    objective = str(cfg.get("objective", "ap"))
    check_request(methods, objective)  # before the validation images are predicted
    tile = tile_option(cfg.get("tile_size"))
    stored = checkpoint.get("datamodule_hyper_parameters")
    if not stored:
        raise UsageError(
            "the checkpoint stores no data settings; pass them, e.g. data.images=... "
            "data.labels=... data.val_names=[...]"
        )
    changes = {k: v for k, v in plain(cfg.get("data") or {}).items() if v is not None}
    data = {**stored, **changes}
    for loader_only in ("augment", "pin_memory"):
        data.pop(loader_only, None)
    hparams = checkpoint.get("hyper_parameters", {})
    object_class = int(data.get("object_class", hparams.get("region_class", 1)))
    roles = class_roles(data.get("target", "classes"), object_class)
    regions = TrainingData(**data).validation_regions()
    truths = [objects_of(r.label, object_class, r.instances) for r in regions]
    running = RunnerOptions.from_config(cfg)
    tta, runner = running.tta, running.runner(model)
    probs = [predict_region(r.image, model, runner, tile) for r in regions]
    log.info("tuning %s on %d validation images", ", ".join(methods), len(regions))
    result = tune(probs, truths, roles, methods, objective,
                  [r.spacing for r in regions], cfg.get("progress"))  # fmt: skip
    # TTA smooths the probabilities, so the thresholds that fit them differ: predict warns when
    # it runs with the other setting.
    return {**result, "tta": tta}


def store_tuning(path: str | Path, result: Mapping[str, Any], target: str | Path | None = None):
    """Write ``result`` into the checkpoint at ``path`` (atomically; to ``target`` if given)."""
    checkpoint = read_checkpoint(path)
    checkpoint[TUNED_KEY] = dict(result)
    return write_checkpoint(checkpoint, target or path)


def tune_command(cfg: Any) -> dict[str, Any]:
    """What ``unet-seg-tune`` runs: tune ``cfg.checkpoint`` and store the result in it (or in
    ``cfg.output``); returns the result.

    Raises:
        UsageError: ``cfg.checkpoint`` is an exported network, which cannot store the result.
    """
    if is_exported(cfg.checkpoint) or is_bioimageio_package(cfg.checkpoint):
        raise UsageError(
            f"{cfg.checkpoint}: tune the training checkpoint (.ckpt) it was exported from, "
            "then export again: the tuning travels with the export"
        )
    try:
        checkpoint = read_checkpoint(cfg.checkpoint)
    except FileNotFoundError as err:
        raise InputNotFoundError(str(err)) from err
    model, _ = network_from_checkpoint(checkpoint, cfg.checkpoint)
    result = tune_checkpoint(cfg, model, checkpoint)
    written = store_tuning(cfg.checkpoint, result, cfg.get("output"))
    log.info("tuned %s stored in %s", result["method"], written)
    return result
