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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.config import plain
from unet_seg.data.boundary import objects_of
from unet_seg.data.labels import OBJECTS
from unet_seg.data.training_data import TrainingData
from unet_seg.errors import InputNotFoundError, UsageError
from unet_seg.inference.options import default_tile, tile_option
from unet_seg.inference.runner import ModelRunner, RunnerOptions
from unet_seg.inference.stream import predict_tiled
from unet_seg.instances.methods import METHODS, TUNED_KEY
from unet_seg.models.bioimageio_package import is_bioimageio_package
from unet_seg.models.checkpoint import network_from_checkpoint, read_checkpoint, write_checkpoint
from unet_seg.models.ensemble import resolve_checkpoints
from unet_seg.models.exported import is_exported
from unet_seg.tuning.memory import case_of, check_tune_memory, compact_ids, kept_bytes
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


def validation_predictions(
    cfg: Any, model, checkpoint: Mapping[str, Any], held: int = 0
) -> dict[str, Any]:
    """``model``'s probabilities on ``checkpoint``'s validation split, what :func:`tune` searches
    on: ``probs`` ``(K, *spatial)`` float32, ``truths`` (object ids, int32) and ``spacings`` per
    image, the class ``roles``, ``tta`` and ``kept`` (the bytes the split holds for the search).
    ``cfg`` as for :func:`tune_checkpoint`; ``held``: bytes other folds' cases already hold.

    Raises:
        ValueError: the split would not fit in memory (:func:`check_tune_memory`), before any
            of its files is read.
    """
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
    training_data = TrainingData(**data)
    pairs = training_data.split()[1]
    with_instances = data.get("instances") is not None or data.get("label_map") == OBJECTS
    cases = [case_of(image, label, with_instances) for image, label in pairs]
    check_tune_memory(cases, training_data.num_classes, held=held)  # before any file is read
    regions = training_data.regions(pairs, "val", derive=False)
    running = RunnerOptions.from_config(cfg)
    runner = running.runner(model)
    found: dict[str, Any] = {"probs": [], "truths": [], "spacings": []}
    while regions:  # each region's image and labels are let go once it is predicted
        region = regions.pop(0)
        found["probs"].append(predict_region(region.image, model, runner, tile))
        ids = objects_of(region.label, object_class, region.instances)
        found["truths"].append(compact_ids(ids))
        found["spacings"].append(region.spacing)
        del region, ids
    return {
        **found,
        "kept": sum(kept_bytes(case, training_data.num_classes) for case in cases),
        "roles": class_roles(data.get("target", "classes"), object_class),
        "tta": running.tta,
    }


