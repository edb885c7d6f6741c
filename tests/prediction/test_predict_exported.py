"""``unet-seg-predict checkpoint=<file>.onnx`` (or ``.pt``, or the ``.bioimageio.zip``) segments
as the ``.ckpt`` does."""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from tests.conftest import SAMPLES_DIR
from tests.prediction.test_predict import save_checkpoint
from unet_seg.config import config_dir
from unet_seg.export.run import export
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.prediction.batch import predict
from unet_seg.tuning.write_back import store_tuning

TINY_2D = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [4, 8, 16],
           "padding": "valid", "norm": "batch", "dropout": 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint (perturbed weights and running statistics) and its two exports."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("models")
    ckpt = save_checkpoint(root / "tiny.ckpt", TINY_2D, seed=3,
                           normalization={"low": 0.5, "high": 99.0}, perturb=0.1)  # fmt: skip
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("export", overrides=[f"checkpoint={ckpt}", f"output_dir={root}"])
    cfg.format = "torchscript"
    export(cfg)
    cfg.format = "onnx"
    export(cfg)
    cfg.format = "bioimageio"
    export(cfg)
    return {"ckpt": ckpt, "pt": root / "tiny.pt", "onnx": root / "tiny.onnx",
            "zip": root / "tiny.bioimageio.zip"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    """The sample stack's first 4 of 16 slices (spacing kept): every format still meets both
    classes and the tiles' edges, at a quarter of the work for each of the many predictions."""
    sample = read_volume(SAMPLES_DIR / "stack" / "stack.tif")
    path = tmp_path_factory.mktemp("stack") / "stack.tif"
    write_volume(path, Volume(sample.array[:4], spacing=sample.spacing))
    return path


def run_predict(checkpoint: Path, out: Path, stack: Path, **extra) -> dict:
    overrides = [f"checkpoint={checkpoint}", f"output_dir={out}", "progress=false",
                 f"input={stack}", "tile_size=160"]  # fmt: skip
    overrides += [f"{k}={v}" for k, v in extra.items()]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        summary = predict(compose("predict", overrides=overrides))
    assert summary["ok"] == 1, summary
    return summary


def test_exported_models_give_the_checkpoints_labels(tmp_path, stack, models):
    reference = run_predict(
        models["ckpt"], tmp_path / "ckpt", stack,
        **{"outputs.probabilities": True, "probability_dtype": "float16"},
    )  # fmt: skip
    labels_path, probs_path = (Path(p) for p in reference["files"][0]["outputs"])
    expected = read_volume(labels_path).array
    probs = read_volume(probs_path).array.astype(np.float32)
    assert expected.shape == (4, 256, 256) and 0 < expected.mean() < 1  # both classes occur
    unzipped = tmp_path / "unzipped"  # the package as bioimage.io's tools unpack it
    zipfile.ZipFile(models["zip"]).extractall(unzipped)
    for kind in ("pt", "onnx", "zip", "unzipped"):
        model = unzipped if kind == "unzipped" else models[kind]
        summary = run_predict(model, tmp_path / kind, stack)
        labels = read_volume(summary["files"][0]["outputs"][0]).array
        differ = labels != expected
        if kind != "onnx":  # the package holds the UNet's own weights
            np.testing.assert_array_equal(labels, expected)  # the same kernels on the same tiles
        else:
            # ONNX Runtime's kernels round differently (~1e-7): only near-ties may flip.
            assert differ.mean() < 1e-4
            assert np.all(np.abs(probs[1][differ] - 0.5) < 2e-3)


def test_predict_with_an_onnx_file_runs_without_lightning(tmp_path, stack, models):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['pytorch_lightning'] = None\n"  # any import of Lightning now fails
        "from hydra import compose, initialize_config_dir\n"
        "from unet_seg.config import config_dir\n"
        "from unet_seg.prediction.batch import predict\n"
        "with initialize_config_dir(config_dir=config_dir(), version_base='1.3'):\n"
        f"    cfg = compose('predict', overrides=['checkpoint={models['onnx']}', "
        f"'output_dir={tmp_path}', 'input={stack}', "
        "'progress=false'])\n"
        "summary = predict(cfg)\n"
        "assert summary['ok'] == 1, summary\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "stack_labels.tif").is_file()


def test_exports_carry_the_tuned_instance_postprocessing(tmp_path, stack, models):
    tuned_ckpt = shutil.copy(models["ckpt"], tmp_path / "tuned.ckpt")
    tuned = {"objective": "ap", "method": "cc", "score": 0.5, "tta": False,
             "roles": {"foreground_class": 1, "background_class": 0, "interior_class": 1},
             "methods": {"cc": {"min_size": 10**9}}, "scores": {"cc": 0.5}}  # fmt: skip
    store_tuning(tuned_ckpt, tuned)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("export", overrides=[f"checkpoint={tuned_ckpt}", f"output_dir={tmp_path}",
                                           "format=all"])  # fmt: skip
    export(cfg)
    on = {"outputs.instances": True}
    for suffix in (".pt", ".onnx", ".bioimageio.zip"):
        out = tmp_path / suffix[1:]
        summary = run_predict(tmp_path / f"tuned{suffix}", out, stack, **on)
        assert summary["instances"]["method"] == "cc"
        assert summary["instances"]["min_size"] == 10**9
        assert read_volume(out / "stack_instances.tif").array.max() == 0  # all too small
    # The random network's thousands of specks make the distance split slow: a corner will do.
    corner = read_volume(stack)
    small = tmp_path / "corner.tif"
    write_volume(small, Volume(corner.array[:2, :96, :96], spacing=corner.spacing))
    untuned = run_predict(models["onnx"], tmp_path / "untuned", small, **on)
    assert untuned["instances"]["method"] == "distance"  # predict's default without a tuning
    with zipfile.ZipFile(tmp_path / "tuned.bioimageio.zip") as package:
        rdf = yaml.safe_load(package.read("rdf.yaml"))
    assert rdf["config"]["unet_seg"]["instance_postprocessing"] == json.loads(json.dumps(tuned))


def _repack(source: Path, target: Path, change) -> Path:
    """A copy of the package ``source`` whose members pass through ``change(name, data)``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            data = change(name, old.read(name))
            if data is not None:
                new.writestr(name, data)
    return target


def test_damaged_and_foreign_packages_are_named(tmp_path, models):
    from unet_seg.models.checkpoint import load_model

    def cut_weights(name, data):
        return data[: len(data) // 2] if name == "weights_state_dict.pt" else data

    def foreign(name, data):
        if name != "rdf.yaml":
            return data
        rdf = yaml.safe_load(data)
        del rdf["config"]
        return yaml.safe_dump(rdf)

    cases = {
        "cut.bioimageio.zip": (cut_weights, "weights_state_dict.pt does not match the checksum"),
        "other.bioimageio.zip": (foreign, "a bioimage.io model that unet-seg-export did not"),
        "bare.zip": (lambda name, data: None if name == "rdf.yaml" else data, "no rdf.yaml"),
        "thin.zip": (
            lambda name, data: None if name.endswith("state_dict.pt") else data,
            "weights_state_dict.pt, the weights rdf.yaml names, is not in the package",
        ),
    }
    for name, (change, message) in cases.items():
        package = _repack(models["zip"], tmp_path / name, change)
        with pytest.raises(ValueError, match=message) as caught:
            load_model(package)
        assert str(caught.value).startswith(str(package))
    folder = tmp_path / "unzipped"  # a folder package missing its weights: the same message
    zipfile.ZipFile(tmp_path / "thin.zip").extractall(folder)
    with pytest.raises(ValueError, match=r"unzipped: weights_state_dict\.pt, the weights rdf"):
        load_model(folder)
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(ValueError, match=r"text\.zip: not a readable bioimage\.io package"):
        load_model(tmp_path / "text.zip")
    with pytest.raises(FileNotFoundError, match=r"missing\.bioimageio\.zip not found"):
        load_model(tmp_path / "missing.bioimageio.zip")


def _resaved_torchscript(source: Path, target: Path, meta_change=None, poison=False) -> Path:
    """``source`` saved again as ``target``: its metadata changed by ``meta_change``, or its
    weights made NaN (``poison``): a file that no longer keeps the contract it declares."""
    extra = {"unet_seg.json": ""}
    module = torch.jit.load(str(source), _extra_files=extra)
    meta = json.loads(extra["unet_seg.json"])
    if meta_change:
        meta.update(meta_change)
    if poison:
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.fill_(float("nan"))
    torch.jit.save(module, str(target), _extra_files={"unet_seg.json": json.dumps(meta)})
    return target


@pytest.mark.parametrize(
    ("change", "poison", "says"),
    [({"num_classes": 3}, False, r"returned shape \(\d+, 2, .*declares 3 classes"),
     (None, True, "returned NaN or infinite values")],
)  # fmt: skip
def test_an_exported_file_that_breaks_its_contract_fails_naming_it(
    tmp_path, stack, models, change, poison, says
):
    """A model file whose outputs do not match its metadata (other classes) or are not finite
    fails its input naming the file, and leaves no labels behind (never background, exit 0)."""
    bad = _resaved_torchscript(models["pt"], tmp_path / "bad.pt", change, poison)
    out = tmp_path / "out"
    overrides = [f"checkpoint={bad}", f"output_dir={out}", "progress=false",
                 f"input={stack}", "tile_size=160"]  # fmt: skip
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        summary = predict(compose("predict", overrides=overrides))
    (entry,) = summary["files"]
    assert summary["failed"] == 1 and entry["status"] == "failed"
    assert str(bad) in entry["error"]
    assert re.search(says, entry["error"]), entry["error"]
    assert not list(out.glob("stack_*.tif"))


def _with_rdf(source: Path, target: Path, edit) -> Path:
    """The package ``source`` repacked with its rdf.yaml passed through ``edit(rdf)``."""

    def change(name, data):
        if name != "rdf.yaml":
            return data
        rdf = yaml.safe_load(data)
        edit(rdf)
        return yaml.safe_dump(rdf)

    return _repack(source, target, change)


def test_untrusted_packages_are_bounded_and_kept_inside(tmp_path, models):
    """A package is as untrusted as a pickle: a description that inflates past its bound, a
    weights entry that leaves the package, or one that is a device, is refused naming the
    package and the entry, before anything big is read."""
    from unet_seg.models.bioimageio_package import DESCRIPTION_MAX_BYTES
    from unet_seg.models.checkpoint import load_model

    bomb = tmp_path / "bomb.zip"  # ~17 MiB of spaces deflate to a few kB
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rdf.yaml", "a: 1\n" + " " * (DESCRIPTION_MAX_BYTES + 1))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"bomb\.zip: rdf\.yaml declares [\d,]+ bytes, more"):
        load_model(bomb)

    def source(value):
        return lambda rdf: rdf["weights"]["pytorch_state_dict"].update(source=value, sha256=None)

    for name, value in (("up.zip", "../weights_state_dict.pt"), ("abs.zip", "/dev/zero"),
                        ("num.zip", 7)):  # fmt: skip
        package = _with_rdf(models["zip"], tmp_path / name, source(value))
        with pytest.raises(ValueError, match="refused, the entry points outside the package"):
            load_model(package)

    folder = tmp_path / "folder"  # a folder package whose weights are a link to a device
    zipfile.ZipFile(models["zip"]).extractall(folder)
    (folder / "weights_state_dict.pt").unlink()
    (folder / "weights_state_dict.pt").symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"folder: weights_state_dict\.pt: refused, a link out"):
        load_model(folder)
    (folder / "weights_state_dict.pt").unlink()
    os.mkfifo(folder / "weights_state_dict.pt")  # inside, but no regular file: never opened
    with pytest.raises(ValueError, match=r"weights_state_dict\.pt: refused, not a regular file"):
        load_model(folder)


def test_a_described_network_is_built_only_when_the_weights_fit_it(tmp_path, models):
    """Huge ``features`` in the description: refused from the shapes, with no network of
    that size allocated (the old path allocated it first, then compared)."""
    from unet_seg.models.checkpoint import load_model

    def huge(rdf):
        rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["features"] = [
            f << 18 for f in (4, 8, 16)
        ]

    package = _with_rdf(models["zip"], tmp_path / "huge.zip", huge)
    wrong = (
        r"is \((4|8|16), [^)]*\) in the file, \((1048576|2097152|4194304), [^)]*\) in the network"
    )
    with pytest.raises(
        ValueError, match=r"huge\.zip: the weights do not fit the described network \(.* " + wrong
    ):
        load_model(package)
