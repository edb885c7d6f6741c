"""Tests for unet_seg.data.transforms: normalisation, augmentation invariants."""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
from hydra.utils import instantiate
from omegaconf import OmegaConf

from unet_seg.data.transforms import (
    Augmenter,
    adjust_intensity,
    rotation_scaling_affine,
)
from unet_seg.normalization import normalize_percentile

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "augment"


def test_normalize_percentile_maps_percentiles_to_0_and_1(rng: np.random.Generator) -> None:
    image = rng.normal(100.0, 20.0, size=(64, 64)).astype(np.uint16)
    out = normalize_percentile(image, 1.0, 99.8)
    assert out.dtype == np.float32
    assert out.shape == image.shape
    np.testing.assert_allclose(np.percentile(out, [1.0, 99.8]), [0.0, 1.0], atol=1e-5)
    assert out.min() < 0.0 and out.max() > 1.0  # no clipping beyond the percentiles


def test_normalize_percentile_exact_on_ramp() -> None:
    ramp = np.arange(101, dtype=np.float64)
    out = normalize_percentile(ramp, 0.0, 100.0)
    np.testing.assert_allclose(out, ramp / 100.0, atol=1e-7)


def test_normalize_percentile_constant_and_bad_input() -> None:
    assert np.all(normalize_percentile(np.full((4, 4), 7.0)) == 0.0)
    with pytest.raises(ValueError, match="low < high"):
        normalize_percentile(np.zeros(3), 50.0, 10.0)
    with pytest.raises(ValueError, match="NaN"):
        normalize_percentile(np.array([0.0, np.nan, 1.0]))


# --- Augmenter ------------------------------------------------------------------------------

OFF = {"elastic_p": 0.0, "flip_p": 0.0, "rot90_p": 0.0}


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], blur: float = 6.0) -> np.ndarray:
    field = scipy.ndimage.gaussian_filter(rng.normal(size=shape), blur)
    return (field / field.std()).astype(np.float32)


def make_sample(rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    field = smooth_field(rng, shape)
    return {
        "image": field[None].copy(),
        "label": np.select([field < -0.7, field > 0.7], [-1, 2], default=0).astype(np.int64),
        "weight": (field + 3.0).astype(np.float32),
    }


@pytest.mark.parametrize("shape", [(32, 32), (32, 40), (8, 16, 16)])
def test_flips_and_rot90_keep_image_label_weight_aligned(rng, shape) -> None:
    aug = Augmenter(**{**OFF, "flip_p": 1.0, "rot90_p": 1.0})
    sample = make_sample(rng, shape)
    out = aug(sample, rng)
    assert out["label"].shape == shape  # a non-square plane only turns by 180 degrees
    np.testing.assert_array_equal(out["weight"], out["image"][0] + 3.0)
    field = out["image"][0]
    expected = np.select([field < -0.7, field > 0.7], [-1, 2], default=0)
    np.testing.assert_array_equal(out["label"], expected)
    candidates = []  # all compositions of axis flips with a turn in the last plane
    for flips in itertools.product([False, True], repeat=len(shape)):
        flipped = np.flip(sample["label"], [a for a in range(len(shape)) if flips[a]])
        candidates += [np.rot90(flipped, k, (-2, -1)) for k in range(4)]
    assert any(np.array_equal(out["label"], c) for c in candidates)
    assert out["label"].flags.c_contiguous and out["image"].flags.c_contiguous


def test_all_flips_equal_numpy_flip(rng) -> None:
    sample = make_sample(rng, (6, 10, 12))
    out = Augmenter(**{**OFF, "flip_p": 1.0})(sample, rng)
    np.testing.assert_array_equal(out["label"], sample["label"][::-1, ::-1, ::-1])
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1, ::-1, ::-1])


@pytest.mark.parametrize("backend", ["elasticdeform", "torch"])
@pytest.mark.parametrize("shape", [(64, 64), (12, 40, 40)])
def test_elastic_rotation_scaling_keep_alignment(rng, backend, shape) -> None:
    aug = Augmenter(
        backend=backend, elastic_p=1.0, rotate_p=1.0, scale_p=1.0, image_order=1, weight_order=1
    )
    sample = make_sample(rng, shape)
    out = aug(sample, rng)
    assert set(np.unique(out["label"])) <= {-1, 0, 2}
    # weight and image went through the same linear resampling: still weight = image + 3
    np.testing.assert_allclose(out["weight"], out["image"][0] + 3.0, atol=1e-4)
    assert not np.allclose(out["image"], sample["image"], atol=0.1)
    # labels (nearest) follow the image: thresholds agree wherever the image is clearly on one side
    field = out["image"][0]
    steepest = np.sqrt(sum(g**2 for g in np.gradient(sample["image"][0]))).max()
    for value, inside in [(-1, field < -0.7 - 1.5 * steepest), (2, field > 0.7 + 1.5 * steepest)]:
        assert inside.sum() > 20
        assert np.all(out["label"][inside] == value)


