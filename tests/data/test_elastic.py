"""Tests for unet_seg.data.elastic: the torch backend against elasticdeform, and invariants."""

from __future__ import annotations

import elasticdeform
import numpy as np
import pytest
import scipy.ndimage
import torch

from unet_seg.data.elastic import (
    _prefilter,
    control_point_weights,
    deform_grid_torch,
    deformation_coords,
    sampling_grid,
    warp,
)
from unet_seg.data.transforms import elastic_deform, rotation_scaling_affine

BACKENDS = ("elasticdeform", "torch")


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], blur: float = 3.0) -> np.ndarray:
    field = scipy.ndimage.gaussian_filter(rng.normal(size=shape), blur)
    return (field / field.std()).astype(np.float32)


def test_control_point_weights_interpolate_the_control_points() -> None:
    weights = control_point_weights(21, 3)  # control points at voxels 0, 10, 20
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(weights[[0, 10, 20]], np.eye(3), atol=1e-12)


def test_dense_matrix_prefilter_equals_scipy(rng: np.random.Generator) -> None:
    x = torch.as_tensor(rng.normal(size=(2, 1, 9, 12, 7)), dtype=torch.float32)
    torch.testing.assert_close(
        _prefilter(x, dense=True), _prefilter(x, dense=False), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("shape", [(48, 56), (12, 20, 24)])
@pytest.mark.parametrize("order", [3, 1])
def test_torch_backend_matches_elasticdeform(rng: np.random.Generator, shape, order) -> None:
    image = smooth_field(rng, shape)
    label = (image > 0).astype(np.int64) + (image > 1)
    displacement = rng.normal(0.0, 10.0, size=(len(shape), *[3] * len(shape)))
    ref = elasticdeform.deform_grid([image, label], displacement, order=[order, 0], mode="mirror")
    out = deform_grid_torch([image, label], displacement, orders=(order, 0))
    # exact same interpolation up to float32 rounding, borders included
    np.testing.assert_allclose(out[0], ref[0], atol=1e-4)
    assert out[0].dtype == np.float32 and out[1].dtype == np.int64
    # order 0: equal but where a float32 coordinate rounds the other way at a half-voxel tie
    assert np.mean(out[1] == ref[1]) >= 0.999


def test_torch_backend_matches_elasticdeform_with_affine(rng: np.random.Generator) -> None:
    image = smooth_field(rng, (40, 50))
    displacement = rng.normal(0.0, 5.0, size=(2, 3, 4))
    angle = np.radians(12.0)
    affine = np.array([[np.cos(angle), -np.sin(angle), 3.0], [np.sin(angle), np.cos(angle), -2.0]])
    affine[:, :2] *= 1.1
    ref = elasticdeform.deform_grid(image, displacement, order=3, mode="mirror", affine=affine)
    out = deform_grid_torch([image], displacement, orders=(3,), affine=affine)[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)


@pytest.mark.parametrize("order", [3, 1])
def test_3d_with_affine_matches_elasticdeform(rng: np.random.Generator, order: int) -> None:
    image = smooth_field(rng, (10, 18, 16))
    displacement = rng.normal(0.0, 4.0, size=(3, 3, 3, 3))
    affine = rotation_scaling_affine(image.shape, 12.0, 1.1, (1, 2))
    ref = elasticdeform.deform_grid(image, displacement, order=order, mode="mirror", affine=affine)
    out = deform_grid_torch([image], displacement, orders=(order,), affine=affine)[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_inplane_axes_match_elasticdeform_and_treat_slices_alike(rng) -> None:
    plane = smooth_field(rng, (32, 40))
    stack = np.stack([plane, plane, 2 * plane])  # (z, y, x)
    image, label = stack[None], (stack > 0).astype(np.int64)  # (C, z, y, x), (z, y, x)
    displacement = rng.normal(0.0, 8.0, size=(2, 3, 3))
    ref = elasticdeform.deform_grid(
        [image, label], displacement, order=[3, 0], mode="mirror", axis=[(2, 3), (1, 2)]
    )
    out, out_label = deform_grid_torch([image, label], displacement, axes=(1, 2))
    np.testing.assert_allclose(out, ref[0], atol=1e-4)
    assert np.mean(out_label == ref[1]) >= 0.99
    np.testing.assert_allclose(out[0, 0], out[0, 1], atol=1e-6)
    np.testing.assert_allclose(out[0, 2], 2 * out[0, 0], atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(30, 34), (10, 14, 18)])
def test_zero_displacement_is_identity(rng: np.random.Generator, backend, shape) -> None:
    image = np.stack([smooth_field(rng, shape), smooth_field(rng, shape)])
    label = rng.integers(0, 4, size=shape)
    weight = rng.uniform(1, 5, size=shape).astype(np.float32)
    out = elastic_deform([image, label, weight], sigma=0.0, orders=(3, 0, 1), backend=backend)
    np.testing.assert_allclose(out[0], image, atol=2e-5)
    np.testing.assert_array_equal(out[1], label)
    np.testing.assert_allclose(out[2], weight, rtol=1e-5, atol=2e-5)  # float32 grid


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(40, 44), (12, 16, 20)])
def test_labels_keep_their_value_set(rng: np.random.Generator, backend, shape) -> None:
    field = smooth_field(rng, shape)
    label = np.select([field < -0.5, field > 0.8], [3, 7], default=0).astype(np.int64)
    out = elastic_deform([field, label], sigma=10.0, rng=rng, backend=backend)[1]
    assert out.dtype == np.int64
    assert set(np.unique(out)) <= {0, 3, 7}
    assert not np.array_equal(out, label)  # it did deform


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(64, 64), (16, 32, 32)])
def test_image_and_label_stay_aligned(rng: np.random.Generator, backend, shape) -> None:
    image = smooth_field(rng, shape, blur=6.0)
    label = (image > 0).astype(np.int64)
    out_image, out_label = elastic_deform([image, label], sigma=10.0, rng=rng, backend=backend)
    # Nearest (label) and cubic (image) sample points differ by < 0.71 voxel (~1 after the
    # deformation's stretch), so further than max|grad| from zero the thresholded image must
    # equal the label exactly; a shift of a few voxels between the two would break this.
    steepest = np.sqrt(sum(g**2 for g in np.gradient(image))).max()
    confident = np.abs(out_image) > steepest
    assert confident.mean() > 0.4
    np.testing.assert_array_equal((out_image > 0)[confident], out_label[confident].astype(bool))


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_deformation(backend) -> None:
    image = smooth_field(np.random.default_rng(1), (32, 32))

    def run(seed: int) -> np.ndarray:
        return elastic_deform(
            [image], orders=(3,), rng=np.random.default_rng(seed), backend=backend
        )

    np.testing.assert_array_equal(run(5)[0], run(5)[0])
    assert not np.allclose(run(5)[0], run(6)[0])


