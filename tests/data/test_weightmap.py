"""Tests for unet_seg.data.weightmap: the U-Net paper's weight map (Eq. 2)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from unet_seg.data.weightmap import class_weight_map, nearest_two_distances, unet_weight_map


def brute_force_weight_map(labels, w0, sigma, spacing=None, foreground=1) -> np.ndarray:
    """Eq. 2 with a full distance transform per object: slow, obviously right."""
    objects, count = scipy.ndimage.label(labels == foreground)
    weights = np.ones(labels.shape)
    if count < 2:
        return weights
    distances = np.sort(
        [
            scipy.ndimage.distance_transform_edt(objects != i, sampling=spacing)
            for i in range(1, count + 1)
        ],
        axis=0,
    )
    border = w0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))
    return weights + np.where(objects == 0, border, 0.0)


def two_squares() -> np.ndarray:
    labels = np.zeros((12, 20), dtype=np.int64)
    labels[3:9, 2:8] = 1  # columns 2..7
    labels[3:9, 10:16] = 1  # columns 10..15: a gap of two columns (8, 9)
    return labels


def test_two_squares_exact_values() -> None:
    labels = two_squares()
    w = unet_weight_map(labels, w0=10.0, sigma=5.0, class_weights=None)
    assert w.dtype == np.float32 and w.shape == labels.shape
    gap = 1.0 + 10.0 * np.exp(-((1.0 + 2.0) ** 2) / (2 * 25.0))  # d1 = 1, d2 = 2 in the gap
    np.testing.assert_allclose(w[3:9, 8], gap, rtol=1e-6)
    np.testing.assert_allclose(w[3:9, 9], gap, rtol=1e-6)
    corner = 1.0 + 10.0 * np.exp(-((np.sqrt(13.0) + np.sqrt(109.0)) ** 2) / 50.0)  # pixel (0, 0)
    np.testing.assert_allclose(w[0, 0], corner, rtol=1e-6)
    np.testing.assert_array_equal(w[labels == 1], 1.0)  # no border term inside objects


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_on_many_objects(seed: int) -> None:
    rng = np.random.default_rng(seed)
    field = scipy.ndimage.gaussian_filter(rng.normal(size=(96, 112)), 2.0)
    labels = (field > 0.05).astype(np.int64)
    assert scipy.ndimage.label(labels)[1] > 10
    w = unet_weight_map(labels, w0=10.0, sigma=3.0, class_weights=None)
    np.testing.assert_allclose(w, brute_force_weight_map(labels, 10.0, 3.0), atol=1e-5)


def test_three_d_with_spacing_matches_brute_force() -> None:
    labels = np.zeros((10, 16, 18), dtype=np.int64)
    labels[2:5, 3:8, 3:8] = 1
    labels[6:9, 3:8, 10:15] = 1
    labels[2:8, 10:14, 4:9] = 1
    spacing = (2.0, 1.0, 0.5)
    w = unet_weight_map(labels, w0=5.0, sigma=2.0, class_weights=None, spacing=spacing)
    ref = brute_force_weight_map(labels, 5.0, 2.0, spacing=spacing)
    np.testing.assert_allclose(w, ref, atol=1e-5)
    assert w.max() > 1.1  # the border term is really there


def test_spacing_scales_distances() -> None:
    labels = two_squares()
    unit = unet_weight_map(labels, sigma=5.0, class_weights=None)
    doubled = unet_weight_map(labels, sigma=10.0, class_weights=None, spacing=(2.0, 2.0))
    np.testing.assert_allclose(doubled, unit, rtol=1e-6)
    stretched = unet_weight_map(labels, sigma=5.0, class_weights=None, spacing=(1.0, 3.0))
    np.testing.assert_allclose(stretched[5, 8], 1.0 + 10.0 * np.exp(-((3.0 + 6.0) ** 2) / 50.0))


def test_balanced_class_weights_make_class_sums_equal() -> None:
    labels = two_squares()
    labels[0, :5] = 2
    wc = class_weight_map(labels, "balanced")
    sums = [wc[labels == c].sum() for c in (0, 1, 2)]
    np.testing.assert_allclose(sums, labels.size / 3, rtol=1e-6)
    w = unet_weight_map(labels, w0=0.0)
    np.testing.assert_array_equal(w, wc)


def test_explicit_class_weights_and_ignored_pixels() -> None:
    labels = two_squares()
    labels[0, 0] = -1
    w = unet_weight_map(labels, class_weights=[0.5, 2.0])
    assert w[0, 0] == 0.0
    np.testing.assert_array_equal(w[labels == 1], 2.0)
    assert np.all(w[labels == 0] >= 0.5)
    with pytest.raises(ValueError, match="class 1"):
        unet_weight_map(labels, class_weights=[1.0])


def test_single_object_has_no_border_term() -> None:
    labels = np.zeros((20, 20), dtype=np.int64)
    labels[5:10, 5:10] = 1
    d1, d2 = nearest_two_distances(scipy.ndimage.label(labels)[0], cutoff=50.0)
    assert np.all(np.isinf(d2)) and np.isfinite(d1).all()
    np.testing.assert_array_equal(
        unet_weight_map(labels, class_weights=None), np.ones(labels.shape)
    )


def test_given_instances_split_touching_objects_and_foreground_selects_the_class() -> None:
    labels = np.zeros((10, 16), dtype=np.int64)  # cells are class 0, membrane class 1
    labels[:, 7] = 1
    instances = np.zeros_like(labels)
    instances[:, :7], instances[:, 8:] = 1, 2
    by_components = unet_weight_map(labels, class_weights=None, foreground=0)
    by_instances = unet_weight_map(labels, class_weights=None, instances=instances, foreground=0)
    expected = 1.0 + 10.0 * np.exp(-((1.0 + 1.0) ** 2) / 50.0)
    np.testing.assert_allclose(by_components[:, 7], expected, rtol=1e-6)
    np.testing.assert_array_equal(by_components, by_instances)


def test_instances_kept_whole_across_a_background_seam_still_get_the_border_term() -> None:
    # Sample instance files keep touching nuclei whole; the label cuts a 1-pixel seam between them.
    labels = np.zeros((10, 16), dtype=np.int64)
    labels[2:8, 2:14] = 1
    labels[:, 8] = 0  # the seam
    instances = np.zeros_like(labels)
    instances[2:8, 2:9], instances[2:8, 9:14] = 1, 2  # object 1 covers the seam column
    w = unet_weight_map(labels, class_weights=None, instances=instances)
    expected = 1.0 + 10.0 * np.exp(-((1.0 + 1.0) ** 2) / 50.0)  # d1 = d2 = 1 on the seam
    np.testing.assert_allclose(w[2:8, 8], expected, rtol=1e-6)
    np.testing.assert_array_equal(w, unet_weight_map(labels, class_weights=None))


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(ValueError, match="integer"):
        unet_weight_map(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="spacing"):
        unet_weight_map(two_squares(), spacing=(1.0,))
    with pytest.raises(ValueError, match="instances shape"):
        unet_weight_map(two_squares(), instances=np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="balanced"):
        unet_weight_map(two_squares(), class_weights="median")


def test_isbi_label_weight_map(isbi_dir) -> None:
    tifffile = pytest.importorskip("tifffile")
    label = tifffile.imread(isbi_dir / "train-labels.tif")[0]  # 255 cells, 0 membrane
    classes = (label == 0).astype(np.int64)  # membrane is class 1, the class of interest
    w = unet_weight_map(classes, w0=10.0, sigma=5.0, foreground=0)  # cells are the objects
    assert w.shape == (512, 512)
    membrane, cells = w[classes == 1], w[classes == 0]
    assert np.ptp(cells) < 1e-6  # cells get only their class weight
    assert membrane.max() > membrane.min() + 5.0  # thin membranes between cells weigh most
