"""The tutorial's three by-hand transposed convolutions: exact worked values and agreement with
PyTorch for many strides, paddings and output paddings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unet_seg import tutorial
from unet_seg.models.blocks import UpBlock

X = np.array([[1, 2], [3, 4]])
K = np.array([[1, 2], [3, 4]])
STRIDE1 = np.array([[1, 4, 4], [6, 20, 16], [9, 24, 16]])
STRIDE2 = np.array([[1, 2, 2, 4], [3, 4, 6, 8], [3, 6, 4, 8], [9, 12, 12, 16]])
WRONG = np.array([[1, 4, 4], [5, 16, 10], [6, 11, 4]])  # a course answer, wrong
METHODS = [
    tutorial.transposed_conv_by_hand,
    tutorial.transposed_conv_as_conv,
    tutorial.transposed_conv_by_matrix,
]


def torch_reference(x, kernel, stride=1, padding=0, output_padding=0) -> np.ndarray:
    out = F.conv_transpose2d(
        torch.as_tensor(np.asarray(x), dtype=torch.float64)[None, None],
        torch.as_tensor(np.asarray(kernel), dtype=torch.float64)[None, None],
        stride=stride,
        padding=padding,
        output_padding=output_padding,
    )
    return out[0, 0].numpy()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("stride", "expected"), [(1, STRIDE1), (2, STRIDE2)])
def test_worked_example_exact(method, stride, expected) -> None:
    out = method(X, K, stride)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float64
    assert not np.array_equal(out[: WRONG.shape[0], : WRONG.shape[1]], WRONG)


def test_torch_agrees_on_worked_example() -> None:
    np.testing.assert_array_equal(torch_reference(X, K, 1), STRIDE1)
    np.testing.assert_array_equal(torch_reference(X, K, 2), STRIDE2)


def test_scatter_steps_stride1_intermediate_sums() -> None:
    steps = tutorial.scatter_steps(X, K, stride=1)
    assert [s.index for s in steps] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [s.offset for s in steps] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [s.value for s in steps] == [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(steps[1].contribution, [[2, 4], [6, 8]])
    np.testing.assert_array_equal(steps[0].output, [[1, 2, 0], [3, 4, 0], [0, 0, 0]])
    np.testing.assert_array_equal(steps[1].output, [[1, 4, 4], [3, 10, 8], [0, 0, 0]])
    np.testing.assert_array_equal(steps[2].output, [[1, 4, 4], [6, 16, 8], [9, 12, 0]])
    np.testing.assert_array_equal(steps[3].output, STRIDE1)


def test_scatter_steps_stride2_offsets_do_not_overlap() -> None:
    steps = tutorial.scatter_steps(X, K, stride=2)
    assert [s.offset for s in steps] == [(0, 0), (0, 2), (2, 0), (2, 2)]
    # Each 2x2 block of the output is exactly one scaled kernel.
    for step in steps:
        r, c = step.offset
        np.testing.assert_array_equal(step.output[r : r + 2, c : c + 2], step.value * K)


def test_zero_insert_and_padded_input() -> None:
    np.testing.assert_array_equal(tutorial.zero_insert(X, 1), X)
    np.testing.assert_array_equal(tutorial.zero_insert(X, 2), [[1, 0, 2], [0, 0, 0], [3, 0, 4]])
    np.testing.assert_array_equal(tutorial.zero_insert(X, (1, 3)), [[1, 0, 0, 2], [3, 0, 0, 4]])
    padded = tutorial.transposed_conv_input(X, (2, 2), stride=1)
    np.testing.assert_array_equal(padded, [[0, 0, 0, 0], [0, 1, 2, 0], [0, 3, 4, 0], [0, 0, 0, 0]])
    padded2 = tutorial.transposed_conv_input(X, (2, 2), stride=2)
    assert padded2.shape == (5, 5)
    np.testing.assert_array_equal(padded2[1:4, 1:4], [[1, 0, 2], [0, 0, 0], [3, 0, 4]])
    assert padded2.sum() == X.sum()
    # padding beyond k - 1 crops the zero-inserted input instead of padding it
    cropped = tutorial.transposed_conv_input(X, (2, 2), stride=3, padding=2)
    np.testing.assert_array_equal(cropped, np.zeros((2, 2)))
    np.testing.assert_array_equal(torch_reference(X, K, 3, 2), [[0]])
    with pytest.raises(ValueError, match="no output"):
        tutorial.transposed_conv_input(X, (2, 2), stride=2, padding=2)


def test_cross_correlate_does_not_flip() -> None:
    np.testing.assert_array_equal(tutorial.cross_correlate(X, K), [[30]])
    np.testing.assert_array_equal(tutorial.cross_correlate(X, K[::-1, ::-1]), [[20]])
    a = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(
        tutorial.cross_correlate(a, np.ones((2, 2)), 2), [[10, 18], [42, 50]]
    )


def test_conv_matrix_stride1_rows_and_product() -> None:
    matrix = tutorial.conv_matrix((3, 3), K)
    assert matrix.shape == (4, 9)
    np.testing.assert_array_equal(matrix[0], [1, 2, 0, 3, 4, 0, 0, 0, 0])
    np.testing.assert_array_equal(matrix[3], [0, 0, 0, 0, 1, 2, 0, 3, 4])
    # Every row holds the kernel once, so every column sum of C.T times x adds up to sum(K).
    np.testing.assert_array_equal(matrix.sum(axis=1), [10] * 4)
    np.testing.assert_array_equal((matrix.T @ X.ravel()).reshape(3, 3), STRIDE1)


def test_conv_matrix_matches_cross_correlation(rng) -> None:
    for shape, kshape, stride in [
        ((5, 6), (3, 2), 1),
        ((7, 7), (3, 3), 2),
        ((6, 9), (2, 3), (2, 3)),
    ]:
        a = rng.normal(size=shape)
        k = rng.normal(size=kshape)
        expected = tutorial.cross_correlate(a, k, stride)
        got = tutorial.conv_matrix(shape, k, stride) @ a.ravel()
        np.testing.assert_allclose(got, expected.ravel(), rtol=0, atol=1e-12)


def test_transposed_conv_is_the_adjoint(rng) -> None:
    """<conv(a), y> == <a, conv_transpose(y)> for every a: the defining property of method 3."""
    y = rng.normal(size=(3, 4))
    k = rng.normal(size=(3, 3))
    out = tutorial.transposed_conv_by_hand(y, k, stride=2)
    a = rng.normal(size=out.shape)
    lhs = float((tutorial.cross_correlate(a, k, 2) * y).sum())
    np.testing.assert_allclose(lhs, float((a * out).sum()), rtol=1e-12)


CASES = [
    (shape, kshape, stride, padding, op)
    for shape, kshape in [((2, 2), (2, 2)), ((3, 4), (3, 3)), ((4, 3), (2, 3)), ((1, 5), (4, 1))]
    for stride, padding, op in [
        (1, 0, 0),
        (2, 0, 0),
        (2, 0, 1),
        (2, 1, 1),
        (3, 1, 2),
        ((2, 1), (1, 0), (1, 0)),
    ]
]


@pytest.mark.parametrize(("shape", "kshape", "stride", "padding", "op"), CASES)
def test_all_methods_match_torch(rng, shape, kshape, stride, padding, op) -> None:
    x = rng.integers(-5, 6, size=shape)
    k = rng.integers(-5, 6, size=kshape)
    try:
        expected = torch_reference(x, k, stride, padding, op)
    except RuntimeError:
        for method in METHODS:
            with pytest.raises(ValueError, match="padding"):
                method(x, k, stride, padding, op)
        return
    for method in METHODS:
        np.testing.assert_array_equal(method(x, k, stride, padding, op), expected)
    s, p, o = (tutorial._pair(v, "v") for v in (stride, padding, op))
    sizes = tuple(
        tutorial.transposed_output_size(n, kk, st, pp, oo)
        for n, kk, st, pp, oo in zip(shape, kshape, s, p, o, strict=True)
    )
    assert expected.shape == sizes


@pytest.mark.parametrize(
    ("size", "k", "s", "p", "op", "d", "expected"),
    [
        (2, 2, 1, 0, 0, 1, 3),
        (2, 2, 2, 0, 0, 1, 4),
        (28, 2, 2, 0, 0, 1, 56),  # the paper's lowest up-convolution: 28 -> 56
        (5, 3, 2, 1, 1, 1, 10),
        (5, 3, 2, 1, 0, 1, 9),
        (4, 3, 1, 1, 0, 2, 6),
    ],
)
def test_transposed_output_size(size, k, s, p, op, d, expected) -> None:
    assert tutorial.transposed_output_size(size, k, s, p, op, d) == expected
    layer = torch.nn.ConvTranspose1d(1, 1, k, s, p, op, dilation=d)
    assert layer(torch.zeros(1, 1, size)).shape[-1] == expected


def test_overlap_count_checkerboard() -> None:
    np.testing.assert_array_equal(tutorial.overlap_count((3, 3), (2, 2), 2), np.ones((6, 6)))
    counts = tutorial.overlap_count((3, 3), (3, 3), 2)
    assert counts.shape == (7, 7)
    np.testing.assert_array_equal(counts[0], [1, 1, 2, 1, 2, 1, 1])
    np.testing.assert_array_equal(counts[2], [2, 2, 4, 2, 4, 2, 2])
    assert counts.max() == 4
    # padding=1 crops the one-copy border; the interior still alternates 1, 2, 4
    assert set(np.unique(tutorial.overlap_count((3, 3), (3, 3), 2, 1))) == {1.0, 2.0, 4.0}


def test_unet_up_block_is_this_operation() -> None:
    block = UpBlock(spatial_dims=2, in_channels=2, out_channels=1)
    with torch.no_grad():
        block.up.weight.zero_()
        block.up.weight[0, 0] = torch.as_tensor(K, dtype=torch.float32)
        block.up.bias.zero_()
        x = torch.zeros(1, 2, 2, 2)
        x[0, 0] = torch.as_tensor(X, dtype=torch.float32)
        out = block.up(x)
    np.testing.assert_array_equal(out[0, 0].numpy(), STRIDE2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stride": 0}, "stride"),
        ({"padding": -1}, "padding"),
        ({"stride": 2, "output_padding": 2}, "output_padding"),
        ({"output_padding": 1}, "output_padding"),
        ({"stride": (1, 2, 3)}, "stride"),
        ({"padding": 2}, "padding"),
    ],
)
def test_bad_arguments_raise(kwargs, match) -> None:
    for method in METHODS:
        with pytest.raises(ValueError, match=match):
            method(X, K, **kwargs)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="2D"):
        tutorial.transposed_conv_by_hand(np.ones(3), K)
    with pytest.raises(ValueError, match="kernel"):
        tutorial.transposed_conv_by_hand(X, np.ones((0, 2)))
    with pytest.raises(ValueError, match="larger"):
        tutorial.cross_correlate(X, np.ones((3, 3)))
    with pytest.raises(ValueError, match="larger"):
        tutorial.conv_matrix((2, 2), np.ones((3, 1)))
    with pytest.raises(ValueError, match="output_padding"):
        tutorial.transposed_output_size(4, 2, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="no output"):
        tutorial.transposed_output_size(1, 2, padding=1)


def test_methods_agree_on_random_integers() -> None:
    rng = np.random.default_rng(7)
    for stride, kh, kw in itertools.product((1, 2, 3), (1, 2, 3), (1, 2)):
        x = rng.integers(-9, 10, size=(3, 2))
        k = rng.integers(-9, 10, size=(kh, kw))
        ref = torch_reference(x, k, stride)
        for method in METHODS:
            np.testing.assert_array_equal(method(x, k, stride), ref)
        # Without padding every kernel copy lands whole: the output sums to sum(x) * sum(k).
        assert ref.sum() == x.sum() * k.sum()
