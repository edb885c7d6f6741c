"""Evaluating a pair slab by slab gives exactly the figures of the whole images (2D and 3D,
components that cross slab faces, instance files with huge ids), within the memory its guard
counts; a pair is refused only when not even one slab fits."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from tests.cli.test_errors import run_script
from tests.evaluation.test_components import spiral, u_shapes
from tests.evaluation.test_evaluate import config
from unet_seg.cli import evaluate as evaluate_cli
from unet_seg.evaluation import slabwise
from unet_seg.evaluation.evaluate import evaluate, pair_figures
from unet_seg.evaluation.slabwise import LabelReading, PairFiles, evaluate_files, open_pair
from unet_seg.io import Volume, write_volume


def assert_same(row: dict, expected: dict, ordered: bool = True) -> None:
    """Same figures (in the same order), equal to the last bit (NaN where the other is NaN)."""
    assert list(row) == list(expected) if ordered else sorted(row) == sorted(expected)
    for name, value in expected.items():
        same = value == row[name] or (math.isnan(value) and math.isnan(row[name]))
        assert same, f"{name}: {row[name]!r} != {value!r}"


def pair_2d(rng) -> tuple[np.ndarray, np.ndarray]:
    """Three classes; class 1 holds a spiral and U-shapes (one object across many rows)."""
    truth = np.zeros((40, 37), np.uint8)
    truth[:23, :23] = spiral(23)
    truth[25:37, 20:35] = u_shapes()
    truth[(ndi.gaussian_filter(rng.random(truth.shape), 1.5) > 0.6) & (truth == 0)] = 2
    pred = truth.copy()
    pred[rng.random(truth.shape) < 0.03] = 1  # specks, some bridging the spiral's gaps
    pred[30, 20:35] = 0  # the outer U cut in two
    return pred, truth


def pair_3d(rng) -> tuple[np.ndarray, np.ndarray]:
    truth = (ndi.gaussian_filter(rng.random((9, 16, 15)), 1.2) > 0.5).astype(np.uint8)
    truth[:, 2, 2:13] = truth[:, 2:14, 2] = 1  # a wall that joins blobs across every plane
    pred = (ndi.gaussian_filter(rng.random(truth.shape), 1.2) > 0.48).astype(np.uint8) | (
        truth & (rng.random(truth.shape) < 0.7)
    )
    return pred, truth


def write_pair(folder: Path, pred: np.ndarray, truth: np.ndarray, ids=None) -> PairFiles:
    files = [folder / "p.tif", folder / "g.tif"]
    arrays = [pred, truth]
    if ids is not None:
        files += [folder / "p_ids.tif", folder / "g_ids.tif"]
        arrays += list(ids)
    for path, array in zip(files, arrays, strict=True):
        tifffile.imwrite(path, array)
    return PairFiles(*files)


@pytest.mark.parametrize("planes", [1, 3, 7])
@pytest.mark.parametrize("case", ["2d", "3d", "instances"])
def test_slabs_give_the_figures_of_the_whole_images(tmp_path, monkeypatch, case, planes):
    rng = np.random.default_rng(planes)
    pred, truth = pair_3d(rng) if case == "3d" else pair_2d(rng)
    ids = None
    if case == "instances":  # huge, sparse ids of another tool, uint64 and int64
        found, true = ndi.label(pred == 1)[0], ndi.label(truth > 0)[0]
        ids = (
            np.where(found > 0, found.astype(np.uint64) * (1 << 40) + (1 << 62), 0),
            np.where(true > 0, (true.max() + 1 - true).astype(np.int64) << 40, 0),
        )
    files = write_pair(tmp_path, pred, truth, ids)
    monkeypatch.setattr(slabwise, "SLAB_TARGET_VOXELS", planes * math.prod(truth.shape[1:]))
    result = evaluate_files(files, LabelReading(3, 1))
    assert result.planes == planes
    row, counts, matches = pair_figures(pred, truth, 3, 1, *(ids or ()))
    assert_same(result.row, row)
    np.testing.assert_array_equal(result.counts, counts)
    assert result.matches == matches
    planes_of = (truth.reshape(len(truth), -1), pred.reshape(len(truth), -1))
    np.testing.assert_array_equal(result.wrong, (planes_of[0] != planes_of[1]).sum(1))
    np.testing.assert_array_equal(result.foreground, (planes_of[0] != 0).sum(1))
    if case != "instances":
        assert 0 < result.row["merges"] + result.row["splits"]  # the kinds are exercised too


def test_a_small_budget_shrinks_the_slabs_and_changes_no_figure(tmp_path):
    pred, truth = (np.tile(a, (5, 5)) for a in pair_2d(np.random.default_rng(0)))
    files = write_pair(tmp_path, pred, truth)
    whole = evaluate_files(files, LabelReading(3, 1))
    volumes = open_pair(files)
    table = whole.counted - slabwise.plan_planes(files, volumes, 3, 1 << 40)[1]
    budget = 2 * table + slabwise.slab_bytes(volumes, 3, 60 * truth.shape[1])  # 60 rows fit
    small = evaluate_files(files, LabelReading(3, 1), budget=budget)
    assert whole.planes == len(truth) and small.planes < len(truth)  # halved until it fits
    assert small.counted <= budget
    assert_same(small.row, whole.row)


def test_zarr_slabs_are_whole_chunks(tmp_path, monkeypatch):
    pred, truth = pair_3d(np.random.default_rng(1))
    import zarr

    for name, array in (("p.zarr", pred), ("g.zarr", truth)):
        zarr.create_array(str(tmp_path / name), data=array, chunks=(3, 8, 8))
    monkeypatch.setattr(slabwise, "SLAB_TARGET_VOXELS", 5 * math.prod(truth.shape[1:]))
    result = evaluate_files(PairFiles(tmp_path / "p.zarr", tmp_path / "g.zarr"), LabelReading(2))
    assert result.planes == 3  # 5 planes wanted, whole chunks of 3 read
    assert_same(result.row, pair_figures(pred, truth, 2)[0])


@pytest.mark.parametrize("instances", [False, True])
def test_the_slab_path_allocates_less_than_its_guard_counts(tmp_path, monkeypatch, instances):
    rng = np.random.default_rng(0)
    truth = ndi.label(ndi.gaussian_filter(rng.random((300, 400)), 1.5) > 0.5)[0]
    found = ndi.label(ndi.gaussian_filter(rng.random((300, 400)), 1.5) > 0.45)[0]
    ids = (found.astype(np.uint32), truth.astype(np.uint32)) if instances else None
    files = write_pair(tmp_path, (found > 0).astype(np.uint8), (truth > 0).astype(np.uint8), ids)
    monkeypatch.setattr(slabwise, "SLAB_TARGET_VOXELS", 20 * 400)
    evaluate_files(files, LabelReading(2))  # imports and caches warm, outside the measure
    tracemalloc.start()
    try:
        result = evaluate_files(files, LabelReading(2))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.planes == 20
    assert peak <= result.counted
    assert peak < 4 * truth.size  # bytes a voxel (3.0): the whole-image path took about 12


def test_a_pair_that_no_slab_fits_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    pred, truth = pair_2d(np.random.default_rng(0))
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    tifffile.imwrite(tmp_path / "p" / "a_labels.tif", pred)
    tifffile.imwrite(tmp_path / "g" / "a_labels.tif", truth)
    monkeypatch.setattr(slabwise, "memory_budget", lambda: 1000)
    code, err = run_script("evaluate", [f"pred_dir={tmp_path / 'p'}", f"gt_dir={tmp_path / 'g'}",
                           "num_classes=3", "progress=false", "report=false"],
                           monkeypatch, capsys)  # fmt: skip
    (line,) = [line for line in err if "failed:" in line]
    assert code == 1
    assert line.startswith(f"unet-seg-evaluate: failed: {tmp_path / 'p' / 'a_labels.tif'}: "
                           f"ValueError: {tmp_path / 'p' / 'a_labels.tif'}: evaluating it "
                           "against its truth needs about ")  # fmt: skip
    assert "even 1 plane(s) at a time, more than the 1,000 allowed" in line


def test_the_cli_evaluates_a_pair_too_big_to_hold_whole(tmp_path, monkeypatch, capsys):
    """A budget of a few rows: ``unet-seg-evaluate`` reads the pair slab by slab, with its report,
    and writes the whole images' figures."""
    pred, truth = pair_3d(np.random.default_rng(2))
    ids = ndi.label(pred)[0].astype(np.uint16), ndi.label(truth)[0].astype(np.uint16)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    write_volume(pred_dir / "a_labels.tif", Volume(pred))
    write_volume(gt_dir / "a_labels.tif", Volume(truth))
    write_volume(pred_dir / "b_labels.nii.gz", Volume(pred))
    write_volume(pred_dir / "b_instances.nii.gz", Volume(ids[0]))
    write_volume(gt_dir / "b_labels.tif", Volume(truth))
    write_volume(gt_dir / "b_instances.tif", Volume(ids[1]))
    volumes = open_pair(PairFiles(pred_dir / "a_labels.tif", gt_dir / "a_labels.tif"))
    budget = slabwise.slab_bytes([*volumes, *volumes], 2, 2 * 16 * 15) + 16384  # 2 planes
    monkeypatch.setattr(slabwise, "memory_budget", lambda: budget)
    monkeypatch.setattr("sys.argv", ["unet-seg-evaluate", f"pred_dir={pred_dir}",
                        f"gt_dir={gt_dir}", "progress=false", "report=true",
                        "gt_instance_suffix=_instances"])  # fmt: skip
    evaluate_cli.main()  # exit 0: returns
    assert "2 files evaluated, 0 failed" in capsys.readouterr().out
    rows = json.loads((pred_dir / "evaluation.json").read_text())["files"]
    expected = [pair_figures(pred, truth, 2)[0], pair_figures(pred, truth, 2, 1, *ids)[0]]
    for row, want in zip(rows, expected, strict=True):
        figures = {k: math.nan if v is None else v for k, v in row.items()}  # JSON null: NaN
        assert_same({k: v for k, v in figures.items() if k not in ("file", "segments")}, want,
                    ordered=False)  # fmt: skip
    assert [r["segments"] for r in rows] == ["components", "instances"]
    assert (pred_dir / "report.html").read_text().count("data:image/png") >= 2 * 3


