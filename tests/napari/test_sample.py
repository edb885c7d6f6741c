"""The sample-data contribution as layer data (no napari needed): the checkout's samples, or
samples generated once into the cache folder where a wheel has none."""

from __future__ import annotations

import numpy as np
import pytest

from unet_seg.napari import sample


def test_the_2d_sample_is_an_image_its_mask_and_its_objects():
    layers = sample.nuclei_2d()
    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("nuclei 2D", "image"), ("nuclei 2D labels", "labels"), ("nuclei 2D objects", "labels")
    ]  # fmt: skip
    (image, meta, _), (mask, _, _), (objects, _, _) = layers
    assert image.shape == mask.shape == objects.shape == (256, 256)
    assert meta["scale"] == (0.5, 0.5)
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert np.all(mask[objects == 0] == 0)  # the mask lies inside the objects


@pytest.mark.slow  # writes every sample (a few seconds)
def test_without_a_checkout_the_samples_are_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "CHECKOUT_SAMPLES", tmp_path / "no-checkout")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    [(volume, meta, _), *_] = sample.nuclei_3d()
    folder = tmp_path / "cache" / "unet-seg" / "data_samples"
    assert sample.samples_dir() == folder and (folder / "stack" / "stack.tif").is_file()
    assert volume.shape == (48, 96, 96) and meta["scale"] == (1.0, 0.5, 0.5)
    stamp = (folder / sample.MARKER).stat().st_mtime_ns
    sample.nuclei_stack()
    assert (folder / sample.MARKER).stat().st_mtime_ns == stamp  # not written again
