"""``unet-seg-tune`` allocates no more than its memory guard counts, numbers huge sparse object ids
without allocating by their size, and refuses a validation split that cannot fit in one line."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.tuning.test_write_back import config, save_checkpoint
from unet_seg.cli import tune as tune_cli
from unet_seg.data import samples
from unet_seg.io import Volume, write_volume
from unet_seg.tuning import memory
from unet_seg.tuning.memory import TuneCase, case_of, check_tune_memory, compact_ids, tune_bytes
from unet_seg.tuning.search import median_object_size
from unet_seg.tuning.write_back import tune_command


def nuclei_data(root: Path, shape=(64, 64), offset: int = 0) -> dict:
    """Two nuclei images with labels and instances (ids + ``offset``); the second validates."""
    for i, rng in enumerate(np.random.default_rng(5).spawn(2)):
        inst, profile = samples.nuclei(shape, (6.0, 9.0), max(6, shape[0] * shape[1] // 700), rng)
        image = np.round(samples.fluorescence(profile, rng, 1.5) * 255).astype(np.uint8)
        ids = np.where(inst > 0, inst.astype(np.uint64) + np.uint64(offset), 0).astype(np.uint64)
        write_volume(root / "images" / f"n{i}.tif", Volume(image))
        write_volume(root / "labels" / f"n{i}.tif", Volume(samples.separated_mask(inst)))
        write_volume(root / "instances" / f"n{i}.tif", Volume(ids))
    return {"images": str(root / "images"), "labels": str(root / "labels"),
            "instances": str(root / "instances"), "spatial_dims": 2, "num_classes": 2,
            "patch_size": [36, 36], "val_names": ["n1"], "target": "boundary"}  # fmt: skip


@pytest.mark.parametrize(
    "method",
    # seeded searches 200 settings: ~12 s on 2 cores; peak about 80 bytes a voxel (cc 63)
    ["cc", pytest.param("seeded", marks=pytest.mark.slow)],
)
def test_tune_allocates_less_than_its_guard_counts(tmp_path, method):
    data = nuclei_data(tmp_path / "data", (320, 320))
    ckpt = save_checkpoint(tmp_path / "model.ckpt", data)
    cfg = config(checkpoint=ckpt, methods=f"[{method}]", output=tmp_path / "out.ckpt")
    tune_command(cfg)  # first run: imports and caches are not what is measured
    tracemalloc.start()
    try:
        tune_command(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    root = tmp_path / "data"
    case = case_of(root / "images" / "n1.tif", root / "labels" / "n1.tif", True)
    assert case.voxels == 320 * 320 and case.channels == 1
    assert peak <= tune_bytes([case], 3)[-1]
    # the guard's constants assume at most 124 bytes a voxel here; 20 of them are the files read
    assert peak / case.voxels < 100


def test_huge_sparse_object_ids_tune_as_their_dense_numbers(tmp_path):
    dense = save_checkpoint(tmp_path / "a.ckpt", nuclei_data(tmp_path / "a"))
    huge = save_checkpoint(tmp_path / "b.ckpt", nuclei_data(tmp_path / "b", offset=2**40))
    expected = tune_command(config(checkpoint=dense, methods="[cc]"))
    assert tune_command(config(checkpoint=huge, methods="[cc]")) == expected


def test_compact_ids_keep_objects_apart_and_background_zero():
    ids = np.array([[0, 2**40, 2**40], [7, 0, -3]], np.int64)
    out = compact_ids(ids)
    assert out.dtype == np.int32 and out.tolist() == [[0, 3, 3], [2, 0, 1]]
    small = np.array([[0, 5], [5, 9]], np.int64)
    assert compact_ids(small).tolist() == small.tolist()  # ids that fit are kept as they are
    assert median_object_size([np.array([0, 2**40, 2**40, 2**41], np.int64)]) == 1.5


def test_guard_counts_every_case_and_names_the_one_that_does_not_fit():
    cases = [TuneCase("a.tif", 1000, 1, True), TuneCase("b.tif", 2000, 2, False)]
    per_voxel_a = 4 + 8 + 8 + 3 * 4 + 4 + 64 + 3 * 8  # read, kept, work
    assert tune_bytes(cases, 3)[0] == 1000 * per_voxel_a
    total = tune_bytes(cases, 3)[-1]
    assert check_tune_memory(cases, 3, budget=total) == total
    with pytest.raises(ValueError, match=r"^b\.tif: tuning on it with the cases before it needs"):
        check_tune_memory(cases, 3, budget=total - 1)
    with pytest.raises(ValueError, match=r"^a\.tif: tuning on it needs"):
        check_tune_memory(cases, 3, budget=10, held=0)
    with pytest.raises(ValueError, match=r"^a\.tif"):  # other folds' cases count too
        check_tune_memory(cases[:1], 3, budget=total, held=total)


def test_a_split_too_big_is_refused_in_one_line_before_it_is_read(tmp_path, monkeypatch, capsys):
    data = nuclei_data(tmp_path / "data")
    ckpt = save_checkpoint(tmp_path / "model.ckpt", data)
    monkeypatch.setattr(memory, "memory_budget", lambda: 100_000)
    read = []
    monkeypatch.setattr("unet_seg.data.training_data.build_regions",
                        lambda *a, **k: read.append(a) or [])  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["unet-seg-tune", f"checkpoint={ckpt}", "progress=false",
                                      "device=cpu"])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        tune_cli.main()
    assert exit_info.value.code == 1  # an input that cannot be worked on, as evaluate's guard
    lines = capsys.readouterr().err.strip().splitlines()
    label = Path(data["labels"]) / "n1.tif"
    assert len(lines) == 1 and lines[0].startswith(f"unet-seg-tune: {label}: tuning on it needs")
    assert "more than the 100,000 allowed" in lines[0] and "data.val_names" in lines[0]
    assert read == []  # refused from the headers
