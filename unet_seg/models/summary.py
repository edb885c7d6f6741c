"""Per-layer summary of a built :class:`~unet_seg.models.UNet` (``unet-seg-summary``): output shape,
parameters, MACs, receptive field and jump per layer, and the activation memory of one forward
pass. Which sizes a network accepts, without building it, is :mod:`unet_seg.models.shapes`.

The receptive field is the true dependency window, traced as index intervals through every conv,
pool, up-convolution, crop and concatenation. It is not the naive ``input - output`` difference
(184 for the paper's net): a 2x2 up-convolution with stride 2 maps each output voxel to exactly one
input voxel, so a 3-voxel window above covers only 2 voxels below and the window depends on the
output voxel's position modulo ``2 ** (depth - 1)``. For the paper's net it is 188 pixels for a
voxel aligned with the coarsest grid (e.g. the first output pixel) and up to 204 for others.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from unet_seg.models.unet import UNet

# Maps an inclusive index interval (lo, hi), one entry per axis, of a layer's output to the interval
# of network-input indices it depends on.
IntervalMap = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class LayerRow:
    """One leaf layer: its output shape ``(C, *spatial)`` for batch 1 and its arithmetic."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    receptive_field: tuple[int, ...]
    jump: tuple[float, ...]


@dataclass
class Summary:
    """Per-layer rows and totals. MACs and activation bytes are for the batch size given."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    total_macs: int = 0
    receptive_field: tuple[int, ...] = ()
    receptive_field_range: tuple[tuple[int, int], ...] = ()
    activation_bytes: int = 0

    def table(self) -> str:
        """The rows and totals as a fixed-width text table."""
        header = f"{'layer':<22}{'kind':<17}{'output (C, *spatial)':<26}{'params':>12}"
        header += f"{'MACs':>17}{'RF':>14}{'jump':>10}"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            lines.append(
                f"{r.name:<22}{r.kind:<17}{_fmt(r.output_shape):<26}{r.params:>12,}{r.macs:>17,}"
                f"{_fmt(r.receptive_field):>14}{_fmt(r.jump):>10}"
            )
        lines.append("-" * len(header))
        ranges = ", ".join(f"{lo}..{hi}" for lo, hi in self.receptive_field_range)
        lines += [
            f"input {_fmt(self.input_shape)} -> output {_fmt(self.output_shape)}",
            f"total parameters:      {self.total_params:,}",
            f"total MACs:            {self.total_macs:,} ({2 * self.total_macs / 1e9:.2f} GFLOP)",
            f"receptive field:       {_fmt(self.receptive_field)} (aligned output voxel; "
            f"over all positions {ranges})",
            f"activation memory:     {self.activation_bytes / 2**20:.1f} MiB (one forward pass)",
        ]
        return "\n".join(lines)


def _fmt(values: Sequence) -> str:
    return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _conv_padding(module: nn.Module) -> np.ndarray:
    if module.padding == "valid":
        return np.zeros(len(module.kernel_size), dtype=np.int64)
    if module.padding == "same":
        return (np.array(module.kernel_size) - 1) // 2
    return np.array(module.padding, dtype=np.int64)


def _leaf_map(module: nn.Module, previous: IntervalMap) -> IntervalMap:
    """Compose ``previous`` with the dependency of one leaf layer's output on its input."""
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        k, p = np.array(module.kernel_size), _conv_padding(module)
        s = np.array(module.stride)
        return lambda lo, hi: previous(lo * s - p, hi * s - p + k - 1)
    if isinstance(module, nn.modules.conv._ConvNd):
        k, s = np.array(module.kernel_size), np.array(module.stride)
        # Output u receives input i when i*s <= u <= i*s + k - 1.
        return lambda lo, hi: previous(-((k - 1 - lo) // s), hi // s)
    if isinstance(module, nn.modules.pooling._MaxPoolNd):
        k = np.atleast_1d(module.kernel_size)
        s = np.atleast_1d(module.stride)
        return lambda lo, hi: previous(lo * s, hi * s + k - 1)
    return previous  # pointwise: activation, norm (local view), dropout, identity


def _crop_offset(skip_shape: Sequence[int], cropped_shape: Sequence[int]) -> np.ndarray:
    return (np.array(skip_shape) - np.array(cropped_shape)) // 2


def _union(a: IntervalMap, b: IntervalMap) -> IntervalMap:
    def both(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (lo_a, hi_a), (lo_b, hi_b) = a(lo, hi), b(lo, hi)
        return np.minimum(lo_a, lo_b), np.maximum(hi_a, hi_b)

    return both


def _trace_shapes(model: UNet, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Output shape ``(N, C, *spatial)`` of every leaf module, from one pass on the meta device."""
    meta_model = copy.deepcopy(model).to("meta").eval()
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, out.shape))
        for name, m in meta_model.named_modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        meta_model(torch.empty(input_shape, device="meta"))
    for h in hooks:
        h.remove()
    return {name: tuple(s) for name, s in shapes.items()}


def _macs(module: nn.Module, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one leaf, counted as torch.utils.flop_counter does (no bias)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        per_position = module.in_channels // module.groups * math.prod(module.kernel_size)
        if module.transposed:
            return math.prod(in_shape) * module.out_channels * per_position // module.in_channels
        return math.prod(out_shape) * per_position
    return 0


def _interval_maps(model: UNet, shapes: dict[str, tuple[int, ...]]) -> dict[str, IntervalMap]:
    """An interval map for every leaf layer's output, following the U-Net's data flow."""
    maps: dict[str, IntervalMap] = {}

    def run(module: nn.Module, prefix: str, current: IntervalMap) -> IntervalMap:
        children = list(module.named_children())
        if not children:
            maps[prefix] = _leaf_map(module, current)
            return maps[prefix]
        for name, child in children:
            current = run(child, f"{prefix}.{name}" if prefix else name, current)
        return current

    current: IntervalMap = lambda lo, hi: (lo, hi)  # noqa: E731
    skips = [run(model.inc, "inc", current)]
    skip_names = [_last_leaf(model.inc, "inc")]
    for i, down in enumerate(model.downs):
        skips.append(run(down, f"downs.{i}", skips[-1]))
        skip_names.append(_last_leaf(down, f"downs.{i}"))
    current = run(model.dropout, "dropout", skips.pop())
    skip_names.pop()
    for i, up in enumerate(model.ups):
        up_map = run(up.up, f"ups.{i}.up", current)
        skip_map, skip_name = skips.pop(), skip_names.pop()
        offset = _crop_offset(shapes[skip_name][2:], shapes[f"ups.{i}.up"][2:])
        cropped = (lambda m, c: lambda lo, hi: m(lo + c, hi + c))(skip_map, offset)
        current = run(up.conv, f"ups.{i}.conv", _union(cropped, up_map))
    run(model.head, "head", current)
    return maps


def _last_leaf(module: nn.Module, prefix: str) -> str:
    return [
        f"{prefix}.{n}" if n else prefix
        for n, m in module.named_modules()
        if not list(m.children())
    ][-1]


def summarize(model: UNet, input_shape: Sequence[int]) -> Summary:
    """Per-layer arithmetic of ``model`` for an input ``(N, C, *spatial)`` (or spatial only).

    Raises ``ValueError`` (from :meth:`UNet.output_shape`) if the size does not fit the model.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) == model.spatial_dims:
        input_shape = (1, model.in_channels, *input_shape)
    if len(input_shape) != model.spatial_dims + 2:
        raise ValueError(f"input_shape must be (N, C, *spatial) or spatial, got {input_shape}")
    model.output_shape(input_shape[2:])
    shapes = _trace_shapes(model, input_shape)
    maps = _interval_maps(model, shapes)
    zero = np.zeros(model.spatial_dims, dtype=np.int64)

    summary = Summary(input_shape=input_shape, output_shape=shapes["head"])
    previous_shape = input_shape
    # Jump: input voxels between neighbouring units, the product of the strides so far.
    jump = np.ones(model.spatial_dims)
    scale = np.array([2.0 if pooled else 1.0 for pooled in model.pooled_axes])
    for name, module in model.named_modules():
        if list(module.children()):
            continue
        if isinstance(module, nn.modules.pooling._MaxPoolNd):
            jump = jump * scale
        elif isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
            jump = jump / scale
        out_shape = shapes[name]
        lo, hi = maps[name](zero, zero)
        summary.rows.append(
            LayerRow(
                name=name,
                kind=type(module).__name__,
                output_shape=tuple(out_shape[1:]),
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=_macs(module, out_shape, previous_shape),
                receptive_field=tuple(int(v) for v in hi - lo + 1),
                jump=tuple(float(j) for j in jump),
            )
        )
        # In-place ReLUs reuse their input's storage, so they add no activation memory.
        if not getattr(module, "inplace", False):
            summary.activation_bytes += math.prod(out_shape) * 4
        previous_shape = out_shape

    summary.total_params = sum(p.numel() for p in model.parameters())
    summary.total_macs = sum(r.macs for r in summary.rows)
    summary.receptive_field = summary.rows[-1].receptive_field
    summary.receptive_field_range = _receptive_field_range(model, maps["head"])
    return summary


def _receptive_field_range(model: UNet, head_map: IntervalMap) -> tuple[tuple[int, int], ...]:
    """Smallest and largest window over output positions (periodic in 2**(depth - 1))."""
    period = 2 ** (model.depth - 1)
    sizes = []
    for u in range(period):
        pos = np.full(model.spatial_dims, u, dtype=np.int64)
        lo, hi = head_map(pos, pos)
        sizes.append(hi - lo + 1)
    sizes_arr = np.stack(sizes)
    return tuple((int(a), int(b)) for a, b in zip(sizes_arr.min(0), sizes_arr.max(0), strict=True))


def receptive_field_at(
    model: UNet, input_shape: Sequence[int], position: Sequence[int]
) -> tuple[int, ...]:
    """Traced window size of output voxel ``position`` for a spatial ``input_shape``."""
    shape = (1, model.in_channels, *input_shape)
    model.output_shape(input_shape)
    lo, hi = _interval_maps(model, _trace_shapes(model, shape))["head"](
        np.asarray(position, dtype=np.int64), np.asarray(position, dtype=np.int64)
    )
    return tuple(int(v) for v in hi - lo + 1)


def measure_receptive_field(
    model: UNet, input_shape: Sequence[int], position: Sequence[int]
) -> tuple[int, ...]:
    """Receptive field of one output voxel measured by back-propagation, as a check on the tracing.

    A copy of the model is made monotone so that no gradient is lost: positive averaging weights,
    average pooling in place of max pooling (max pooling passes gradient to one voxel of each
    window although the output depends on all of them), eval mode. The extent of the non-zero input
    gradient of output voxel ``position`` is the window it depends on. ``input_shape`` is spatial.
    """
    probe = copy.deepcopy(model).double().eval()
    for parent in probe.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.pooling._MaxPoolNd):
                pool = nn.AvgPool2d if probe.spatial_dims == 2 else nn.AvgPool3d
                setattr(parent, name, pool(child.kernel_size, child.stride))
            elif isinstance(child, nn.modules.instancenorm._InstanceNorm):
                raise ValueError("instance norm couples every voxel: the receptive field is global")
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.fill_(0.0)
    x = torch.ones((1, probe.in_channels, *input_shape), dtype=torch.float64, requires_grad=True)
    out = probe(x)
    out[(0, 0, *position)].backward()
    grad = x.grad[0].abs().sum(0)
    extent = []
    for axis in range(probe.spatial_dims):
        other = tuple(a for a in range(probe.spatial_dims) if a != axis)
        nonzero = torch.nonzero(grad.sum(other) > 0).flatten()
        extent.append(int(nonzero.max() - nonzero.min() + 1))
    return tuple(extent)
