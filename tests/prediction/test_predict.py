"""End-to-end prediction on a tiny checkpoint: formats, skipping, failures, atomic outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from unet_seg.blockwise import task
from unet_seg.config import config_dir
from unet_seg.errors import UsageError
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import predict_tiled
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.normalization import normalize_percentile
from unet_seg.prediction.batch import predict
from unet_seg.prediction.ownership import REGISTER_NAME
from unet_seg.training.module import SegmentationModule

TINY_2D = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [4, 8],
           "padding": "valid", "norm": None, "dropout": 0.0}  # fmt: skip
TINY_3D = {**TINY_2D, "spatial_dims": 3}
HIDDEN_OURS = (".hydra", REGISTER_NAME)  # Hydra's config record; the register of our outputs


def save_checkpoint(
    path: Path,
    model_cfg: dict,
    seed: int | None = None,
    normalization: dict | None = None,
    perturb: float = 0.0,
) -> Path:
    """A checkpoint as Lightning writes it, for a randomly initialised module (``seed``: a
    reproducible one); ``normalization``: the stored percentiles (default 1.0 / 99.8);
    ``perturb`` > 0: every float tensor shifted by ``perturb`` x N(0, 1) and batch norm's
    running variances drawn from [0.5, 1.5), so exports cannot pass on default statistics."""
    if seed is not None:
        torch.manual_seed(seed)
    module = SegmentationModule(
        model=model_cfg, normalization=normalization or {"low": 1.0, "high": 99.8}
    )
    if perturb:
        with torch.no_grad():
            for name, tensor in module.state_dict().items():
                if name.endswith("running_var"):
                    tensor.copy_(0.5 + torch.rand_like(tensor))
                elif tensor.is_floating_point():
                    tensor.add_(perturb * torch.randn_like(tensor))
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
         "pytorch-lightning_version": pl.__version__},
        path,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def ckpt_2d(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model2d.ckpt", TINY_2D)


def config(**overrides):
    args = [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("predict", overrides=[*args, "progress=false"])


def stack(rng, shape=(3, 37, 45)) -> np.ndarray:
    return rng.integers(0, 4000, shape).astype(np.uint16)


@pytest.mark.parametrize(
    "name,shape,spacing",
    [("s.tif", (3, 37, 45), (2.0, 0.5, 0.5)), ("v.nii.gz", (4, 21, 30), (3.0, 0.8, 0.7)),
     ("v.nii", (2, 20, 19), (1.0, 1.0, 1.0)), ("im.png", (33, 40), (1.0, 1.0))],
)  # fmt: skip
def test_outputs_keep_format_shape_and_geometry(tmp_path, rng, ckpt_2d, name, shape, spacing):
    image = write_volume(tmp_path / "in" / name, Volume(stack(rng, shape).astype(
        np.uint8 if name.endswith(".png") else np.uint16), spacing=spacing))  # fmt: skip
    out = tmp_path / "out"
    cfg = config(input=image, output_dir=out, checkpoint=ckpt_2d,
                 **{"outputs.probabilities": True, "outputs.instances": True})  # fmt: skip
    summary = predict(cfg)
    assert summary["ok"] == 1 and summary["failed"] == 0
    entry = summary["files"][0]
    assert entry["shape"] == list(shape) and entry["voxels_per_second"] > 0
    source = read_volume(image)
    volumes = [p for p in entry["outputs"] if not p.endswith(".csv")]
    tables = [p for p in entry["outputs"] if p.endswith(".csv")]
    assert len(volumes) == 3
    assert [Path(p).name for p in tables] == [name.split(".")[0] + "_objects.csv"]
    for path in volumes:
        back = read_volume(path)
        assert back.array.shape[-len(shape) :] == shape
        assert back.spacing[-len(shape) :] == pytest.approx(source.spacing)
        np.testing.assert_allclose(back.affine, source.affine)
    labels = read_volume(entry["outputs"][0]).array
    probs = read_volume(entry["outputs"][1]).array
    assert probs.shape == (2, *shape)
    # The label map is the argmax of the stored probabilities (uint8, ties aside).
    agree = (probs[1] > probs[0]) == (labels == 1)
    assert agree.mean() > 0.99
    # One table row per instance, sized in the file's own physical units.
    instances = read_volume(volumes[2]).array
    with open(tables[0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(int(r["label"]) for r in rows) == sorted(set(np.unique(instances)) - {0})
    for r in rows:
        voxels = int((instances == int(r["label"])).sum())
        assert int(r["voxels"]) == voxels
        assert float(r["physical_size"]) == pytest.approx(voxels * np.prod(source.spacing))
    assert json.loads((out / "predict_summary.json").read_text())["ok"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name not in HIDDEN_OURS]


def test_labels_equal_in_memory_prediction(tmp_path, rng, ckpt_2d):
    array = stack(rng, (5, 50, 61))
    image = write_volume(tmp_path / "s.tif", Volume(array))
    predict(config(input=image, output_dir=tmp_path, checkpoint=ckpt_2d, tile_size=24,
                   batch_size=3))  # fmt: skip
    module = SegmentationModule.load_from_checkpoint(ckpt_2d, map_location="cpu", weights_only=True)
    model = module.model.eval()
    norm = normalize_percentile(array)[None]  # the whole stack is small: exact percentiles
    probs = predict_tiled(norm, model, ModelRunner(model, "cpu"), tile_size=512)
    np.testing.assert_array_equal(read_volume(tmp_path / "s_labels.tif").array, probs.argmax(0))


def test_slice_axis_predicts_along_another_axis(tmp_path, rng, ckpt_2d):
    array = stack(rng, (20, 6, 22))
    image = write_volume(tmp_path / "s.tif", Volume(array))
    predict(config(input=image, output_dir=tmp_path / "a", checkpoint=ckpt_2d, slice_axis=1))
    moved = write_volume(tmp_path / "t.tif", Volume(np.ascontiguousarray(array.transpose(1, 0, 2))))
    predict(config(input=moved, output_dir=tmp_path / "b", checkpoint=ckpt_2d))
    a = read_volume(tmp_path / "a" / "s_labels.tif").array
    b = read_volume(tmp_path / "b" / "t_labels.tif").array
    np.testing.assert_array_equal(a, b.transpose(1, 0, 2))


def test_3d_model_on_nifti_volume(tmp_path, rng):
    ckpt = save_checkpoint(tmp_path / "m3.ckpt", TINY_3D)
    image = write_volume(tmp_path / "v.nii.gz", Volume(stack(rng, (14, 17, 19)), spacing=(2, 1, 1)))
    summary = predict(config(input=image, output_dir=tmp_path / "o", checkpoint=ckpt, tile_size=8))
    assert summary["ok"] == 1 and summary["files"][0]["tiles"] > 1
    assert read_volume(tmp_path / "o" / "v_labels.nii.gz").array.shape == (14, 17, 19)


def test_skip_existing_and_overwrite(tmp_path, rng, ckpt_2d):
    image = write_volume(tmp_path / "in" / "s.tif", Volume(stack(rng)))
    out = tmp_path / "out"
    assert predict(config(input=image, output_dir=out, checkpoint=ckpt_2d))["ok"] == 1
    complete = (out / "s_labels.tif").read_bytes()
    summary = predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt_2d))
    assert summary["skipped"] == 1 and (out / "s_labels.tif").read_bytes() == complete
    # A cut or foreign file under the name was not written by us: refused, and redone only
    # with overwrite=true.
    for broken in (complete[: len(complete) // 2], b"marker"):
        (out / "s_labels.tif").write_bytes(broken)
        with pytest.raises(UsageError, match="not written by unet-seg"):
            predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt_2d))
        assert (out / "s_labels.tif").read_bytes() == broken
        summary = predict(config(input=image, output_dir=out, checkpoint=ckpt_2d, overwrite=True))
        assert summary["ok"] == 1 and (out / "s_labels.tif").read_bytes() == complete


def test_bad_file_is_reported_and_the_batch_goes_on(tmp_path, rng, ckpt_2d):
    folder = tmp_path / "in"
    write_volume(folder / "a.tif", Volume(stack(rng)))
    (folder / "b.tif").write_bytes(b"not a tiff at all")
    write_volume(folder / "c.tif", Volume(stack(rng, (4, 4))))  # too small is fine: mirrored
    write_volume(folder / "d.tif", Volume(stack(rng, (2, 2, 3, 3))))  # 4D: wrong layout
    summary = predict(config(input=folder, output_dir=tmp_path / "out", checkpoint=ckpt_2d))
    status = {Path(e["input"]).name: e["status"] for e in summary["files"]}
    assert status == {"a.tif": "ok", "b.tif": "failed", "c.tif": "ok", "d.tif": "failed"}
    errors = [e["error"] for e in summary["files"] if e["status"] == "failed"]
    assert "b.tif" in errors[0] and "d.tif" in errors[1]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [REGISTER_NAME, "a_labels.tif", "a_preview.png", "c_labels.tif",
                     "c_preview.png", "predict_summary.json"]  # fmt: skip


def test_exception_mid_file_leaves_no_partial_output(tmp_path, rng, ckpt_2d, monkeypatch):
    image = write_volume(tmp_path / "s.tif", Volume(stack(rng, (6, 30, 30))))
    calls = []

    def failing(probs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return probs.argmax(0).astype(np.uint8)

    monkeypatch.setattr(task, "probabilities_to_labels", failing)  # in the 2nd z-slab
    out = tmp_path / "out"
    summary = predict(config(input=image, output_dir=out, checkpoint=ckpt_2d, batch_size=1,
                             **{"outputs.probabilities": True}))  # fmt: skip
    assert summary["failed"] == 1 and "disk full" in summary["files"][0]["error"]
    assert sorted(p.name for p in out.iterdir()) == [REGISTER_NAME, "predict_summary.json"]


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="unet-seg-train experiment=sample_2d"):
        predict(config(checkpoint=tmp_path / "none.ckpt", output_dir=tmp_path))


@pytest.mark.slow  # a fresh interpreter importing torch and Lightning
def test_cli_exit_code_is_nonzero_when_a_file_failed(tmp_path, rng, ckpt_2d):
    folder = tmp_path / "in"
    write_volume(folder / "a.tif", Volume(stack(rng)))
    (folder / "b.nii.gz").write_bytes(b"broken")
    cmd = [sys.executable, "-m", "unet_seg.cli.predict", f"input={folder}",
           f"output_dir={tmp_path / 'out'}", f"checkpoint={ckpt_2d}", "progress=false"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "b.nii.gz" in result.stderr and "1 predicted" in result.stdout
    assert (tmp_path / "out" / "a_labels.tif").is_file()


def test_outputs_in_the_input_folder_are_not_inputs(tmp_path, rng, ckpt_2d):
    write_volume(tmp_path / "s.tif", Volume(stack(rng)))
    cfg = config(input=tmp_path, output_dir=tmp_path, checkpoint=ckpt_2d)
    assert predict(cfg)["ok"] == 1
    summary = predict(cfg)  # s_labels.tif is now in the folder too
    assert [Path(e["input"]).name for e in summary["files"]] == ["s.tif"]
    assert summary["skipped"] == 1


def test_percentiles_of_a_strided_subsample_match_the_exact_ones(rng, monkeypatch):
    from unet_seg import normalization

    volume = rng.gamma(2.0, 100.0, (40, 120, 130)).astype(np.float32)
    exact = np.percentile(volume, [1.0, 99.8])
    assert normalization.percentile_range(volume, 1.0, 99.8) == pytest.approx(exact)  # all read
    monkeypatch.setattr(
        normalization, "_PERCENTILE_SAMPLES", 50_000
    )  # every ~3rd slice, row, column
    lo, hi = normalization.percentile_range(volume, 1.0, 99.8)
    assert lo == pytest.approx(exact[0], rel=0.1) and hi == pytest.approx(exact[1], rel=0.05)
    assert (lo, hi) != pytest.approx(exact, rel=1e-6)  # really a subsample


def test_probabilities_alone_need_no_label_map(tmp_path, rng, ckpt_2d):
    image = write_volume(tmp_path / "in" / "p.tif", Volume(stack(rng, (3, 40, 48))))
    out = tmp_path / "out"
    cfg = config(input=image, output_dir=out, checkpoint=ckpt_2d,
                 **{"outputs.labels": False, "outputs.probabilities": True})  # fmt: skip
    summary = predict(cfg)
    assert summary["ok"] == 1, summary["files"]
    assert read_volume(out / "p_probs.tif").array.shape == (2, 3, 40, 48)
    assert not (out / "p_labels.tif").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name not in HIDDEN_OURS]