def test_evaluate_folder_forced_to_slabs_equals_whole(tmp_path, monkeypatch):
    pred, truth = pair_2d(np.random.default_rng(4))
    write_volume(tmp_path / "p" / "a_labels.tif", Volume(pred))
    write_volume(tmp_path / "g" / "a_labels.tif", Volume(truth))
    cfg = config(pred_dir=tmp_path / "p", gt_dir=tmp_path / "g", num_classes=3, progress=False,
                 report=False)  # fmt: skip
    whole = evaluate(cfg)["files"][0]
    monkeypatch.setattr(slabwise, "SLAB_TARGET_VOXELS", 1)
    assert_same(evaluate(cfg)["files"][0], whole)


def test_a_file_read_whole_is_counted_whole(tmp_path):
    """A compressed 2D TIFF is read whole on the first slab: the guard counts all of it."""
    pred, truth = pair_2d(np.random.default_rng(0))
    files = write_pair(tmp_path, pred, truth)
    tifffile.imwrite(files.gt, truth, compression="zlib")
    volumes = open_pair(files)
    assert [v.reads_whole for v in volumes] == [False, True]
    planes, counted = slabwise.plan_planes(files, volumes, 3, 1 << 40)
    assert counted == truth.nbytes + slabwise.slab_bytes(volumes, 3, planes * truth.shape[1])


