"""A warning when a planned experiment trains on another device than it was planned for.

``unet-seg-plan`` writes ``planned_for: {device, memory_gib}`` into the experiment file (the
machine of the plan; ``conf/train.yaml`` has it ``null``, so configs without it, older runs
included, are not checked). A plan for a CPU chose a narrow network and a small patch for CPU
throughput; a plan for a GPU chose sizes a CPU trains far too slowly, or a smaller card may not
hold. Training still runs (``trainer.accelerator`` stays ``auto``); the warning names both devices
and says to re-plan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

log = logging.getLogger(__name__)

# Of a card's memory, the share the planner counts on (the CUDA context and allocator's slack);
# the same rule as unet_seg.planning.machine.GPU_MEMORY_SHARE.
GPU_MEMORY_SHARE = 0.8
# A card offering less than this share of the plan's memory budget is "much less": the estimate
# a plan fits into overstates a step's measured peak by up to 2x, so a little less still fits.
MUCH_LESS = 0.75


def device_warning(
    planned: Mapping[str, Any] | None, device: str, total_memory: int | None = None
) -> str | None:
    """The warning for training on ``device`` (``"cpu"`` or ``"cuda"``, a card of
    ``total_memory`` bytes) what was planned for ``planned`` (``{device, memory_gib}``), or None
    when they agree or nothing was planned."""
    if not planned or not planned.get("device"):
        return None
    want = str(planned["device"])
    memory = planned.get("memory_gib")
    made_for = f"{want}" + (f" with {float(memory):g} GiB" if memory is not None else "")
    if want != device:
        return (
            f"this experiment was planned for {made_for}, but trains on {device}: its network, "
            f"patch and schedule suit the other device; re-plan here (unet-seg-plan, or "
            f"experiment=auto)"
        )
    if device == "cuda" and memory is not None and total_memory is not None:
        usable = total_memory * GPU_MEMORY_SHARE / 2**30
        if usable < MUCH_LESS * float(memory):
            return (
                f"this experiment was planned for {made_for}, but this GPU offers "
                f"{usable:.1f} GiB ({GPU_MEMORY_SHARE:.0%} of {total_memory / 2**30:.1f} GiB): "
                f"its patch and batch may not fit; re-plan here (unet-seg-plan, or "
                f"experiment=auto)"
            )
    return None


def warn_if_planned_elsewhere(planned: Mapping[str, Any] | None, device: torch.device) -> None:
    """Log :func:`device_warning` for training on ``device`` (the trainer's root device)."""
    total = None
    if device.type == "cuda":
        total = int(torch.cuda.get_device_properties(device).total_memory)
    message = device_warning(planned, device.type, total)
    if message:
        log.warning(message)
