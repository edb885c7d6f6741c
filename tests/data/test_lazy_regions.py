"""Training patches read lazily from disk (zarr, OME-Zarr, memory-mapped TIFF) against the
in-memory regions: images and labels equal voxel for voxel, edges and padding included; boundary
targets equal; weight maps equal within 1e-6 w0 (the cut-off rule); foreground centres on
foreground; regions that survive pickling to dataloader workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from unet_seg.data.boxes import read_window
from unet_seg.data.datamodule import SegmentationDataModule
from unet_seg.data.lazy_regions import LazyRegion
from unet_seg.data.patches import PAD_MODES, extract_patch
from unet_seg.io import Volume, open_volume, write_volume


def blobs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint16, label 0/1, instances) of separate round objects 2-6 voxels apart, so that
    the weight map's border term is large between neighbours."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    instances = np.zeros(shape, np.int32)
    spacing = 14
    centres = np.stack(np.meshgrid(*(np.arange(7, n - 3, spacing) for n in shape), indexing="ij"))
    for k, centre in enumerate(centres.reshape(len(shape), -1).T, start=1):
        if rng.random() < 0.2:
            continue  # some gaps: background far from any object
        radius = rng.uniform(4.0, 6.0)
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2
        instances[inside] = k
    label = (instances > 0).astype(np.uint8)
    image = (rng.normal(1000, 100, shape) + 800.0 * label).clip(0, 65535).astype(np.uint16)
    return image, label, instances


def write_set(folder: Path, suffix: str, shapes: list[tuple[int, ...]]) -> dict[str, Path]:
    """Image, label and instance files ``case_<k><suffix>`` under ``folder``; uncompressed TIFF
    (memory-mapped when read lazily) for ``.tif``."""
    dirs = {kind: folder / kind for kind in ("images", "labels", "instances")}
    for k, shape in enumerate(shapes):
        for kind, array in zip(dirs, blobs(shape, k), strict=True):
            path = dirs[kind] / f"case_{k}{suffix}"
            if suffix == ".tif":
                path.parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(path, array)  # uncompressed: TiffVolume memory-maps it
            else:
                write_volume(path, Volume(array, spacing=(1.0,) * len(shape)))
    return dirs


def modules(dirs: dict[str, Path | None], lazy=(False, True), **settings) -> tuple:
    """The same data module, eager and lazy, set up."""
    made = []
    for mode in lazy:
        instances = None if dirs["instances"] is None else str(dirs["instances"])
        module = SegmentationDataModule(
            str(dirs["images"]), str(dirs["labels"]), instances=instances, lazy=mode, **settings
        )
        module.setup("fit")
        made.append(module)
    return tuple(made)


def starts(shape: tuple[int, ...], size: tuple[int, ...], rng: np.random.Generator) -> list:
    """Window starts inside, across every edge and far outside."""
    found = [tuple(0 for _ in shape), tuple(n - s for n, s in zip(shape, size, strict=True))]
    found += [
        tuple(-s // 2 for s in size),
        tuple(n - s // 2 for n, s in zip(shape, size, strict=True)),
    ]
    found += [tuple(int(rng.integers(-s, n)) for n, s in zip(shape, size, strict=True))
              for _ in range(6)]  # fmt: skip
    return found


def assert_same_patches(eager, lazy, size, mode="reflect", weight_atol=0.0) -> None:
    rng = np.random.default_rng(0)
    pairs = [*zip(eager.train_set.regions, lazy.train_set.regions, strict=True),
             *zip(eager.val_set.regions, lazy.val_set.regions, strict=True)]  # fmt: skip
    for a, b in pairs:
        assert isinstance(b, LazyRegion) and a.name == b.name and a.shape == b.shape
        for start in starts(a.shape, size, rng):
            pa, pb = a.patch(start, size, mode), b.patch(start, size, mode)
            np.testing.assert_array_equal(pb["image"], pa["image"], err_msg=f"{a.name} {start}")
            np.testing.assert_array_equal(pb["label"], pa["label"], err_msg=f"{a.name} {start}")
            assert pb["image"].dtype == np.float32 and pb["label"].dtype == np.int64
            np.testing.assert_allclose(pb["weight"], pa["weight"], rtol=0, atol=weight_atol,
                                       err_msg=f"{a.name} {start}")  # fmt: skip


def test_read_window_equals_extract_patch_for_every_mode():
    rng = np.random.default_rng(1)
    for mode in PAD_MODES:
        for _ in range(100):
            shape = tuple(int(n) for n in rng.integers(1, 12, int(rng.integers(2, 4))))
            array = rng.normal(size=(2, *shape))
            size = tuple(int(n) for n in rng.integers(1, 30, len(shape)))
            start = tuple(int(n) for n in rng.integers(-40, 40, len(shape)))
            lazy = read_window(
                lambda box, a=array: a[(slice(None), *box)], shape, start, size, mode
            )
            np.testing.assert_array_equal(lazy, extract_patch(array, start, size, mode))


@pytest.mark.parametrize("suffix", [".ome.zarr", ".zarr", ".tif"])
def test_2d_patches_equal_eager(tmp_path, suffix):
    dirs = write_set(tmp_path, suffix, [(70, 90), (64, 64), (50, 80)])
    eager, lazy = modules(dirs, patch_size=[36, 44], samples_per_epoch=4, val_fraction=0.34)
    assert not eager.lazy and lazy.lazy
    if suffix == ".tif":
        assert open_volume(dirs["images"] / "case_0.tif")._mode == "memmap"
    assert_same_patches(eager, lazy, (36, 44))
    assert_same_patches(eager, lazy, (36, 44), mode="constant")


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
def test_3d_patches_and_stack_slices_equal_eager(tmp_path, suffix):
    dirs = write_set(tmp_path, suffix, [(20, 40, 44)])
    eager, lazy = modules(dirs, spatial_dims=3, patch_size=[12, 20, 20], val_slices=[14, 20])
    assert [r.name for r in lazy.train_set.regions] == ["case_0[0:14]"]
    assert_same_patches(eager, lazy, (12, 20, 20))
    eager, lazy = modules(dirs, spatial_dims=2, patch_size=[20, 24], val_slices=[16, 20])
    assert len(lazy.train_set.regions) == 16 and lazy.val_set.regions[0].name == "case_0[16]"
    assert_same_patches(eager, lazy, (20, 24), mode="symmetric")


@pytest.mark.parametrize("instances", [True, False])
def test_weight_map_and_boundary_target_match_within_the_cutoff(tmp_path, instances):
    dirs = write_set(tmp_path, ".ome.zarr", [(90, 100), (60, 70)])
    if not instances:  # objects from connected components: whole within the margin (round)
        dirs["instances"] = None
    settings = {
        "patch_size": [40, 40],
        "val_fraction": 0.5,
        "weight_map": {"w0": 10.0, "sigma": 3.0},
    }
    eager, lazy = modules(dirs, **settings, target="boundary", boundary_width=2.0)
    assert_same_patches(eager, lazy, (40, 40), weight_atol=1e-5)  # 1e-6 w0
    eager, lazy = modules(dirs, **settings)
    patch = lazy.train_set.regions[0].patch((0, 0), (40, 40), "reflect")
    assert patch["weight"].max() > 3  # the border term is there, between close objects
    assert_same_patches(eager, lazy, (40, 40), weight_atol=1e-5)


def test_foreground_centres_pickling_and_workers(tmp_path):
    dirs = write_set(tmp_path, ".zarr", [(60, 80), (40, 40)])
    _, lazy = modules(dirs, patch_size=[20, 20], samples_per_epoch=4, val_fraction=0.5,
                      foreground_prob=1.0, num_workers=2, batch_size=2)  # fmt: skip
    region = lazy.train_set.regions[0]
    label = np.asarray(open_volume(dirs["labels"] / "case_0.zarr")[...])
    sampler = lazy.train_set.foreground[0]
    assert len(sampler) == int((label > 0).sum())  # every foreground voxel can be drawn
    rng = np.random.default_rng(0)
    assert all(label[sampler.draw(rng)] == 1 for _ in range(50))
    copy = pickle.loads(pickle.dumps(region))
    assert copy.label._handle is None  # workers reopen the store
    for key, value in copy.patch((-5, 70), (20, 20), "reflect").items():
        np.testing.assert_array_equal(value, region.patch((-5, 70), (20, 20), "reflect")[key])
    batches = list(lazy.train_dataloader())
    assert len(batches) == 2 and batches[0]["image"].shape == (2, 1, 20, 20)
    assert all(torch.all(b["label"][:, 10, 10] == 1) for b in batches)  # centred on foreground


def test_bad_labels_are_named_at_setup(tmp_path):
    dirs = write_set(tmp_path, ".zarr", [(40, 40), (40, 40)])
    write_volume(dirs["labels"] / "case_0.zarr", Volume(np.full((40, 40), 3, np.uint8)))
    with pytest.raises(ValueError, match=r"case_0\.zarr: label values \[3\] are outside"):
        modules(dirs, lazy=(True,), patch_size=[20, 20], val_fraction=0.5)


def test_training_runs_from_an_ome_zarr_training_set(tmp_path):
    from hydra.utils import instantiate

    from tests.test_configs import compose_train
    from unet_seg.training.train import train

    dirs = write_set(tmp_path / "cells", ".ome.zarr", [(120, 130), (100, 110), (96, 96)])
    cfg = compose_train(
        tmp_path, "experiment=own_2d", f"data.images={dirs['images']}",
        f"data.labels={dirs['labels']}", f"data.instances={dirs['instances']}", "data.lazy=true",
        "data.patch_size=[92,92]", "data.batch_size=2", "data.foreground_prob=0.5",
        "data.weight_map={w0: 10.0, sigma: 3.0}", "debug=fast_dev_run",
        "trainer.accelerator=cpu", "trainer.devices=1", "data.num_workers=0",
    )  # fmt: skip
    data = instantiate(cfg.data)
    data.setup("fit")
    assert isinstance(data.train_set.regions[0], LazyRegion)  # what train() builds from cfg
    metrics = train(cfg).metrics
    assert metrics["train/loss_step"] > 0 and 0.0 <= metrics["val/dice"] <= 1.0


_RSS_CHILD = """
import sys
from unet_seg.data.datamodule import SegmentationDataModule
from unet_seg.peak_memory import peak_rss_bytes
data = SegmentationDataModule(sys.argv[1] + "/images", sys.argv[1] + "/labels", patch_size=[96, 96],
                              batch_size=4, samples_per_epoch=40, foreground_prob=0.5,
                              lazy=sys.argv[2] == "lazy")
