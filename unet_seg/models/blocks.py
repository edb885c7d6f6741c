"""Building blocks of the U-Net, one code path for 2D and 3D selected by ``spatial_dims``.

Tensors are ``(N, C, *spatial)`` with ``len(spatial) == spatial_dims``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

PADDING_MODES = ("valid", "same")
NORMS = (None, "batch", "instance")


@dataclass(frozen=True)
class LayerTypes:
    """The layer classes of one dimensionality."""

    conv: type[nn.Module]
    conv_transpose: type[nn.Module]
    max_pool: type[nn.Module]
    batch_norm: type[nn.Module]
    instance_norm: type[nn.Module]


_ONEDNN = threading.local()  # per thread: Dask runs blocks in several threads of one worker


@contextmanager
def onednn_convolutions() -> Iterator[None]:
    """Within this context (in this thread), 3D convolutions of float32 CPU tensors without
    autograd always run on oneDNN.

    PyTorch picks its native ``slow_conv3d`` (an unfolded copy of the input, then a matrix
    product) over oneDNN for a batch of one whose ``N * C * D * H`` is at most 20480, a size
    rule meant for 2D that ignores the width: most encoder convolutions of a 3D window. oneDNN
    ran a 64x48x48 window of a 16-32-64 net 1.4x as fast, without the unfolded copy, equal
    within float rounding. Inference turns it on (:class:`~unet_seg.inference.runner.
    ModelRunner`); training, tracing, exports and FLOP counting see plain convolutions.
    """
    previous = getattr(_ONEDNN, "on", False)
    _ONEDNN.on = torch.backends.mkldnn.is_available()
    try:
        yield
    finally:
        _ONEDNN.on = previous


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs on oneDNN inside :func:`onednn_convolutions` (same parameters,
    same state dict)."""

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        padding = self._symmetric_padding()
        if (
            getattr(_ONEDNN, "on", False)
            and padding is not None
            and torch.backends.mkldnn.enabled
            and not torch.is_grad_enabled()
            and input.device.type == "cpu"
            and input.dtype == weight.dtype == torch.float32
            and not torch.jit.is_tracing()
        ):
            return torch.ops.aten.mkldnn_convolution(
                input, weight, bias, padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(input, weight, bias)

    def _symmetric_padding(self) -> list[int] | None:
        """Zero padding per side, or ``None`` where it is not the same on both sides."""
        if self.padding_mode != "zeros":
            return None
        if self.padding == "valid":
            return [0] * len(self.kernel_size)
        if self.padding == "same":
            reach = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            return None if any(r % 2 for r in reach) else [r // 2 for r in reach]
        return list(self.padding)


_LAYERS = {
    2: LayerTypes(nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d, nn.InstanceNorm2d),
    3: LayerTypes(Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.BatchNorm3d, nn.InstanceNorm3d),
}


def layer_types(spatial_dims: int) -> LayerTypes:
    """Return the conv/pool/norm classes for ``spatial_dims`` (2 or 3)."""
    if spatial_dims not in _LAYERS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return _LAYERS[spatial_dims]


def center_crop(x: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Crop the centre ``spatial_shape`` out of ``x`` of shape ``(N, C, *spatial)``.

    When a size difference is odd the extra voxel is dropped at the far end, so the crop of the
    paper's skip connections (always even differences) is exact.
    """
    spatial = x.shape[2:]
    if len(spatial) != len(spatial_shape):
        raise ValueError(f"cannot crop {tuple(spatial)} to {tuple(spatial_shape)}: dims differ")
    slices = [slice(None), slice(None)]
    for have, want in zip(spatial, spatial_shape, strict=True):
        if want > have:
            raise ValueError(f"cannot crop {tuple(spatial)} to larger {tuple(spatial_shape)}")
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]


class ConvBlock(nn.Sequential):
    """Two 3x3(x3) convolutions, each followed by optional norm and ReLU.

    ``(N, in_channels, *s) -> (N, out_channels, *(s - 4))`` in valid mode, ``*s`` in same mode.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        padding: str = "valid",
        norm: str | None = None,
        kernel_size: int | Sequence[int] = 3,
    ) -> None:
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        types = layer_types(spatial_dims)
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(2):
            # A norm layer right after makes the conv bias redundant.
            layers.append(
                types.conv(channels, out_channels, kernel_size, padding=padding, bias=norm is None)
            )
            if norm == "batch":
                layers.append(types.batch_norm(out_channels))
            elif norm == "instance":
                layers.append(types.instance_norm(out_channels, affine=True))
            layers.append(nn.ReLU(inplace=True))
            channels = out_channels
        super().__init__(*layers)


class DownBlock(nn.Sequential):
    """2x2(x2) max-pool, then a :class:`ConvBlock`: ``(N, C_in, *s) -> (N, C_out, *(s/2 - 4))``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        padding: str = "valid",
        norm: str | None = None,
        pool_size: int | Sequence[int] = 2,
        kernel_size: int | Sequence[int] = 3,
    ) -> None:
        super().__init__(
            layer_types(spatial_dims).max_pool(pool_size),
            ConvBlock(spatial_dims, in_channels, out_channels, padding, norm, kernel_size),
        )


class UpBlock(nn.Module):
    """The expansive step: 2x2 transposed conv (stride 2) halving the channels, concatenation with
    the centre-cropped skip features, then a :class:`ConvBlock`.

    ``x``: ``(N, C_in, *s)``, ``skip``: ``(N, C_in // 2, *t)`` with ``t >= 2s``;
    returns ``(N, C_out, *(2s - 4))`` in valid mode.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        padding: str = "valid",
        norm: str | None = None,
        up_size: int | Sequence[int] = 2,
        kernel_size: int | Sequence[int] = 3,
    ) -> None:
        super().__init__()
        if in_channels % 2:
            raise ValueError(
                f"UpBlock halves the channels: in_channels must be even, got {in_channels}"
            )
        types = layer_types(spatial_dims)
        # Kernel == stride: every output voxel comes from exactly one input voxel (no overlap, no
        # checkerboard), which is the paper's "2x2 up-convolution".
        self.up = types.conv_transpose(in_channels, in_channels // 2, up_size, stride=up_size)
        self.conv = ConvBlock(spatial_dims, in_channels, out_channels, padding, norm, kernel_size)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        first = self.conv[0]
        if torch.is_grad_enabled() or first._forward_hooks or first._forward_pre_hooks:
            # Training needs the concatenation for autograd; a hook on the first conv
            # (a shape trace, a feature probe) must see the input it documents.
            x = self.up(x)
            return self.conv(torch.cat([center_crop(skip, x.shape[2:]), x], dim=1))
        return self._conv_without_concat(x, skip)

    def _conv_without_concat(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``self.conv(cat([skip, up(x)]))`` without the concatenated tensor, for inference.

        A convolution over concatenated channels is the sum of the convolutions of each part
        with its slice of the kernel, so the first conv runs on the up-convolved ``x`` (freed
        right after: this frame holds its only reference) and adds the ``skip`` part: at full
        resolution the peak is 3 feature maps instead of 6 (skip, up, their concatenation, two
        conv outputs), the largest share of a window's memory. Equal to the concatenating path
        up to float summation order.
        """
        up = self.up(x)
        skip = center_crop(skip, up.shape[2:])
        first, *rest = self.conv
        weight, skip_channels = first.weight, skip.shape[1]
        out = first._conv_forward(up, weight[:, skip_channels:], first.bias)
        del up
        out += first._conv_forward(skip, weight[:, :skip_channels], None)
        for layer in rest:
            out = layer(out)
        return out
