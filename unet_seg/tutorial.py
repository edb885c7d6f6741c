"""Transposed convolution in 2D worked out three ways by hand, for the tutorial notebook.

Each function takes plain 2D arrays, single channel, no batch axis: an input ``x`` of shape
``(H, W)`` and a kernel of shape ``(kH, kW)``, and returns float64 arrays. They follow PyTorch's
``conv_transpose2d`` conventions (``stride``, ``padding``, ``output_padding``), so the notebook can
check each of them against ``torch.nn.functional.conv_transpose2d``:

1. :func:`transposed_conv_by_hand` scatters a scaled copy of the kernel per input value
   (:func:`scatter_steps` keeps every intermediate sum for display);
2. :func:`transposed_conv_as_conv` is an ordinary cross-correlation of the zero-inserted,
   zero-padded input (:func:`transposed_conv_input`) with the kernel flipped in both axes;
3. :func:`transposed_conv_by_matrix` multiplies by the transpose of the matrix of the strided
   convolution (:func:`conv_matrix`) whose adjoint it is.

The name comes from 3: a convolution is a linear map ``y = C x``; the transposed convolution is
``C.T``, which maps the convolution's output shape back to its input shape (not its inverse).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

Pair = tuple[int, int]


def _pair(value: int | Pair, name: str) -> Pair:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _as_2d(array: ArrayLike, name: str) -> np.ndarray:
    out = np.asarray(array, dtype=np.float64)
    if out.ndim != 2 or 0 in out.shape:
        raise ValueError(f"{name} must be a non-empty 2D array (H, W), got shape {out.shape}")
    return out


def _check(
    stride: int | Pair, padding: int | Pair, output_padding: int | Pair
) -> tuple[Pair, Pair, Pair]:
    s, p = _pair(stride, "stride"), _pair(padding, "padding")
    op = _pair(output_padding, "output_padding")
    if min(s) < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    if min(p) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    if min(op) < 0 or any(o >= st for o, st in zip(op, s, strict=True)):
        # As in PyTorch: output_padding only picks one of the sizes a strided conv maps onto the
        # same output size, so it must be smaller than the stride.
        raise ValueError(f"output_padding must be in [0, stride), got {output_padding!r}")
    return s, p, op


def transposed_output_size(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length along one axis: ``(size - 1) * stride - 2 * padding + dilation * (kernel_size
    - 1) + output_padding + 1``, which is ``(H - 1) * s - 2p + k (+ output_padding)`` without
    dilation."""
    if size < 1 or kernel_size < 1 or stride < 1 or padding < 0 or dilation < 1:
        raise ValueError(
            f"need size, kernel_size, stride, dilation >= 1 and padding >= 0, got size={size}, "
            f"kernel_size={kernel_size}, stride={stride}, padding={padding}, dilation={dilation}"
        )
    if not 0 <= output_padding < max(stride, dilation):
        raise ValueError(
            f"output_padding must be in [0, max(stride, dilation)), got {output_padding}"
        )
    out = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if out < 1:
        raise ValueError(f"padding {padding} leaves no output for size {size}")
    return out


def _full_shape(x: np.ndarray, kernel: np.ndarray, stride: Pair, output_padding: Pair) -> Pair:
    """Shape of the uncropped output: every kernel copy fits, plus the output padding rows/cols."""
    return tuple(  # type: ignore[return-value]
        (n - 1) * s + k + op
        for n, k, s, op in zip(x.shape, kernel.shape, stride, output_padding, strict=True)
    )


def _crop(full: np.ndarray, padding: Pair) -> np.ndarray:
    """Padding of a transposed conv removes ``padding`` rows/cols from each border of the output."""
    (ph, pw), (h, w) = padding, full.shape
    if h - 2 * ph < 1 or w - 2 * pw < 1:
        raise ValueError(f"padding {padding} leaves no output of the full {full.shape}")
    return full[ph : h - ph, pw : w - pw]


@dataclass(frozen=True)
class ScatterStep:
    """One step of the by-hand method: ``value`` (input at ``index``) times the kernel is added into
    the full output at ``offset`` = ``index * stride``; ``output`` is the running sum afterwards."""

    index: Pair
    value: float
    offset: Pair
    contribution: np.ndarray  # (kH, kW): value * kernel
    output: np.ndarray  # the full output (before cropping the padding) after this step


def scatter_steps(
    x: ArrayLike, kernel: ArrayLike, stride: int | Pair = 1, output_padding: int | Pair = 0
) -> list[ScatterStep]:
    """The by-hand method step by step, input values in row-major order.

    ``x``: ``(H, W)``, ``kernel``: ``(kH, kW)``; each step's ``output`` has the full shape
    ``((H - 1) * s + kH + op, (W - 1) * s + kW + op)``.
    """
    x, kernel = _as_2d(x, "x"), _as_2d(kernel, "kernel")
    s, _, op = _check(stride, 0, output_padding)
    output = np.zeros(_full_shape(x, kernel, s, op))
    kh, kw = kernel.shape
    steps = []
    for (i, j), value in np.ndenumerate(x):
        r, c = i * s[0], j * s[1]
        contribution = value * kernel
        output[r : r + kh, c : c + kw] += contribution
        steps.append(ScatterStep((i, j), float(value), (r, c), contribution, output.copy()))
    return steps


def transposed_conv_by_hand(
    x: ArrayLike,
    kernel: ArrayLike,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    output_padding: int | Pair = 0,
) -> np.ndarray:
    """Method 1: sum of kernel copies scaled by the input values, placed ``stride`` apart, with
    ``padding`` rows/cols cropped off each border. ``(H, W) -> (H_out, W_out)`` as in
    :func:`transposed_output_size`."""
    _, p, _ = _check(stride, padding, output_padding)
    return _crop(scatter_steps(x, kernel, stride, output_padding)[-1].output, p)


