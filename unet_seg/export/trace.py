"""What both tracing exporters (TorchScript, ONNX) need: a CPU copy of the network in eval mode and
an example input of a size it accepts."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from unet_seg.models import shapes


def example_size(model, steps: int = 1) -> tuple[int, ...]:
    """A spatial size ``model`` accepts: the smallest plus ``steps`` steps on every axis.

    One step above the minimum keeps every pooled map larger than 1 voxel, so the trace holds no
    size-1 special case.
    """
    if hasattr(model, "example_size"):  # a wrapper with its own size rule (SameSizeNetwork)
        return tuple(model.example_size(steps))
    sizes = []
    for pooled in model.pooled_axes:
        minimum, step, _ = shapes.size_rule(model.depth, model.padding, pooled)
        sizes.append(minimum + steps * step)
    return tuple(sizes)


def traceable_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode, so exporting leaves the caller's model as it is."""
    return copy.deepcopy(model).float().cpu().eval()


@contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence the tracer's warnings about the shape checks in ``UNet.forward``: they only raise
    errors for sizes the network rejects and do not change the traced computation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def example_input(model, batch: int = 1) -> torch.Tensor:
    """``(batch, in_channels, *example_size(model))`` float32, seeded."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, int(model.in_channels), *example_size(model)), generator=generator)
