"""The planning rules besides the network's (:mod:`unet_seg.planning.network`), each a small
function from fingerprint facts to a :class:`Decision`:

- normalisation: in :mod:`unet_seg.planning.intensity`;
- classes: object ids are class 1; class values not ``0 .. n-1`` are mapped in order;
- target: ``boundary`` where at least :data:`TOUCHING` of the objects touch another, else
  ``classes``; loss Dice + CE; foreground-centred patches where a class is rarer than
  :data:`RARE`;
- schedule: Adam; for a time budget, cosine annealing over the budget's seconds
  (:class:`~unet_seg.training.time_schedule.TimeCosineLR`) and ``trainer.max_time`` the budget,
  so the run trains until the budget is spent however fast the machine is, in epochs of
  1/:data:`EPOCHS` of the steps the throughput estimate says fit (validation points); for an
  epoch budget, cosine annealing over those epochs;
- validation: the last 20 % of the files, or of the slices of a single stack; a single 2D image
  cannot be split and is refused;
- schedule: validation :data:`VALIDATIONS` times per run, not every epoch;
- inference tile: the smallest valid window whose output covers the median image, cut until its
  forward pass fits the memory; it is also the validation window (``data.val_size``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from unet_seg.errors import UsageError
from unet_seg.models.shapes import size_rule, smallest_valid_size
from unet_seg.planning.cost import network_cost
from unet_seg.planning.fingerprint import Fingerprint
from unet_seg.planning.machine import Budget, Machine
from unet_seg.planning.network import shrink_once
from unet_seg.planning.statistics import OBJECTS

TOUCHING = 0.05  # share of objects touching another from which a boundary class pays off
RARE = 0.05  # a class below this share of voxels is missed by most random patches
EPOCHS = 50  # epochs a time budget is cut into: the cosine schedule's steps, validation points
VALIDATIONS = 10  # validation checks in a run: enough to pick the best, not a cost per epoch
MIN_SAMPLES = 8  # samples per epoch at the least, so that an epoch is not a single step
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Decision:
    """One choice: ``value`` (shown), ``settings`` (dotted config keys it sets), ``reason``."""

    name: str
    value: Any
    reason: str
    settings: dict[str, Any] = field(default_factory=dict)


def classes(fp: Fingerprint) -> Decision:
    """What the stored label values mean: ``data.label_map`` and ``data.num_classes``."""
    values, given = fp.labels["values"], fp.source.get("label_map")
    if "root" in fp.source:  # the nnU-Net data module takes both from dataset.json
        n = int(fp.source["num_classes"])
        return Decision("classes", n, f"dataset.json lists {n} labels")
    if fp.labels["kind"] == OBJECTS:
        return Decision(
            "classes",
            2,
            f"{fp.labels.get('kind_reason', 'object ids')}: every id is class 1",
            {"data.label_map": OBJECTS, "data.num_classes": 2},
        )
    if len(values) < 2:
        raise UsageError(
            f"{fp.source.get('labels')}: every label voxel is {values}: nothing to segment"
        )
    n = len(values)
    if isinstance(given, Mapping):
        return Decision(
            "classes",
            n,
            f"data.label_map gives {n} classes",
            {"data.label_map": dict(given), "data.num_classes": n},
        )
    if values == list(range(n)):
        return Decision(
            "classes", n, f"label values {values}: classes 0..{n - 1}", {"data.num_classes": n}
        )
    mapping = {v: i for i, v in enumerate(values)}
    return Decision(
        "classes",
        n,
        f"stored values {values} are not 0..{n - 1}: mapped in order",
        {"data.label_map": mapping, "data.num_classes": n},
    )


def target(fp: Fingerprint) -> Decision:
    touching = fp.objects.get("touching_fraction")
    label_map: dict[str, Any] = {}
    if touching is not None and touching >= TOUCHING:
        return Decision(
            "target",
            "boundary",
            f"{touching:.0%} of {fp.objects['count']} objects touch another (>= "
            f"{TOUCHING:.0%}): a boundary class keeps them apart",
            {
                **label_map,
                "data.target": "boundary",
                "data.boundary_width": 2.0,
                "data.weight_map": {"w0": 10.0, "sigma": 5.0},
                "tune_instances": "ap",
            },
        )
    why = (
        "the labels are classes: touching is not measurable"
        if touching is None
        else f"{touching:.0%} of the objects touch another (< {TOUCHING:.0%})"
    )
    return Decision("target", "classes", why, {**label_map, "data.target": "classes"})


def loss(fp: Fingerprint) -> Decision:
    fractions = {k: v for k, v in fp.labels["class_fraction"].items() if k != "0"}
    rarest = min(fractions.values()) if fractions else 0.0
    prob = 0.5 if rarest < RARE else 0.0
    why = f"the rarest class covers {rarest:.1%} of the voxels" + (
        f" (< {RARE:.0%}): half the patches centred on foreground" if prob else ""
    )
    return Decision(
        "loss",
        "dice_ce",
        f"{why}; the Dice term keeps small classes in view",
        {"data.foreground_prob": prob},
    )


def schedule(net_steps: int | None, batch: int, budget: Budget, norm: str) -> Decision:
    lr = 0.003 if norm == "batch" else 0.001
    if budget.epochs is not None:
        epochs, samples = budget.epochs, max(MIN_SAMPLES, 16 * batch)
        why = f"{epochs} epochs as given; cosine annealing over them"
        max_time = None
        settings = {"trainer.max_epochs": epochs}
        value = f"adam lr {lr}, cosine, {epochs} epochs"
    else:
        epochs = EPOCHS  # at the estimated speed: the validation points
        samples = max(MIN_SAMPLES, batch * math.ceil((net_steps or 0) / EPOCHS))
        seconds = int(budget.seconds)
        days, rest = divmod(seconds, 86400)
        max_time = f"{days:02d}:{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
        why = (
            f"~{net_steps} steps estimated to fit {budget.describe()}: epochs of {samples} "
            f"samples; cosine annealing over the {seconds} s themselves and stopped at "
            f"{max_time} (no early stopping), so a faster or slower machine still trains for the "
            "whole budget"
        )
        # max_epochs -1 and no early stopping: only max_time ends the run (validation comes
        # every few epochs, whose length the estimate sets, so a patience counted in
        # validations would stop a fast machine's run before its rate has annealed)
        settings = {"trainer.max_epochs": -1, "scheduler.seconds": seconds,
                    "callbacks.early_stopping": None}  # fmt: skip
        value = f"adam lr {lr}, cosine over {seconds} s"
    return Decision(
        "schedule",
        value,
        f"{why}; lr {lr}" + (" (batch norm tolerates a high rate)" if norm == "batch" else ""),
        {
            "optimizer.lr": lr,
            **settings,
            "trainer.check_val_every_n_epoch": max(1, epochs // VALIDATIONS),
            "trainer.max_time": max_time,
            "data.samples_per_epoch": samples,
        },
    )


def validation(fp: Fingerprint) -> Decision:
    if fp.cases > 1:
        n = math.ceil(VAL_FRACTION * fp.cases)
        return Decision(
            "validation",
            f"last {n} of {fp.cases} files",
            f"{fp.cases} cases: {VAL_FRACTION:.0%} held out",
            {"data.val_fraction": VAL_FRACTION},
        )
    if fp.spatial_dims == 3:
        z = fp.shapes[0][0]
        start = max(1, int(z * (1 - VAL_FRACTION)))
        return Decision(
            "validation",
            f"slices {start}-{z}",
            f"one stack of {z} slices: its last {VAL_FRACTION:.0%} held out",
            {"data.val_slices": [start, z]},
        )
    source = fp.source.get("images") or fp.source.get("root")
    raise UsageError(
        f"{source}: a single 2D image cannot be split for validation; add "
        "data.val_images/data.val_labels or a second image"
    )


def inference_tile(
    patch, features, pooled, fp: Fingerprint, num_classes: int, machine: Machine
) -> Decision:
    """The window for validation and prediction: the smallest valid one whose output covers the
    median image, cut (never below the patch) until its forward pass fits the memory."""
    depth, dims = len(features), len(patch)
    tile = tuple(
        max(
            size,
            smallest_valid_size(int(extent) + size_rule(depth, "valid", p)[2], depth, "valid", p),
        )
        for size, p, extent in zip(patch, pooled, fp.median_shape[-dims:], strict=True)
    )
    whole = tile
    spacing = fp.median_spacing[-dims:]
    while (
        network_cost(tile, features, fp.channels, num_classes, "batch", pooled).inference_bytes()
        > machine.memory_bytes
    ):
        smaller = shrink_once(tile, spacing, depth, pooled, floor=patch)
        if smaller is None:
            break
        tile = smaller
    why = "covers the median image" if tile == whole else f"cut from {list(whole)} to fit memory"
    return Decision(
        "inference tile",
        list(tile),
        f"{why}: validation windows (data.val_size) and predict tile_size",
        {"data.val_size": list(tile)},
    )
