"""Export: TorchScript and ONNX reproduce the checkpoint's probabilities, bioimage.io packages
validate, the size arithmetic they publish is the network's, and the CLI names files sensibly."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from tests.prediction.test_predict import save_checkpoint
from unet_seg.config import config_dir
from unet_seg.errors import UsageError
from unet_seg.evaluation.predicted_classes import boundary_label_map
from unet_seg.export.bioimageio import PackageInfo, export_bioimageio, package_input_size
from unet_seg.export.run import NAME_ALPHABET, export, export_name, package_name
from unet_seg.export.same_size import axis_rule
from unet_seg.export.torchscript import export_torchscript
from unet_seg.export.unet_architecture import UNet as StandaloneUNet
from unet_seg.models import UNet, shapes
from unet_seg.models.checkpoint import training_target
from unet_seg.models.exported import load_exported
from unet_seg.training.module import SegmentationModule

NORM = {"low": 2.0, "high": 99.5}
TINY_2D = {"spatial_dims": 2, "in_channels": 1, "num_classes": 3, "features": [4, 8, 16],
           "padding": "valid", "dropout": 0.0}  # fmt: skip
TINY_3D = {"spatial_dims": 3, "in_channels": 2, "num_classes": 2, "features": [4, 8],
           "padding": "valid", "dropout": 0.0}  # fmt: skip
# Two accepted sizes per model, neither the one traced at export (minimum + one step).
SIZES = {2: [(44, 44), (60, 76)], 3: [(18, 18, 18), (22, 18, 26)]}


def trained_like(cfg: dict) -> UNet:
    """A model with non-trivial biases, so that a dropped layer could not go unnoticed."""
    model = UNet(**cfg).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def probabilities(net, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(x).softmax(dim=1).numpy()


@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("pooled", [True, False])
def test_size_rule_lists_exactly_the_accepted_sizes(depth, padding, pooled):
    minimum, step, margin = shapes.size_rule(depth, padding, pooled)
    for size in range(1, 400):
        accepted = shapes.is_valid_size(size, depth, padding, pooled)
        assert accepted == (size >= minimum and (size - minimum) % step == 0), size
        if accepted:
            assert shapes.output_shape([size], depth, padding, [pooled]) == (size - margin,)


def test_size_rule_of_the_paper_network():
    # 572 -> 388 (Fig. 1): inputs 16k + 12, the smallest 188, margin 184.
    assert shapes.size_rule(5) == (188, 16, 184)
    assert (572 - 188) % 16 == 0


@pytest.mark.parametrize("cfg", [TINY_2D, TINY_3D], ids=["2d", "3d"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_probabilities_equal_the_model(tmp_path, cfg, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
        from unet_seg.export.onnx import export_onnx as exporter
    else:
        exporter = export_torchscript
    model = trained_like(cfg)
    path = exporter(model, NORM, tmp_path / f"m{'.onnx' if fmt == 'onnx' else '.pt'}")
    net, norm = load_exported(path)
    assert norm == NORM
    assert (net.spatial_dims, net.in_channels, net.num_classes) == (
        cfg["spatial_dims"], cfg["in_channels"], cfg["num_classes"])  # fmt: skip
    tolerance = 1e-4 if fmt == "onnx" else 1e-5
    for size in SIZES[cfg["spatial_dims"]]:
        for batch in (1, 3):
            x = torch.randn(batch, cfg["in_channels"], *size)
            expected = probabilities(model, x)
            got = probabilities(net, x)
            assert got.shape == (batch, cfg["num_classes"], *model.output_shape(size))
            assert net.output_shape(size) == model.output_shape(size)
            np.testing.assert_allclose(got, expected, atol=tolerance, rtol=0)


def test_exported_network_rejects_sizes_the_network_does_not_accept(tmp_path):
    net, _ = load_exported(export_torchscript(trained_like(TINY_2D), NORM, tmp_path / "m.pt"))
    with pytest.raises(ValueError, match="nearest valid sizes: 44 or 48"):
        net(torch.zeros(1, 1, 46, 44))
    with pytest.raises(ValueError, match="expected input"):
        net(torch.zeros(1, 2, 44, 44))


def test_loading_explains_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        load_exported(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"junk\.pt: cannot load as TorchScript"):
        load_exported(junk)
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(plain))
    with pytest.raises(ValueError, match=r"without unet_seg\.json"):
        load_exported(plain)
    other = tmp_path / "m.h5"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="unknown model file type"):
        load_exported(other)


@pytest.mark.parametrize(
    "cfg",
    [TINY_2D, TINY_3D, {**TINY_2D, "padding": "same", "norm": "batch"},
     {**TINY_3D, "norm": "instance", "inplane_pooling": True}],
    ids=["2d", "3d", "same-batchnorm", "3d-instancenorm-inplane"],
)  # fmt: skip
def test_standalone_architecture_loads_the_state_dict_and_computes_the_same(cfg):
    from unet_seg.export.bioimageio import network_kwargs

    model = trained_like(cfg)
    standalone = StandaloneUNet(**network_kwargs(model)).eval()
    standalone.load_state_dict(model.state_dict(), strict=True)
    size = [s + (4 if cfg.get("padding") == "same" else 0) for s in SIZES[cfg["spatial_dims"]][1]]
    if cfg.get("inplane_pooling"):
        size[0] = 13  # unpooled axis: any size above the trim
    x = torch.randn(2, cfg["in_channels"], *size)
    with torch.no_grad():
        expected = standalone(x).numpy()
        # Without autograd our UpBlock skips the concatenation (same sum, another order).
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model(x).detach().numpy(), expected)  # concatenating path


def bioimageio_package(tmp_path, cfg, **info) -> tuple[Path, dict]:
    pytest.importorskip("bioimageio.spec")
    pytest.importorskip("onnx")
    path = export_bioimageio(
        trained_like(cfg),
        NORM,
        tmp_path / "model.bioimageio.zip",
        PackageInfo(name="tiny U-Net", **info),
    )
    with zipfile.ZipFile(path) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    return path, rdf


def test_bioimageio_package_validates_and_states_the_arithmetic(tmp_path):
    from bioimageio.spec import load_description
    from bioimageio.spec.model.v0_5 import ModelDescr

    path, rdf = bioimageio_package(tmp_path, TINY_2D, class_names=["bg", "cell", "edge"])
    description = load_description(path)
    assert isinstance(description, ModelDescr), description.validation_summary.format()
    assert rdf["format_version"].startswith("0.5")
    (inputs,), (outputs,) = rdf["inputs"], rdf["outputs"]
    rule = axis_rule(3, "valid", True)  # tiles of 50 + 4 n, halo 23: the same-size form
    for axis in inputs["axes"][2:]:
        assert axis["size"] == {"min": rule.minimum, "step": rule.step}
    for axis in outputs["axes"][2:]:
        assert axis["size"] == {"tensor_id": "input", "axis_id": axis["id"]}
        assert axis["halo"] == rule.halo
    assert inputs["pad"] == {"mode": "reflect"}  # the image border, as unet-seg-predict pads it
    assert outputs["axes"][1]["channel_names"] == ["bg", "cell", "edge"]
    scale_range = next(p for p in inputs["preprocessing"] if p["id"] == "scale_range")
    assert scale_range["kwargs"]["min_percentile"] == NORM["low"]
    assert scale_range["kwargs"]["max_percentile"] == NORM["high"]
    assert outputs["postprocessing"][0]["id"] == "softmax"
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        test_in = np.load(archive.open("test_input.npy"))
        test_out = np.load(archive.open("test_output.npy"))
    assert {"README.md", "cover.png", "unet_architecture.py"} <= names
    assert {inputs["sample_tensor"]["source"], outputs["sample_tensor"]["source"]} <= names
    size = package_input_size(UNet(**TINY_2D))
    assert test_in.shape == (1, 1, *size)
    assert test_out.shape == (1, 3, *size)
    np.testing.assert_allclose(test_out.sum(axis=1), 1.0, atol=1e-5)


def test_bioimageio_test_image_is_the_centre_of_the_given_image(tmp_path):
    pytest.importorskip("bioimageio.spec")
    from unet_seg.export.bioimageio import package_test_input

    model = UNet(**TINY_2D)
    image = np.arange(300 * 200, dtype=np.float32).reshape(300, 200)
    got = package_test_input(model, np.stack([image] * 5))  # a stack: its middle slice
    size = package_input_size(model)
    y0, x0 = (300 - size[0]) // 2, (200 - size[1]) // 2
    np.testing.assert_array_equal(got[0, 0], image[y0 : y0 + size[0], x0 : x0 + size[1]])


@pytest.mark.slow
def test_bioimageio_package_3d_passes_the_bioimageio_core_test_run(tmp_path):
    core = pytest.importorskip("bioimageio.core")
    path, rdf = bioimageio_package(tmp_path, TINY_3D)
    assert [a["id"] for a in rdf["inputs"][0]["axes"][2:]] == ["z", "y", "x"]
    summary = core.test_model(path)
    assert summary.status == "passed", summary.format()


def export_config(**overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("export", overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_export_command_names_files_after_the_run(tmp_path):
    pytest.importorskip("onnx")
    (tmp_path / "runs" / "cells").mkdir(parents=True)
    ckpt = save_checkpoint(tmp_path / "runs" / "cells" / "model.ckpt", TINY_2D, normalization=NORM)
    assert export_name(ckpt) == "cells" and export_name("a/best-epoch3.ckpt") == "best-epoch3"
    out = tmp_path / "out"
    written = export(export_config(checkpoint=ckpt, format="torchscript", output_dir=out))
    assert written == {"torchscript": out / "cells.pt"}
    written = export(export_config(checkpoint=ckpt, format="onnx", output_dir=out, name="n"))
    assert written == {"onnx": out / "n.onnx"}
    module = SegmentationModule.load_from_checkpoint(ckpt, map_location="cpu")
    x = torch.randn(1, 1, 60, 60)
    for path in (out / "cells.pt", out / "n.onnx"):
        net, norm = load_exported(path)
        assert norm == NORM
        np.testing.assert_allclose(
            probabilities(net, x), probabilities(module.model.eval(), x), atol=1e-4
        )


@pytest.mark.parametrize(
    ("stem", "name"),
    [("epoch000-dice0.9120", "U-Net epoch000-dice0_9120"), ("cells", "U-Net cells"),
     ("a" * 200, "U-Net " + "a" * 122), ("zellen-ä.v2", "U-Net zellen-__v2")],
)  # fmt: skip
def test_any_checkpoint_name_makes_a_valid_package_name(stem, name):
    assert package_name(stem) == name
    assert set(name) <= set(NAME_ALPHABET) and 5 <= len(name) <= 128


def test_a_package_name_given_is_kept_or_refused_before_any_file_is_written(tmp_path):
    assert package_name("x", "My U-Net (v2)") == "My U-Net (v2)"
    ckpt = save_checkpoint(tmp_path / "cells.ckpt", TINY_2D, normalization=NORM)
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=r"bioimageio.name='U-Net 1.0': .* \(not '\.'\)"):
        export(export_config(checkpoint=ckpt, format="all", output_dir=out,
                             **{"bioimageio.name": "'U-Net 1.0'"}))  # fmt: skip
    assert not out.exists()


def test_export_command_rejects_other_inputs(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export(export_config(checkpoint=tmp_path / "m.ckpt", format="keras"))
    with pytest.raises(ValueError, match="needs a training checkpoint"):
        export(export_config(checkpoint=tmp_path / "m.onnx"))
    with pytest.raises(FileNotFoundError, match=r"m\.ckpt"):
        export(export_config(checkpoint=tmp_path / "m.ckpt"))


def test_exports_record_what_the_network_learnt(tmp_path):
    """The checkpoint's data.target travels into every export, so evaluate can tell a boundary
    model's 0/1/2 labels from the files predict ran it from."""
    pytest.importorskip("onnx")
    pytest.importorskip("bioimageio.spec")
    # A run's own checkpoint name, whose dots the bioimage.io spec refuses in a package name.
    ckpt = save_checkpoint(tmp_path / "epoch000-dice0.9120.ckpt", TINY_2D, normalization=NORM)
    content = torch.load(ckpt, weights_only=True)
    assert training_target(ckpt) is None  # a checkpoint without data settings does not say
    torch.save({**content, "datamodule_hyper_parameters": {"target": "boundary"}}, ckpt)
    written = export(export_config(checkpoint=ckpt, format="all", output_dir=tmp_path / "out"))
    assert sorted(written) == ["bioimageio", "onnx", "torchscript"]
    with zipfile.ZipFile(written["bioimageio"]) as archive:
        assert yaml.safe_load(archive.read("rdf.yaml"))["name"] == "U-Net epoch000-dice0_9120"
    for path in [ckpt, *written.values()]:
        assert training_target(path) == "boundary", path
        pred_dir = tmp_path / f"pred_{path.name}"
        pred_dir.mkdir()
        (pred_dir / "predict_summary.json").write_text(json.dumps({"checkpoint": str(path)}))
        assert boundary_label_map(pred_dir) == {0: 0, 1: 1, 2: 1}
    torch.save({**content, "datamodule_hyper_parameters": {"target": "classes"}}, ckpt)
    written = export(export_config(checkpoint=ckpt, format="onnx", output_dir=tmp_path / "cls"))
    assert training_target(written["onnx"]) == "classes"