data.setup("fit")
for batch in data.train_dataloader():
    pass
print(peak_rss_bytes())
"""


def _peak_rss(folder: Path, mode: str) -> int:
    import os
    import subprocess
    import sys

    from unet_seg.config import PROJECT_ROOT

    # A Dask cluster started earlier in this process leaves its workers' settings in os.environ
    # (MALLOC_TRIM_THRESHOLD_=65536, one thread each): the child measures without them.
    leaked = ("MALLOC_", "__DASK_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaked)}
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(folder), mode], env=env,
                          capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)  # fmt: skip
    return int(proc.stdout.split()[-1])


@pytest.mark.slow
def test_peak_memory_stays_flat_as_the_training_set_grows(tmp_path):
    """10x the images from OME-Zarr: the lazy path's peak RSS within 1.2x, while the in-memory
    path's grows (the measurement can tell them apart)."""
    rng = np.random.default_rng(0)
    for scale, count in (("x1", 2), ("x10", 20)):
        for k in range(count):
            label = (rng.random((64, 64)) > 0.7).repeat(16, 0).repeat(16, 1).astype(np.uint8)
            image = (rng.integers(0, 1000, label.shape) + 2000 * label.astype(np.int64)).astype(
                np.uint16
            )
            write_volume(tmp_path / scale / "images" / f"{k:02d}.ome.zarr", Volume(image))
            write_volume(tmp_path / scale / "labels" / f"{k:02d}.ome.zarr", Volume(label))
    lazy = _peak_rss(tmp_path / "x10", "lazy") / _peak_rss(tmp_path / "x1", "lazy")
    eager = _peak_rss(tmp_path / "x10", "eager") / _peak_rss(tmp_path / "x1", "eager")
    assert lazy <= 1.2, f"lazy peak RSS grew {lazy:.2f}x with 10x the data"
    assert eager > 1.2, f"in-memory peak RSS grew only {eager:.2f}x: the test cannot tell"


