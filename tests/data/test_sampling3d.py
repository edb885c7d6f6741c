"""Tests for unet_seg.data.sampling3d: exact values against scipy and the grid_sample path."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from unet_seg.data.elastic import _prefilter, _sample_cubic
from unet_seg.data.patches import reflect_index
from unet_seg.data.sampling3d import (
    fold_mirror,
    mirror_pad,
    one_thread,
    sample_cubic_3d,
    sample_linear_3d,
    sample_nearest,
    sort_voxels,
)


def random_coords(rng: np.random.Generator, n: int, size, out) -> torch.Tensor:
    """``(n, 3, *out)`` points spread over the volume and up to one size beyond each border."""
    spread = [rng.uniform(-s, 2 * s - 1, size=(n, *out)) for s in size]
    return torch.as_tensor(np.stack(spread, axis=1), dtype=torch.float32)


def test_fold_mirror_agrees_with_reflect_index_and_is_continuous() -> None:
    points = torch.arange(-40, 41, dtype=torch.float64)
    np.testing.assert_array_equal(
        fold_mirror(points, 7).numpy(), reflect_index(np.arange(-40, 41), 7)
    )
    halves = fold_mirror(torch.tensor([-0.5, 6.5, 12.25]), 7)
    torch.testing.assert_close(halves, torch.tensor([0.5, 5.5, 0.25]))


def test_mirror_pad_repeats_no_edge_voxel_even_on_two_voxel_axes() -> None:
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 1, 2, 3, 4)
    padded = mirror_pad(x)
    assert padded.shape == (1, 1, 5, 6, 7)
    z, y, xs = (reflect_index(np.arange(-1, s + 2), s) for s in (2, 3, 4))
    np.testing.assert_array_equal(padded[0, 0].numpy(), x[0, 0].numpy()[np.ix_(z, y, xs)])


@pytest.mark.parametrize("size", [(7, 9, 11), (2, 5, 3)])
def test_cubic_equals_scipy_map_coordinates(rng: np.random.Generator, size) -> None:
    volume = rng.normal(size=(2, 2, *size))  # (N, C, *size), white noise: no smoothing hides taps
    coords = random_coords(rng, 2, size, (5, 6, 7))
    coef = _prefilter(torch.as_tensor(volume, dtype=torch.float32))
    out = sample_cubic_3d(coef, coords)
    assert out.shape == (2, 2, 5, 6, 7)
    for n in range(2):
        for c in range(2):
            ref = scipy.ndimage.map_coordinates(
                volume[n, c], coords[n].double().numpy(), order=3, mode="mirror"
            )
            np.testing.assert_allclose(out[n, c].numpy(), ref, atol=5e-5)


def test_cubic_equals_the_grid_sample_path(rng: np.random.Generator) -> None:
    size = (6, 10, 8)
    coef = torch.as_tensor(rng.normal(size=(2, 3, *size)), dtype=torch.float32)
    coords = random_coords(rng, 2, size, size)
    torch.testing.assert_close(
        sample_cubic_3d(coef, coords), _sample_cubic(coef, coords, size), atol=5e-5, rtol=0
    )


@pytest.mark.parametrize("size", [(6, 9, 7), (2, 4, 3)])
def test_linear_equals_scipy_and_grid_sample(rng: np.random.Generator, size) -> None:
    volume = torch.as_tensor(rng.normal(size=(2, 2, *size)), dtype=torch.float32)
    coords = random_coords(rng, 2, size, (4, 5, 6))
    out = sample_linear_3d(volume, coords)
    assert out.shape == (2, 2, 4, 5, 6)
    for n in range(2):
        ref = scipy.ndimage.map_coordinates(
            volume[n, 1].double().numpy(), coords[n].double().numpy(), order=1, mode="mirror"
        )
        np.testing.assert_allclose(out[n, 1].numpy(), ref, atol=2e-5)
    torch.testing.assert_close(out, grid_sample_3d(volume, coords, "bilinear"), atol=2e-5, rtol=0)


def grid_sample_3d(volume: torch.Tensor, coords: torch.Tensor, mode: str) -> torch.Tensor:
    """The reference: grid_sample at voxel ``coords`` ``(N, 3, *out)``, mirror borders."""
    size = volume.shape[2:]
    scale = torch.tensor([2.0 / (s - 1) for s in size]).view(1, 3, 1, 1, 1)
    grid = torch.movedim(coords * scale - 1, 1, -1).flip(-1)  # grid_sample's (x, y, z) in [-1, 1]
    return F.grid_sample(volume, grid, mode=mode, padding_mode="reflection", align_corners=True)


def test_nearest_equals_scipy_and_grid_sample(rng: np.random.Generator) -> None:
    size = (5, 8, 6)
    volume = torch.as_tensor(rng.integers(0, 50, size=(2, 2, *size)), dtype=torch.float32)
    coords = random_coords(rng, 2, size, (4, 5, 3))
    out = sample_nearest(volume, coords)
    for n in range(2):
        ref = scipy.ndimage.map_coordinates(
            volume[n, 0].numpy(), coords[n].double().numpy(), order=0, mode="mirror"
        )
        np.testing.assert_array_equal(out[n, 0].numpy(), ref)
    torch.testing.assert_close(out, grid_sample_3d(volume, coords, "nearest"), atol=0, rtol=0)


def test_nearest_works_in_2d(rng: np.random.Generator) -> None:
    image = torch.as_tensor(rng.normal(size=(1, 1, 6, 7)), dtype=torch.float32)
    coords = torch.tensor([[[[-1.2, 6.9]], [[3.1, 13.0]]]])  # (1, 2, 1, 2): (y, x) per point
    out = sample_nearest(image, coords)
    # y -1.2 -> 1.2 -> 1, x 3.1 -> 3; y 6.9 -> 3.1 -> 3, x 13 -> -1 -> 1
    torch.testing.assert_close(out[0, 0, 0], image[0, 0, [1, 3], [3, 1]])


def test_one_sort_serves_both_samplers(rng: np.random.Generator) -> None:
    size = (5, 7, 6)
    volume = torch.as_tensor(rng.normal(size=(2, 1, *size)), dtype=torch.float32)
    coords = random_coords(rng, 2, size, (3, 4, 5))
    voxels = sort_voxels(coords, size)
    assert voxels.n == 2 and voxels.out_shape == (3, 4, 5)
    assert np.all(np.diff(torch.floor(voxels.zyx[0]).numpy()[: voxels.bounds[size[0] + 3]]) >= 0)
    torch.testing.assert_close(sample_linear_3d(volume, voxels), sample_linear_3d(volume, coords))
    torch.testing.assert_close(sample_cubic_3d(volume, voxels), sample_cubic_3d(volume, coords))
    with pytest.raises(ValueError, match="sorted for"):
        sample_linear_3d(volume[:, :, :4], voxels)


def test_one_thread_inside_and_the_count_restored_after() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        sample_nearest(torch.zeros(1, 1, 3, 3, 3), torch.zeros(1, 3, 2, 2, 2))  # decorated
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_bad_shapes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="coords"):
        sample_cubic_3d(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="coords"):
        sample_nearest(torch.zeros(1, 1, 4, 4, 4), torch.zeros(2, 3, 3))