def test_leading_axes_of_length_one_are_not_what_slabs_cut(tmp_path, monkeypatch):
    """A zarr of labels ``(1, Y, X)`` is cut into rows (whole chunks of 8), not held whole as
    one plane, and pairs with a ``(Y, X)`` TIFF."""
    import zarr

    pred, truth = pair_2d(np.random.default_rng(5))
    zarr.create_array(str(tmp_path / "p.zarr"), data=pred[None], chunks=(1, 8, 37))
    write_volume(tmp_path / "g.tif", Volume(truth))
    files = PairFiles(tmp_path / "p.zarr", tmp_path / "g.tif")
    assert open_pair(files)[0].shape == (1, *truth.shape)
    monkeypatch.setattr(slabwise, "SLAB_TARGET_VOXELS", 4 * truth.shape[1])
    result = evaluate_files(files, LabelReading(3))
    assert result.shape == truth.shape and result.planes == 8
    assert_same(result.row, pair_figures(pred, truth, 3)[0])


def test_a_gzipped_file_is_read_in_the_fewest_slabs_that_fit(tmp_path, monkeypatch):
    """Every read of a .nii.gz decompresses from the start: one slab when memory allows."""
    pred, truth = pair_3d(np.random.default_rng(3))
    write_volume(tmp_path / "p.nii.gz", Volume(pred))
    write_volume(tmp_path / "g.tif", Volume(truth))
    files = PairFiles(tmp_path / "p.nii.gz", tmp_path / "g.tif")
    monkeypatch.setattr(slabwise, "SLAB_TARGET_VOXELS", 1)
    whole = evaluate_files(files, LabelReading(2))
    assert whole.planes == len(truth)
    volumes = open_pair(files)
    table = whole.counted - slabwise.plan_planes(files, volumes, 2, 1 << 40)[1]
    budget = 2 * table + slabwise.slab_bytes(volumes, 2, 3 * truth[0].size)
    small = evaluate_files(files, LabelReading(2), budget=budget)
    assert small.planes < len(truth)
    assert_same(small.row, pair_figures(pred, truth, 2)[0])