def test_percentile_view_counts_every_channel_of_one_file_or_channel_files(rng):
    from unet_seg.data.lazy_images import ChannelImage, _PercentileView
    from unet_seg.io.lazy import InMemoryVolume

    array = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)
    one_file = ChannelImage([InMemoryVolume(Volume(array, spacing=(1.0,) * 3, path=Path("a")))], 3)
    per_channel = ChannelImage(
        [InMemoryVolume(Volume(a, spacing=(1.0,) * 3, path=Path("a"))) for a in array], 3
    )
    flat = array.reshape(10, 6, 7)
    for image in (one_file, per_channel):
        view = _PercentileView(image)
        assert image.shape == (2, 5, 6, 7) and view.shape == (10, 6, 7)
        np.testing.assert_array_equal(view[...], flat)
        for i in range(10):
            np.testing.assert_array_equal(view[i, ::2, ::3], flat[i, ::2, ::3])


def test_multichannel_zarr_patches_equal_eager(tmp_path):
    dirs = write_set(tmp_path, ".zarr", [(48, 56), (40, 40)])
    for k in range(2):  # a second channel on a leading axis: a plain zarr array (c, y, x)
        image = np.asarray(open_volume(dirs["images"] / f"case_{k}.zarr")[...])
        write_volume(dirs["images"] / f"case_{k}.zarr", Volume(np.stack([image, image[::-1]])))
    eager, lazy = modules(dirs, patch_size=[24, 24], val_fraction=0.5)
    assert lazy.in_channels == 2 and lazy.train_set.regions[0].image.shape[0] == 2
    assert_same_patches(eager, lazy, (24, 24))


def test_auto_reads_lazily_above_the_voxel_threshold(tmp_path, monkeypatch):
    import unet_seg.data.training_data as training_data

    dirs = write_set(tmp_path, ".zarr", [(40, 40), (40, 50)])
    settings = {"patch_size": [20, 20], "val_fraction": 0.5}
    (small,) = modules(dirs, lazy=("auto",), **settings)
    assert small.lazy is False  # 3,600 voxels: loaded whole
    monkeypatch.setattr(training_data, "LAZY_VOXELS", 3_599)
    (big,) = modules(dirs, lazy=("auto",), **settings)
    assert big.lazy is True and isinstance(big.val_set.regions[0], LazyRegion)
    with pytest.raises(ValueError, match="lazy must be true, false or auto, got 'yes'"):
        SegmentationDataModule("i.zarr", "l.zarr", lazy="yes")
