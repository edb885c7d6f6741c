"""A training plan from a :class:`~unet_seg.planning.fingerprint.Fingerprint`, a
:class:`~unet_seg.planning.machine.Machine` and a :class:`~unet_seg.planning.machine.Budget`.

Every decision is a :class:`~unet_seg.planning.rules.Decision`: a value, the config keys it sets,
and a one-line reason that names the fingerprint fact it came from. The network rules are in
:mod:`unet_seg.planning.network`, the others in :mod:`unet_seg.planning.rules`; this module puts
them together in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unet_seg.errors import UsageError
from unet_seg.planning.fingerprint import Fingerprint
from unet_seg.planning.intensity import normalization
from unet_seg.planning.machine import Budget, Machine
from unet_seg.planning.network import (
    DEPTHS,
    MIN_STEPS,
    Measure,
    Network,
    choose_depth,
    choose_dims,
    choose_network,
)
from unet_seg.planning.rules import (
    Decision,
    classes,
    inference_tile,
    loss,
    schedule,
    target,
    validation,
)


@dataclass
class Plan:
    """The decisions in the order they were made, the groups the experiment file selects, and
    what the plan was made for."""

    decisions: list[Decision]
    groups: dict[str, str]
    machine: Machine
    budget: Budget

    def settings(self) -> dict[str, Any]:
        """Every dotted config key the plan sets (later decisions win)."""
        return {k: v for d in self.decisions for k, v in d.settings.items()}

    def decision(self, name: str) -> Decision:
        return next(d for d in self.decisions if d.name == name)

    def summary(self) -> str:
        """One line per decision: ``name: value -- reason``."""
        width = max(len(d.name) for d in self.decisions)
        return "\n".join(
            f"{d.name:<{width}}  {_show(d.value)} -- {d.reason}" for d in self.decisions
        )


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value) if value else "[]"
    return str(value)


def _net_extent(fp: Fingerprint, dims: int) -> tuple[list[float], list[float], float | None]:
    """Median image extent, spacing and the 90th-percentile in-plane object extent, along the
    axes of a ``dims``-D net (the last ``dims`` axes of the data)."""
    extent, spacing = fp.median_shape[-dims:], fp.median_spacing[-dims:]
    p90 = fp.objects.get("p90_extent")
    return extent, spacing, (max(p90[-2:]) if p90 else None)


def _fit_depth(
    depth: int, reason: str, budget: Budget, network_for: Callable[[int], Network]
) -> tuple[int, str, Network]:
    """``(depth, reason, network)``: one level less while no width fits the memory
    (``UsageError``) or the narrowest gets fewer than ``MIN_STEPS`` steps, down to ``DEPTHS[0]``."""
    previous = None
    while True:
        try:
            net = network_for(depth)
        except UsageError:
            if depth <= DEPTHS[0]:
                raise
            reason = f"a {depth}-level net's smallest patch overflows the memory budget"
            depth -= 1
            continue
        if previous is not None:
            reason = (
                f"{depth + 1} levels would see the objects whole but get only "
                f"~{previous.steps} steps in {budget.describe()}: one less"
            )
        if net.steps is None or net.steps >= MIN_STEPS or depth <= DEPTHS[0]:
            return depth, reason, net
        previous, depth = net, depth - 1


def make_plan(
    fp: Fingerprint,
    machine: Machine,
    budget: Budget,
    measure: Measure | None = None,
    intensity: str = "auto",
) -> Plan:
    """The plan for ``fp`` on ``machine`` within ``budget`` (see the module docstring);
    ``measure(features, patch, batch, inplane_pooling) -> seconds per step`` replaces the
    throughput estimate; ``intensity`` (``auto``, ``absolute``, ``relative``) chooses the
    normalisation (:mod:`unet_seg.planning.intensity`)."""
    decisions: list[Decision] = []
    nnunet = "root" in fp.source
    data = (
        {"data.root": fp.source["root"]}
        if nnunet
        else {"data.images": fp.source.get("images"), "data.labels": fp.source.get("labels")}
    )
    decisions.append(
        Decision(
            "data",
            "nnunet" if nnunet else "folder",
            "a nnU-Net dataset.json" if nnunet else "images and labels given",
            data,
        )
    )
    dims, inplane, dims_reason = choose_dims(fp.median_shape, fp.median_spacing)
    decisions.append(
        Decision(
            "spatial_dims",
            f"{dims}D" + (", z unpooled" if inplane else ""),
            dims_reason,
            {
                "data.spatial_dims": dims,
                "model.spatial_dims": dims,
                "model.inplane_pooling": inplane,
            },
        )
    )
    classes_decision = classes(fp)
    decisions.append(classes_decision)
    target_decision = target(fp)
    boundary = target_decision.value == "boundary"
    num_classes = 3 if boundary else int(classes_decision.value)
    extent, spacing, objects = _net_extent(fp, dims)
    depth, depth_reason = choose_depth(objects, min(extent[-2:]))
    depth, depth_reason, net = _fit_depth(
        depth,
        depth_reason,
        budget,
        lambda d: choose_network(
            dims, inplane, d, extent, spacing, machine, budget, fp.channels, num_classes, measure
        ),
    )
    decisions.append(Decision("depth", depth, depth_reason))
    norm = "batch" if net.batch >= 2 else "instance"
    decisions += [
        Decision(
            "features",
            list(net.features),
            net.reasons["features"],
            {
                "model.features": list(net.features),
                "model.norm": norm,
                "model.dropout": 0.0,
                "model.padding": "valid",
            },
        ),
        Decision(
            "patch", list(net.patch), net.reasons["patch"], {"data.patch_size": list(net.patch)}
        ),
        Decision("batch", net.batch, net.reasons["batch"], {"data.batch_size": net.batch}),
        normalization(fp, intensity),
        target_decision,
        loss(fp),
        schedule(net.steps, net.batch, budget, norm),
        validation(fp),
        inference_tile(net.patch, net.features, net.pooled, fp, num_classes, machine),
    ]
    augment = "anisotropic_3d" if inplane else "default"
    groups = {
        "data": "nnunet" if nnunet else "folder",
        "model": "unet_small_3d" if dims == 3 else "unet_small_2d",
        "loss": "dice_ce",
        "augment": augment,
        "optimizer": "adam",
        "scheduler": "cosine" if budget.epochs is not None else "cosine_time",
    }
    decisions.append(
        Decision(
            "augment",
            augment,
            "in-plane only: z is coarser"
            if inplane
            else f"flips, rotations and elastic deformation in {dims}D",
        )
    )
    accelerator = "gpu" if machine.device == "cuda" else "cpu"
    decisions.append(
        Decision(
            "device",
            accelerator,
            f"planned for {machine.describe()}; trainer.accelerator stays auto, so the "
            "file also runs elsewhere, with a warning to re-plan (a GPU plan on a CPU stops at "
            "max_time)",
            # Read by training (unet_seg.training.planned_device) to warn on another device.
            {
                "planned_for.device": machine.device,
                "planned_for.memory_gib": round(machine.memory_bytes / 2**30, 2),
            },
        )
    )
    if fp.sampling.get("sampled"):
        decisions.append(
            Decision(
                "sampled",
                f"{fp.sampling['voxels_read']:,} voxels",
                f"{fp.sampling['cases_sampled']} large case(s) fingerprinted "
                f"from seeded chunk samples (seed {fp.sampling['seed']})",
            )
        )
    return Plan(decisions, groups, machine, budget)