def test_backends_agree_for_the_same_seed() -> None:
    image = smooth_field(np.random.default_rng(2), (40, 40))
    outs = [
        elastic_deform([image], orders=(3,), rng=np.random.default_rng(3), backend=b)[0]
        for b in BACKENDS
    ]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-4)


@pytest.mark.parametrize("shape", [(24, 28), (9, 12, 14)])
@pytest.mark.parametrize("order", [3, 1, 0])
def test_batched_warp_equals_single_samples(rng: np.random.Generator, order: int, shape) -> None:
    dims = len(shape)
    images = torch.as_tensor(rng.integers(0, 3, size=(2, 1, *shape)), dtype=torch.float32)
    displacement = torch.as_tensor(rng.normal(0, 6, size=(2, dims, *[3] * dims)))
    displacement = displacement.to(torch.float32)
    batched = warp([images], displacement, orders=(order,))[0]
    for n in range(2):
        single = warp([images[n : n + 1]], displacement[n : n + 1], orders=(order,))[0]
        torch.testing.assert_close(batched[n : n + 1], single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(20, 30), (9, 14, 17)])
def test_fast_grid_equals_normalised_coordinates(rng: np.random.Generator, shape) -> None:
    dims = len(shape)
    displacement = torch.as_tensor(rng.normal(0, 5, size=(2, dims, *[4] * dims)))
    affine = np.concatenate([np.eye(dims) * 1.1 + 0.05, np.ones((dims, 1))], axis=1)
    for a in (None, affine):
        coords = deformation_coords(displacement, shape, a)  # (N, D, *shape), voxels
        scale = torch.tensor([2.0 / (s - 1) for s in shape], dtype=coords.dtype)
        expected = torch.movedim(coords * scale.view(1, -1, *[1] * dims) - 1, 1, -1).flip(-1)
        torch.testing.assert_close(sampling_grid(displacement, shape, a), expected)


def test_bad_arguments_raise_value_error() -> None:
    image = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="backend"):
        elastic_deform([image, image], backend="cv2")
    with pytest.raises(ValueError, match="spatial shape"):
        elastic_deform([image, np.zeros((8, 9))])
    with pytest.raises(ValueError, match="axes"):
        elastic_deform([image, image], axes=(1, 0))
    with pytest.raises(ValueError, match="orders"):
        elastic_deform([image, image], orders=(3,))
    with pytest.raises(ValueError, match="orders"):
        deform_grid_torch([image], np.zeros((2, 3, 3)), orders=(2,))
