"""Spatial size arithmetic of the U-Net, per axis, without building a network.

A U-Net with ``depth`` levels pools ``depth - 1`` times. In valid mode each level's two 3x3 convs
trim 4 voxels, and every map that is pooled must be even, so only some input sizes work: for the
paper's 5 levels they are 16 apart (..., 556, 572, 588, ...) and the output is always the input
minus 184. In same mode the size is kept and must divide by ``2 ** (depth - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

_CONV_TRIM = 4  # two 3x3 valid convs per block, 2 voxels each


def _trace_axis(size: int, depth: int, padding: str, pooled: bool) -> int | None:
    """Output size along one axis, or ``None`` where the input size does not work."""
    factor = 2 if pooled else 1
    if padding == "same":
        return size if size > 0 and size % factor ** (depth - 1) == 0 else None
    if padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    for _ in range(depth - 1):
        size -= _CONV_TRIM
        if size <= 0 or size % factor:
            return None
        size //= factor
    size -= _CONV_TRIM
    if size <= 0:
        return None
    for _ in range(depth - 1):
        size = size * factor - _CONV_TRIM
        if size <= 0:
            return None
    return size


def is_valid_size(size: int, depth: int, padding: str = "valid", pooled: bool = True) -> bool:
    """Whether an input of ``size`` voxels along one axis goes through the network cleanly."""
    return _trace_axis(size, depth, padding, pooled) is not None


def nearest_valid_sizes(
    size: int, depth: int, padding: str = "valid", pooled: bool = True
) -> tuple[int | None, int]:
    """The closest working input sizes below and above ``size`` (below is ``None`` if none)."""
    lower = next(
        (s for s in range(size - 1, 0, -1) if is_valid_size(s, depth, padding, pooled)), None
    )
    upper = size + 1
    while not is_valid_size(upper, depth, padding, pooled):
        upper += 1
    return lower, upper


def smallest_valid_size(
    min_size: int, depth: int, padding: str = "valid", pooled: bool = True
) -> int:
    """The smallest working input size that is at least ``min_size``."""
    size = max(min_size, 1)
    while not is_valid_size(size, depth, padding, pooled):
        size += 1
    return size


def output_shape(
    input_shape: Sequence[int],
    depth: int,
    padding: str = "valid",
    pooled_axes: Sequence[bool] | None = None,
) -> tuple[int, ...]:
    """Output spatial shape of a U-Net for ``input_shape``; ``ValueError`` names nearby valid sizes.

    ``pooled_axes`` marks the axes that are pooled (all by default; in-plane pooling of an
    anisotropic 3D stack leaves the first axis unpooled).
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    pooled_axes = [True] * len(input_shape) if pooled_axes is None else list(pooled_axes)
    if len(pooled_axes) != len(input_shape):
        raise ValueError(f"pooled_axes {pooled_axes} does not match input shape {input_shape}")
    out = []
    for axis, (size, pooled) in enumerate(zip(input_shape, pooled_axes, strict=True)):
        result = _trace_axis(int(size), depth, padding, pooled)
        if result is None:
            lower, upper = nearest_valid_sizes(int(size), depth, padding, pooled)
            nearest = f"{lower} or {upper}" if lower is not None else f"{upper}"
            rule = (
                "every pooled feature map must have an even size"
                if padding == "valid"
                else f"the size must divide by {2 ** (depth - 1) if pooled else 1}"
            )
            raise ValueError(
                f"input size {size} on axis {axis} does not fit a {depth}-level U-Net in "
                f"{padding} mode ({rule}); nearest valid sizes: {nearest}"
            )
        out.append(result)
    return tuple(out)


def size_rule(depth: int, padding: str = "valid", pooled: bool = True) -> tuple[int, int, int]:
    """``(minimum, step, margin)`` of one axis: the accepted input sizes are exactly
    ``minimum + n * step`` (n = 0, 1, ...) and the output is the input minus ``margin``.

    Every size trace is affine in the input size, so the sizes that survive each pooling are one
    arithmetic progression with step ``2 ** (depth - 1)`` on pooled axes (1 otherwise): for the
    paper's valid 5-level net ``16 n + 188``, i.e. 188, 204, ..., 572 (``16 k + 12``), margin 184.
    """
    minimum = smallest_valid_size(1, depth, padding, pooled)
    step = 2 ** (depth - 1) if pooled else 1
    output = _trace_axis(minimum, depth, padding, pooled)
    return minimum, step, minimum - int(output)