def test_inplane_only_keeps_slices_apart(rng) -> None:
    plane = smooth_field(rng, (40, 40))
    stack = np.stack([plane * (z + 1) for z in range(5)])  # slice z is plane * (z + 1)
    sample = {"image": stack[None].copy(), "label": (stack > 0).astype(np.int64)}
    aug = Augmenter(inplane_only=True, rotate_p=1.0, scale_p=1.0, flip_p=1.0, image_order=1)
    out = aug(sample, rng)
    assert "weight" not in out
    image = out["image"][0]
    for z in range(5):  # z neither flipped nor deformed: every slice got the same 2D transform
        np.testing.assert_allclose(image[z] / (z + 1), image[0], atol=1e-5)
        np.testing.assert_array_equal(out["label"][z], out["label"][0])
    assert not np.allclose(image[0], plane, atol=0.1)


def test_intensity_changes_leave_label_and_weight_untouched(rng) -> None:
    aug = Augmenter(
        **OFF, brightness_p=1.0, contrast_p=1.0, gamma_p=1.0, noise_p=1.0, noise_std=0.1
    )
    sample = make_sample(rng, (32, 32))
    out = aug(sample, rng)
    np.testing.assert_array_equal(out["label"], sample["label"])
    np.testing.assert_array_equal(out["weight"], sample["weight"])
    assert out["image"].dtype == np.float32
    assert not np.allclose(out["image"], sample["image"], atol=0.01)


def test_gamma_keeps_the_range_and_brightness_shifts(rng) -> None:
    image = rng.uniform(0.2, 0.9, size=(2, 16, 16)).astype(np.float32)
    out = adjust_intensity(image, rng, gamma=(0.5, 0.5))
    np.testing.assert_allclose(out.min(axis=(1, 2)), image.min(axis=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(out.max(axis=(1, 2)), image.max(axis=(1, 2)), atol=1e-6)
    assert np.all(out.mean(axis=(1, 2)) > image.mean(axis=(1, 2)))  # gamma < 1 brightens
    shifted = adjust_intensity(image, np.random.default_rng(0), brightness=0.1)
    delta = (shifted - image).reshape(2, -1)
    np.testing.assert_allclose(delta, delta[:, :1].repeat(delta.shape[1], 1), atol=1e-6)
    assert np.all(np.abs(delta) <= 0.1)


def test_rotation_scaling_affine_fixes_the_centre() -> None:
    affine = rotation_scaling_affine((11, 21), 90.0, 2.0, (0, 1))
    np.testing.assert_allclose(affine @ np.array([5.0, 10.0, 1.0]), [5.0, 10.0], atol=1e-12)
    np.testing.assert_allclose(affine[:, :2], [[0.0, -2.0], [2.0, 0.0]], atol=1e-12)


@pytest.mark.parametrize("name", ["default", "paper", "anisotropic_3d"])
def test_configs_build_reproducible_augmenters(name: str) -> None:
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    aug = instantiate(cfg)
    assert isinstance(aug, Augmenter)
    for shape in [(36, 36), (6, 20, 20)]:
        sample = make_sample(np.random.default_rng(0), shape)
        first = aug(sample, np.random.default_rng(7))
        second = aug(sample, np.random.default_rng(7))
        for key in ("image", "label", "weight"):
            np.testing.assert_array_equal(first[key], second[key])
            assert first[key].shape == sample[key].shape and first[key].dtype == sample[key].dtype
    assert not OmegaConf.load(CONF_DIR / "none.yaml")  # empty: the data module gets None


def test_a_broken_elasticdeform_falls_back_to_torch_before_training(monkeypatch, caplog):
    """The paper's config names the elasticdeform backend; where that wheel does not import
    (NumPy 2), the augmenter is built on the torch backend with a warning, in the main process,
    and augments as the reference would (the torch backend reproduces it)."""
    monkeypatch.setitem(sys.modules, "elasticdeform", None)  # import raises ImportError
    with caplog.at_level(logging.WARNING, logger="unet_seg.data.transforms"):
        aug = instantiate(OmegaConf.load(CONF_DIR / "paper.yaml"))
    assert aug.backend == "torch"
    assert "elasticdeform does not import" in caplog.text and "torch backend" in caplog.text
    sample = make_sample(np.random.default_rng(0), (36, 36))
    out = aug(sample, np.random.default_rng(7))
    assert out["image"].shape == sample["image"].shape
    assert set(np.unique(out["label"])) <= set(np.unique(sample["label"]))  # order 0 stays integral


def test_augmenter_rejects_bad_settings_and_samples() -> None:
    with pytest.raises(ValueError, match="backend"):
        Augmenter(backend="opencv")
    with pytest.raises(ValueError, match="probabilities"):
        Augmenter(flip_p=1.5)
    with pytest.raises(ValueError, match="scale_range"):
        Augmenter(scale_range=(1.1, 0.9))
    with pytest.raises(ValueError, match=r"\(C, \*spatial\)"):
        Augmenter()({"image": np.zeros((8, 8), np.float32), "label": np.zeros((8, 8))}, None)