def tune_checkpoint(cfg: Any, model, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Tune ``model`` (the network of ``checkpoint``) on the checkpoint's validation split.

    ``cfg``: ``data`` (overrides of the stored data settings), ``methods``, ``objective``,
    ``tile_size``, ``device``, ``tta``, ``progress``. Returns the tuning result, with ``"tta"``:
    whether the validation images were predicted with TTA.
    """
    methods = tuple(cfg.get("methods") or METHODS)
    objective = str(cfg.get("objective", "ap"))
    check_request(methods, objective)  # before the validation images are predicted
    tile_option(cfg.get("tile_size"))
    found = validation_predictions(cfg, model, checkpoint)
    log.info("tuning %s on %d validation images", ", ".join(methods), len(found["probs"]))
    result = tune(found["probs"], found["truths"], found["roles"], methods, objective,
                  found["spacings"], cfg.get("progress"))  # fmt: skip
    # TTA smooths the probabilities, so the thresholds that fit them differ: predict warns when
    # it runs with the other setting.
    return {**result, "tta": found["tta"]}


def store_tuning(path: str | Path, result: Mapping[str, Any], target: str | Path | None = None):
    """Write ``result`` into the checkpoint at ``path`` (atomically; to ``target`` if given)."""
    checkpoint = read_checkpoint(path)
    checkpoint[TUNED_KEY] = dict(result)
    return write_checkpoint(checkpoint, target or path)


def check_folds(paths: Sequence[Path], checkpoints: Sequence[Mapping[str, Any]]) -> None:
    """``UsageError`` unless ``checkpoints`` (read from ``paths``) are distinct folds of one
    cross-validation, whose validation cases are then disjoint."""
    seen: dict[int, Path] = {}
    first = None
    for path, checkpoint in zip(paths, checkpoints, strict=True):
        cv = (checkpoint.get("datamodule_hyper_parameters") or {}).get("cv")
        if not cv:
            raise UsageError(f"{path}: trained without cv.folds, so it has no out-of-fold cases; "
                             "tune each checkpoint on its own instead")  # fmt: skip
        settings = {k: v for k, v in cv.items() if k != "fold"}
        if first is not None and settings != first[1]:
            raise UsageError(f"{first[0]} and {path}: other fold settings ({first[1]} vs "
                             f"{settings}), so their validation cases may overlap")  # fmt: skip
        if cv["fold"] in seen:
            raise UsageError(f"{seen[cv['fold']]} and {path} are both fold {cv['fold']}")
        seen[cv["fold"]] = path
        first = first or (path, settings)


def tune_folds(cfg: Any, paths: Sequence[Path]) -> dict[str, Any]:
    """Tune the ensemble of fold checkpoints ``paths`` on out-of-fold predictions: each fold's
    validation cases predicted by that fold's network, pooled into one search, whose result is
    stored in every checkpoint (so the ensemble, whose members then agree, uses it).

    Raises:
        UsageError: ``cfg.output`` set, a checkpoint trained without folds, two checkpoints of
            one fold or of other fold settings, or members with other class roles.
    """
    methods = tuple(cfg.get("methods") or METHODS)
    objective = str(cfg.get("objective", "ap"))
    check_request(methods, objective)  # before any image is predicted
    if cfg.get("output"):
        raise UsageError("output= names one file; an ensemble's tuning is written into each of "
                         "its checkpoints: leave output=null")  # fmt: skip
    checkpoints = [read_checkpoint(path) for path in paths]
    check_folds(paths, checkpoints)  # before any image is predicted
    pooled: dict[str, list] = {"probs": [], "truths": [], "spacings": []}
    first, held = None, 0
    for path, checkpoint in zip(paths, checkpoints, strict=True):
        model, _ = network_from_checkpoint(checkpoint, path)
        found = validation_predictions(cfg, model, checkpoint, held)
        held += found["kept"]
        if first is not None and found["roles"] != first[1]:
            raise UsageError(f"{first[0]} and {path}: other classes for objects, interiors and "
                             "background (data.target or object_class differ)")  # fmt: skip
        first = first or (path, found["roles"], found["tta"])
        for key in pooled:
            pooled[key] += found[key]
    log.info("tuning %s on %d out-of-fold images of %d folds", ", ".join(methods),
             len(pooled["probs"]), len(paths))  # fmt: skip
    result = tune(pooled["probs"], pooled["truths"], first[1], methods, objective,
                  pooled["spacings"], cfg.get("progress"))  # fmt: skip
    result = {**result, "tta": first[2]}
    for path in paths:
        store_tuning(path, result)
    return result


def tune_command(cfg: Any) -> dict[str, Any]:
    """What ``unet-seg-tune`` runs: tune ``cfg.checkpoint`` and store the result in it (or in
    ``cfg.output``); returns the result. Several checkpoints (a list, or a model folder of
    ``fold_*/model.ckpt``) are tuned together on out-of-fold predictions (:func:`tune_folds`).

    Raises:
        UsageError: ``cfg.checkpoint`` is an exported network, which cannot store the result.
    """
    paths = resolve_checkpoints(cfg.checkpoint)
    if len(paths) > 1:
        return tune_folds(cfg, paths)
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