def zero_insert(x: ArrayLike, stride: int | Pair) -> np.ndarray:
    """Put ``stride - 1`` zeros between neighbouring values: ``(H, W) -> ((H - 1) s + 1, (W - 1) s
    + 1)``. With stride 1 nothing is inserted."""
    x = _as_2d(x, "x")
    s, _, _ = _check(stride, 0, 0)
    out = np.zeros(((x.shape[0] - 1) * s[0] + 1, (x.shape[1] - 1) * s[1] + 1))
    out[:: s[0], :: s[1]] = x
    return out


def transposed_conv_input(
    x: ArrayLike,
    kernel_shape: Pair,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    output_padding: int | Pair = 0,
) -> np.ndarray:
    """The array the equivalent ordinary convolution slides over: ``x`` zero-inserted, then
    ``k - 1 - padding`` zeros around it (cropped instead where negative) and ``output_padding``
    more zeros at the bottom/right."""
    s, p, op = _check(stride, padding, output_padding)
    k = _pair(tuple(kernel_shape), "kernel_shape")
    out = zero_insert(x, s)
    for axis in range(2):
        border = k[axis] - 1 - p[axis]
        before, after = max(border, 0), max(border, 0) + op[axis]
        widths = [(0, 0), (0, 0)]
        widths[axis] = (before, after)
        out = np.pad(out, widths)
        if border < 0:  # padding larger than k - 1: the first/last rows are never reached
            n = out.shape[axis]
            out = out.take(range(-border, n + border), axis=axis)
        if out.shape[axis] < k[axis]:
            raise ValueError(f"padding {padding} leaves no output for input shape {np.shape(x)}")
    return out


def cross_correlate(x: ArrayLike, kernel: ArrayLike, stride: int | Pair = 1) -> np.ndarray:
    """What deep-learning libraries call convolution: the kernel (not flipped) slides over ``x``
    without padding, ``stride`` apart, each output is a sum of products.
    ``(H, W) -> ((H - kH) // s + 1, (W - kW) // s + 1)``."""
    x, kernel = _as_2d(x, "x"), _as_2d(kernel, "kernel")
    s, _, _ = _check(stride, 0, 0)
    kh, kw = kernel.shape
    if kh > x.shape[0] or kw > x.shape[1]:
        raise ValueError(f"kernel {kernel.shape} is larger than the input {x.shape}")
    windows = np.lib.stride_tricks.sliding_window_view(x, kernel.shape)[:: s[0], :: s[1]]
    return np.einsum("ijkl,kl->ij", windows, kernel)


def transposed_conv_as_conv(
    x: ArrayLike,
    kernel: ArrayLike,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    output_padding: int | Pair = 0,
) -> np.ndarray:
    """Method 2: stride-1 cross-correlation of :func:`transposed_conv_input` with the kernel
    flipped up-down and left-right. ``(H, W) -> (H_out, W_out)``."""
    kernel = _as_2d(kernel, "kernel")
    padded = transposed_conv_input(x, kernel.shape, stride, padding, output_padding)
    return cross_correlate(padded, kernel[::-1, ::-1])


def conv_matrix(input_shape: Pair, kernel: ArrayLike, stride: int | Pair = 1) -> np.ndarray:
    """The matrix ``C`` of :func:`cross_correlate` on inputs of ``input_shape`` = ``(H, W)``:
    ``cross_correlate(a, kernel, stride).ravel() == C @ a.ravel()``. Shape
    ``(H_out * W_out, H * W)``, one row per output value holding the kernel at that window's
    positions."""
    kernel = _as_2d(kernel, "kernel")
    s, _, _ = _check(stride, 0, 0)
    h, w = _pair(tuple(input_shape), "input_shape")
    kh, kw = kernel.shape
    if kh > h or kw > w:
        raise ValueError(f"kernel {kernel.shape} is larger than the input {(h, w)}")
    out_h, out_w = (h - kh) // s[0] + 1, (w - kw) // s[1] + 1
    matrix = np.zeros((out_h * out_w, h * w))
    for row, (i, j) in enumerate(np.ndindex(out_h, out_w)):
        window = np.zeros((h, w))
        window[i * s[0] : i * s[0] + kh, j * s[1] : j * s[1] + kw] = kernel
        matrix[row] = window.ravel()
    return matrix


def transposed_conv_by_matrix(
    x: ArrayLike,
    kernel: ArrayLike,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    output_padding: int | Pair = 0,
) -> np.ndarray:
    """Method 3: ``C.T @ x.ravel()`` where ``C`` is the :func:`conv_matrix` of the strided
    convolution that maps the full output shape down to ``x``'s shape; then ``padding`` is cropped
    (the transpose of zero-padding is cropping). ``(H, W) -> (H_out, W_out)``."""
    x, kernel = _as_2d(x, "x"), _as_2d(kernel, "kernel")
    s, p, op = _check(stride, padding, output_padding)
    full = _full_shape(x, kernel, s, op)
    matrix = conv_matrix(full, kernel, s)
    return _crop((matrix.T @ x.ravel()).reshape(full), p)


def overlap_count(
    input_shape: Pair, kernel_shape: Pair, stride: int | Pair = 1, padding: int | Pair = 0
) -> np.ndarray:
    """How many kernel copies land on each output position: the transposed convolution of an
    all-ones input with an all-ones kernel. Uneven counts are the checkerboard pattern; they are all
    1 when kernel size equals stride."""
    ones_in = np.ones(_pair(tuple(input_shape), "input_shape"))
    ones_k = np.ones(_pair(tuple(kernel_shape), "kernel_shape"))
    return transposed_conv_by_hand(ones_in, ones_k, stride, padding)
