"""The network half of a plan: 2D or 3D, pooling, depth, features, patch and batch.

Rules, in order (each constant below carries its why):

1. 2D labels give a 2D net. 3D labels give a 3D net; where the median spacing of z is at least
   :data:`ANISOTROPIC` times the in-plane spacing, z is not pooled (``inplane_pooling``). A stack
   with fewer slices than the smallest such net's input (21 without z pooling, 44 with) gets a
   2D net on its slices.
2. Depth: the fewest levels (:data:`DEPTHS`) whose receptive field (the smallest valid input,
   :func:`~unet_seg.models.shapes.size_rule`) covers :data:`CONTEXT` times the 90th-percentile
   object extent in-plane, capped at the median image extent.
3. Features, patch and batch: for each base width, widest first (:data:`BASE_FEATURES`), the
   patch starts where the output covers the median image (at most :data:`OUTPUT_CAP`) and shrinks,
   one valid size at a time along the axis of largest physical extent, until a training step at
   batch 2 fits the memory budget (batch 1 if even the smallest patch does not). With a time
   budget a batch above 2 is halved while the steps fall short, and the first width that gets
   :data:`MIN_STEPS` steps wins; the narrowest then shrinks its patch for time, down to where half
   of it is still supervised (output >= the valid margin). With an epoch budget the widest that
   fits wins. :func:`unet_seg.planning.plan.make_plan` lowers the depth (not below
   :data:`DEPTHS`' first) where no width fits the memory, or where even the narrowest gets fewer
   than :data:`MIN_STEPS` steps in the time budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from unet_seg.errors import UsageError
from unet_seg.models.shapes import is_valid_size, size_rule, smallest_valid_size
from unet_seg.planning.cost import NetworkCost, network_cost
from unet_seg.planning.machine import Budget, Machine

ANISOTROPIC = 2.0  # z spacing / in-plane spacing from which pooling z would merge unlike scales
DEPTHS = (3, 4, 5)  # fewer levels see too little; more do not fit a CPU's memory or time
CONTEXT = 2.0  # the object and as much around it: borders are decided by what lies beyond them
BASE_FEATURES = {2: (64, 32, 16), 3: (32, 16, 8)}  # widest first; 16..128 is the CPU 2D recipe
OUTPUT_CAP = {2: 512, 3: 128}  # output voxels per pooled axis: larger patches add little context
MAX_BATCH = {2: 8, 3: 4}  # more samples per step when the whole image already fits
MIN_STEPS = 1000  # the hand recipes reach their Dice in a few hundred to a thousand steps
EFFICIENCY = 0.5  # share of the budget spent in training steps (validation, loading, logging)
SHRINK = 0.85  # each shrinking step cuts one axis to the valid size at most this fraction of it

# (features, patch, batch, inplane_pooling) -> seconds per training step
Measure = Callable[[Sequence[int], Sequence[int], int, bool], float]


@dataclass(frozen=True)
class Network:
    """The chosen network and its training window, with the reason for each choice."""

    spatial_dims: int
    inplane_pooling: bool
    features: tuple[int, ...]
    patch: tuple[int, ...]
    batch: int
    cost: NetworkCost
    steps: int | None
    seconds_per_step: float
    reasons: dict[str, str]

    @property
    def pooled(self) -> tuple[bool, ...]:
        return (False, True, True) if self.inplane_pooling else (True,) * self.spatial_dims


def choose_dims(shape: Sequence[float], spacing: Sequence[float]) -> tuple[int, bool, str]:
    """``(spatial_dims, inplane_pooling, reason)`` from the median ``shape`` and ``spacing``."""
    if len(shape) == 2:
        return 2, False, "the labels are 2D images"
    ratio = spacing[0] / min(spacing[1:])
    inplane = ratio >= ANISOTROPIC
    needed = smallest_valid_size(1, DEPTHS[0], "valid", pooled=not inplane)
    how = "without z pooling" if inplane else "pooling z"
    if shape[0] < needed:
        return (
            2,
            False,
            (
                f"only {shape[0]:g} slices (z spacing {ratio:.2g}x in-plane), fewer than "
                f"the {needed} a 3D net {how} needs: 2D on slices"
            ),
        )
    if inplane:
        return 3, True, f"3D, z spacing {ratio:.2g}x in-plane (>= {ANISOTROPIC:g}): z not pooled"
    return 3, False, f"3D, z spacing {ratio:.2g}x in-plane (< {ANISOTROPIC:g}): all axes pooled"


def choose_depth(
    object_extent: float | None, image_extent: float, pooled: bool = True
) -> tuple[int, str]:
    """``(depth, reason)``: the fewest levels whose receptive field covers the objects."""
    if object_extent is None:
        return 4, "no objects in the labels: the recipes' 4 levels"
    wanted = min(CONTEXT * object_extent, image_extent)
    for depth in DEPTHS:
        field = size_rule(depth, "valid", pooled)[0]
        if field >= wanted:
            return depth, (
                f"receptive field {field} px >= {CONTEXT:g} x the 90th-percentile "
                f"object extent {object_extent:g} px (capped at the image {image_extent:g})"
            )
    field = size_rule(DEPTHS[-1], "valid", pooled)[0]
    return DEPTHS[-1], (
        f"receptive field {field} px, the most of {DEPTHS[-1]} levels; objects "
        f"extend {object_extent:g} px"
    )


def _largest_valid_below(size: int, depth: int, pooled: bool) -> int:
    """The largest valid size <= ``size`` (the smallest valid size if none is)."""
    minimum = smallest_valid_size(1, depth, "valid", pooled)
    while size > minimum and not is_valid_size(size, depth, "valid", pooled):
        size -= 1
    return max(size, minimum)


def start_patch(
    extent: Sequence[float], spacing: Sequence[float], depth: int, pooled: Sequence[bool]
) -> tuple[int, ...]:
    """The largest patch worth training on: the output covers the median image, at most
    :data:`OUTPUT_CAP` per pooled axis (an unpooled z axis as many slices as that is wide)."""
    dims = len(extent)
    cap = OUTPUT_CAP[dims]
    inplane = [min(e, cap) for e, p in zip(extent, pooled, strict=True) if p]
    patch = []
    for e, s, p in zip(extent, spacing, pooled, strict=True):
        out = min(e, cap) if p else min(e, math.ceil(min(inplane) * min(spacing) / s))
        margin = size_rule(depth, "valid", p)[2]
        patch.append(smallest_valid_size(int(out) + margin, depth, "valid", p))
    return tuple(patch)


def shrink_once(
    patch: Sequence[int],
    spacing: Sequence[float],
    depth: int,
    pooled: Sequence[bool],
    floor: Sequence[int] | None = None,
) -> tuple[int, ...] | None:
    """``patch`` with its physically largest shrinkable axis cut by :data:`SHRINK`, never below
    ``floor`` (valid sizes; default the smallest valid ones), or None when every axis is there."""
    order = sorted(range(len(patch)), key=lambda a: -patch[a] * spacing[a])
    for axis in order:
        minimum = smallest_valid_size(1, depth, "valid", pooled[axis])
        if floor is not None:
            minimum = max(minimum, floor[axis])
        if patch[axis] > minimum:
            smaller = _largest_valid_below(int(patch[axis] * SHRINK), depth, pooled[axis])
            if smaller >= patch[axis]:
                smaller = _largest_valid_below(patch[axis] - 1, depth, pooled[axis])
            smaller = max(smaller, minimum)
            return tuple(smaller if a == axis else s for a, s in enumerate(patch))
    return None


def time_floor(start: Sequence[int], depth: int, pooled: Sequence[bool]) -> tuple[int, ...]:
    """The smallest patch worth shrinking to for time: at least half of it supervised (output
    >= margin, so no step spends most of its work on context), never more than ``start``."""
    floor = []
    for size, p in zip(start, pooled, strict=True):
        margin = size_rule(depth, "valid", p)[2]
        floor.append(min(size, smallest_valid_size(2 * margin, depth, "valid", p)))
    return tuple(floor)


def fit_memory(
    start: tuple[int, ...],
    spacing: Sequence[float],
    features: Sequence[int],
    pooled: Sequence[bool],
    machine: Machine,
    in_channels: int,
    num_classes: int,
) -> tuple[tuple[int, ...], int, NetworkCost] | None:
    """``(patch, batch, cost)``: the largest patch from ``start`` whose step fits the memory at
    batch 2 (or 1), with the batch raised up to :data:`MAX_BATCH` when nothing was cut; None
    when nothing fits."""
    depth, dims = len(features), len(start)
    for batch in (2, 1):
        patch: tuple[int, ...] | None = start
        while patch is not None:
            cost = network_cost(patch, features, in_channels, num_classes, "batch", pooled)
            if cost.training_bytes(batch) <= machine.memory_bytes:
                if patch == start and batch == 2:
                    while (
                        batch * 2 <= MAX_BATCH[dims]
                        and cost.training_bytes(batch * 2) <= machine.memory_bytes
                    ):
                        batch *= 2
                return patch, batch, cost
            patch = shrink_once(patch, spacing, depth, pooled)
    return None


def choose_network(
    dims: int,
    inplane: bool,
    depth: int,
    extent: Sequence[float],
    spacing: Sequence[float],
    machine: Machine,
    budget: Budget,
    in_channels: int,
    num_classes: int,
    measure: Measure | None = None,
) -> Network:
    """Features, patch and batch by rule 3 of the module docstring; ``UsageError`` when even the
    narrowest network at its smallest patch and batch 1 overflows the memory budget."""
    pooled = (False, True, True) if inplane else (True,) * dims
    start = start_patch(extent, spacing, depth, pooled)

    def timed(
        features: tuple[int, ...], patch: tuple[int, ...], batch: int, cost: NetworkCost
    ) -> tuple[float, int | None]:
        per_step = (
            measure(features, patch, batch, inplane)
            if measure is not None
            else cost.step_macs(batch) / machine.macs_per_second
        )
        if budget.seconds is None:
            return per_step, None
        return per_step, int(budget.seconds * EFFICIENCY / per_step)

    fitted = None
    for base in BASE_FEATURES[dims]:
        features = tuple(base * 2**i for i in range(depth))
        found = fit_memory(start, spacing, features, pooled, machine, in_channels, num_classes)
        if found is None:
            continue
        patch, batch, cost = found
        per_step, steps = timed(features, patch, batch, cost)
        while steps is not None and steps < MIN_STEPS and batch > 2:  # steps before samples
            batch //= 2
            per_step, steps = timed(features, patch, batch, cost)
        fitted = (features, patch, batch, cost, per_step, steps)
        if steps is None or steps >= MIN_STEPS:
            break
    if fitted is None:
        smallest = tuple(smallest_valid_size(1, depth, "valid", p) for p in pooled)
        need = network_cost(
            smallest,
            [BASE_FEATURES[dims][-1] * 2**i for i in range(depth)],
            in_channels,
            num_classes,
            "batch",
            pooled,
        ).training_bytes(1)
        raise UsageError(
            f"the memory budget {machine.memory_bytes / 2**20:.0f} MiB is too small: the "
            f"narrowest {depth}-level net at its smallest patch {list(smallest)} needs about "
            f"{need / 2**20:.0f} MiB (set machine.memory_gib)"
        )
    features, patch, batch, cost, per_step, steps = fitted
    shrunk_for_time = False
    floor = time_floor(start, depth, pooled)
    while steps is not None and steps < MIN_STEPS:
        smaller = shrink_once(patch, spacing, depth, pooled, floor)
        if smaller is None:
            break
        patch, shrunk_for_time = smaller, True
        cost = network_cost(patch, features, in_channels, num_classes, "batch", pooled)
        per_step, steps = timed(features, patch, batch, cost)
    return Network(
        dims,
        inplane,
        features,
        patch,
        batch,
        cost,
        steps,
        per_step,
        _reasons(
            start, patch, batch, features, cost, steps, per_step, machine, budget, shrunk_for_time
        ),
    )


def _reasons(
    start, patch, batch, features, cost, steps, per_step, machine, budget, shrunk_for_time
) -> dict[str, str]:
    memory = (
        f"a step needs ~{cost.training_bytes(batch) / 2**20:.0f} MiB of the "
        f"{machine.memory_bytes / 2**20:.0f} MiB budget"
    )
    if patch == start:
        patch_reason = f"the output covers the median image; {memory}"
    elif shrunk_for_time:
        patch_reason = f"cut from {list(start)} to get more steps into {budget.describe()}"
    else:
        patch_reason = f"cut from {list(start)} to fit memory: {memory}"
    if steps is None:
        features_reason = (
            f"base {features[0]}, the widest that fits; ~{per_step:.2g} s/step on {machine.device}"
        )
    else:
        features_reason = (
            f"base {features[0]}: ~{steps} steps of ~{per_step:.2g} s in "
            f"{budget.describe()} on {machine.device} (want >= {MIN_STEPS})"
        )
    batch_reason = (
        "2 samples keep batch norm's statistics usable"
        if batch == 2
        else "the whole patch fits and the budget allows: more samples per step"
        if batch > 2
        else "not even 2 samples of the smallest patch fit the memory"
    )
    return {"features": features_reason, "patch": patch_reason, "batch": batch_reason}
