"""The U-Net of Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (arXiv:1505.04597), and its 3D form (Cicek et al., MICCAI 2016).

Contracting path: per level two 3x3 convs + ReLU, then 2x2 max-pool. Expansive path: a 2x2
transposed conv with stride 2 that halves the channels, concatenation with the (centre-cropped)
skip features, two 3x3 convs. A final 1x1 conv gives ``num_classes`` logits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from unet_seg.models import shapes
from unet_seg.models.blocks import NORMS, PADDING_MODES, ConvBlock, DownBlock, UpBlock, layer_types

PAPER_FEATURES = (64, 128, 256, 512, 1024)


class UNet(nn.Module):
    """U-Net for ``spatial_dims`` 2 or 3.

    Args:
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: channels of the input image.
        num_classes: channels of the output logits.
        features: channels per level, top to bottom; its length is the depth (the paper: 5).
        padding: ``"valid"`` (the paper: output smaller than input, see :meth:`output_shape`)
            or ``"same"``.
        norm: ``None`` (the paper), ``"batch"`` or ``"instance"``.
        dropout: drop probability at the end of the contracting path (the paper uses drop-out
            there; 0 disables it).
        inplane_pooling: 3D only: pool and up-sample y and x but not z, for anisotropic stacks
            whose z spacing is several times the in-plane spacing.

    Shapes: input ``(N, in_channels, *spatial)``, output logits
    ``(N, num_classes, *output_shape(spatial))``. No activation is applied.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: Sequence[int] = PAPER_FEATURES,
        padding: str = "valid",
        norm: str | None = None,
        dropout: float = 0.5,
        inplane_pooling: bool = False,
    ) -> None:
        super().__init__()
        layer_types(spatial_dims)  # validates spatial_dims
        given = features
        try:
            features = tuple(int(f) for f in given)
        except (TypeError, ValueError):
            features = ()
        if not features or any(f <= 0 or f != g for f, g in zip(features, given, strict=True)):
            raise ValueError(f"features must be a non-empty list of positive ints, got {given}")
        if any(2 * a != b for a, b in itertools.pairwise(features)):
            # The up-conv halves the channels so that they match the skip features.
            raise ValueError(
                f"each level must double the features of the one above, got {features}"
            )
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if inplane_pooling and spatial_dims != 3:
            raise ValueError("inplane_pooling applies to 3D models only")
        if in_channels <= 0 or num_classes <= 0:
            raise ValueError("in_channels and num_classes must be positive")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.features = features
        self.padding = padding
        self.pooled_axes = (False, True, True) if inplane_pooling else (True,) * spatial_dims
        scale = tuple(2 if pooled else 1 for pooled in self.pooled_axes)

        self.inc = ConvBlock(spatial_dims, in_channels, features[0], padding, norm)
        self.downs = nn.ModuleList(
            DownBlock(spatial_dims, c_in, c_out, padding, norm, pool_size=scale)
            for c_in, c_out in itertools.pairwise(features)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            UpBlock(spatial_dims, c_in, c_out, padding, norm, up_size=scale)
            for c_in, c_out in zip(features[:0:-1], features[-2::-1], strict=True)
        )
        self.head = layer_types(spatial_dims).conv(features[0], num_classes, kernel_size=1)
        self.reset_parameters()

    @property
    def depth(self) -> int:
        return len(self.features)

    def reset_parameters(self) -> None:
        """He-normal weights (std sqrt(2 / fan_in), as the paper prescribes), zero biases."""
        for module in self.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                if module.transposed:
                    # fan_in of a transposed conv is the input channels times the kernel volume.
                    fan_in = module.in_channels * math.prod(module.kernel_size)
                    nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_in))
                else:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial ``input_shape``; ``ValueError`` if it does not fit."""
        if len(input_shape) != self.spatial_dims:
            raise ValueError(
                f"expected {self.spatial_dims} spatial sizes, got {tuple(input_shape)}"
            )
        return shapes.output_shape(input_shape, self.depth, self.padding, self.pooled_axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *spatial) -> (N, num_classes, *output_shape(spatial))`` logits."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, {self.spatial_dims} spatial dims), "
                f"got {tuple(x.shape)}"
            )
        self.output_shape(x.shape[2:])  # clear error instead of a shape mismatch deep inside
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.dropout(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)


def unet_with_weights(
    kwargs: Mapping[str, Any], weights: Mapping[str, torch.Tensor], source: str, what: str
) -> UNet:
    """``UNet(**kwargs)`` in eval mode with the state dict ``weights``; ``ValueError`` naming
    ``source`` (a file) and ``what`` (where ``kwargs`` came from) when they do not fit.

    The network is first built on PyTorch's ``meta`` device (shapes, no memory) and compared
    with ``weights``: a file's description cannot make us allocate a network its weights do not
    fill (``features`` of a million allocate terabytes)."""
    try:
        with torch.device("meta"):
            skeleton = UNet(**kwargs)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{source}: the weights do not fit the {what} network ({err})") from err
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in weights.items() if hasattr(v, "shape")}
    if expected != given:
        wrong = sorted(k for k in expected.keys() & given.keys() if expected[k] != given[k])
        problem = (
            f"{wrong[0]} is {given[wrong[0]]} in the file, {expected[wrong[0]]} in the network"
            if wrong
            else f"missing {sorted(expected.keys() - given.keys())[:3]}, unexpected "
            f"{sorted(given.keys() - expected.keys())[:3]}"
        )
        raise ValueError(f"{source}: the weights do not fit the {what} network ({problem})")
    try:
        model = UNet(**kwargs)
        model.load_state_dict(weights)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{source}: the weights do not fit the {what} network ({err})") from err
    return model.eval()
