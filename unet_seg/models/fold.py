"""Batch norm folded into the convolution before it, for inference.

In eval mode a batch norm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) *
gamma + beta``; after a convolution it can be folded into the convolution's weights and bias
(``w' = w * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)`` per output
channel), so that inference runs one layer instead of two and oneDNN can fuse conv + bias + ReLU.
The result equals the unfolded network in eval mode up to float rounding.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` has a batch norm layer anywhere."""
    return any(isinstance(m, _BATCH_NORMS) for m in model.modules())


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode in which every batch norm that directly follows a
    convolution (not a transposed one) in an ``nn.Sequential`` is folded into that
    convolution and replaced by ``nn.Identity``; other batch norms stay. ``model`` itself is left
    as it was (its training may go on). Shapes are unchanged: ``(N, C, *spatial)`` in, the same
    logits out.

    Raises ``ValueError`` for a batch norm without running statistics (nothing to fold).
    """
    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = parent._modules[first], parent._modules[second]
            if (
                isinstance(conv, nn.modules.conv._ConvNd)
                and not conv.transposed
                and isinstance(norm, _BATCH_NORMS)
            ):
                _fold_into(conv, norm)
                parent._modules[second] = nn.Identity()
    return folded


@torch.no_grad()
def _fold_into(conv: nn.modules.conv._ConvNd, norm: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``norm`` (eval mode) into ``conv`` in place; ``conv`` gets a bias if it had none."""
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("batch norm without running statistics cannot be folded")
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.affine:
        scale = scale * norm.weight.double()
    shift = -norm.running_mean.double() * scale
    if norm.affine:
        shift = shift + norm.bias.double()
    weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    conv.weight.copy_(weight.to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    else:
        conv.bias.copy_(bias.to(conv.bias.dtype))
