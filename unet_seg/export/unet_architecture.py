"""The U-Net of unet-seg in one file that needs only torch: the architecture source of the
bioimage.io ``pytorch_state_dict`` weights, which consumers (bioimageio.core, ilastik) import on its
own, without unet-seg installed.

It builds the same module tree as ``unet_seg.models.unet.UNet`` (same parameter names, so a
state dict loads with ``strict=True``) and computes the same logits; ``tests/export/test_export.py``
checks both. Keep it in step with ``unet_seg/models/blocks.py`` and ``unet.py``.
Shapes: ``(N, in_channels, *spatial) -> (N, num_classes, *output_spatial)`` logits; with
``mirror`` and ``trim`` (``[before, after]`` voxels per spatial axis) the input is first mirrored
(numpy's ``reflect``) and the output trimmed, so ``output_spatial == spatial``: the same-size
form that tiling tools (bioimageio.core, deepImageJ) run, cropping each tile's halo themselves
(``unet_seg/export/same_size.py`` says how both are chosen).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

_LAYERS = {
    2: (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d, nn.InstanceNorm2d),
    3: (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.BatchNorm3d, nn.InstanceNorm3d),
}


def _conv_block(dims: int, c_in: int, c_out: int, padding: str, norm: str | None) -> nn.Sequential:
    conv, _, _, batch_norm, instance_norm = _LAYERS[dims]
    layers: list[nn.Module] = []
    for channels in (c_in, c_out):
        layers.append(conv(channels, c_out, 3, padding=padding, bias=norm is None))
        if norm == "batch":
            layers.append(batch_norm(c_out))
        elif norm == "instance":
            layers.append(instance_norm(c_out, affine=True))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Up(nn.Module):
    def __init__(self, dims, c_in, c_out, padding, norm, scale) -> None:
        super().__init__()
        self.up = _LAYERS[dims][1](c_in, c_in // 2, scale, stride=scale)
        self.conv = _conv_block(dims, c_in, c_out, padding, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        crop = [slice(None), slice(None)]
        for have, want in zip(skip.shape[2:], x.shape[2:], strict=True):
            start = (have - want) // 2
            crop.append(slice(start, start + want))
        return self.conv(torch.cat([skip[tuple(crop)], x], dim=1))


class UNet(nn.Module):
    """``UNet(spatial_dims, in_channels, num_classes, features, padding, norm, inplane_pooling)``
    as in unet-seg; drop-out is left out (it is the identity at inference and has no weights).
    ``mirror`` / ``trim``: per spatial axis, the voxels mirrored before and after the input /
    trimmed from the output (no weights)."""

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: tuple[int, ...] = (64, 128, 256, 512, 1024),
        padding: str = "valid",
        norm: str | None = None,
        inplane_pooling: bool = False,
        mirror: list[list[int]] | None = None,
        trim: list[list[int]] | None = None,
    ) -> None:
        super().__init__()
        # F.pad lists the last axis first, each axis as (before, after).
        self.pad = [int(p) for pair in reversed(mirror or ()) for p in pair]
        self.trim = (..., *(slice(int(a), -int(b) or None) for a, b in trim or ()))
        pooled = (False, True, True) if inplane_pooling else (True,) * spatial_dims
        scale = tuple(2 if p else 1 for p in pooled)
        features = tuple(int(f) for f in features)
        self.inc = _conv_block(spatial_dims, in_channels, features[0], padding, norm)
        self.downs = nn.ModuleList(
            nn.Sequential(
                _LAYERS[spatial_dims][2](scale),
                _conv_block(spatial_dims, c_in, c_out, padding, norm),
            )
            for c_in, c_out in itertools.pairwise(features)
        )
        self.ups = nn.ModuleList(
            _Up(spatial_dims, c_in, c_out, padding, norm, scale)
            for c_in, c_out in zip(features[:0:-1], features[-2::-1], strict=True)
        )
        self.head = _LAYERS[spatial_dims][0](features[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad, mode="reflect")
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)[self.trim]
