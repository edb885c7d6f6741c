"""Measured throughput: time a few training steps of a candidate network on this machine
(``machine.measure=true`` of ``unet-seg-plan``), instead of the stated MAC/s estimate.

Measuring makes a plan depend on the machine's load at that moment; the estimate does not, so it
is the default. Tests pass their own ``measure`` callable to the planner.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

WARMUP, TIMED = 1, 2  # the first step allocates and picks kernels: not timed


def step_timer(
    in_channels: int, num_classes: int, device: str = "cpu"
) -> Callable[[Sequence[int], Sequence[int], int, bool], float]:
    """A ``measure(features, patch, batch, inplane_pooling) -> seconds per training step`` for
    the planner, caching each candidate's time."""
    cache: dict[tuple, float] = {}

    def measure(features: Sequence[int], patch: Sequence[int], batch: int, inplane: bool) -> float:
        key = (tuple(features), tuple(patch), int(batch), bool(inplane))
        if key not in cache:
            cache[key] = _time_steps(
                features, patch, batch, in_channels, num_classes, device, inplane
            )
        return cache[key]

    return measure


def _time_steps(features, patch, batch, in_channels, num_classes, device, inplane) -> float:
    import torch  # only when asked to measure

    from unet_seg.models import UNet

    model = UNet(
        len(patch),
        in_channels,
        num_classes,
        features,
        "valid",
        "batch",
        0.0,
        inplane and len(patch) == 3,
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(batch, in_channels, *patch, device=device)
    elapsed = 0.0
    for step in range(WARMUP + TIMED):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x).float().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= WARMUP:
            elapsed += time.perf_counter() - start
    return elapsed / TIMED
