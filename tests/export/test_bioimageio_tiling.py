"""bioimage.io packages run by bioimage.io's own tools: ``bioimageio.core``'s test run passes in
every weight format, and its tiled prediction (``blocksize_parameter``) gives the labels of
``unet-seg-predict`` on the same image, through the same-size form of ``export.same_size``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.prediction.test_predict import save_checkpoint
from unet_seg.config import config_dir
from unet_seg.export.run import export
from unet_seg.export.same_size import AxisRule, SameSizeNetwork, axis_rule, axis_rules
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.models import UNet, shapes
from unet_seg.prediction.batch import predict

# Four levels in 2D: step 8 and a margin (88) that is no whole number of steps, so the halo
# and the mirror must keep the pooling grid. Two levels in 3D keep the test short.
NET_2D = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [4, 8, 16, 32],
          "padding": "valid", "norm": "batch", "dropout": 0.0}  # fmt: skip
NET_3D = {**NET_2D, "spatial_dims": 3, "features": [4, 8]}


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
@pytest.mark.parametrize("pooled", [True, False])
def test_same_size_rule_keeps_the_pooling_grid(depth, pooled):
    rule = axis_rule(depth, "valid", pooled)
    _, step, margin = shapes.size_rule(depth, "valid", pooled)
    assert rule.step == step and rule.halo == margin // 2 + step - 1
    assert rule.before - rule.trim_before == margin // 2 == rule.after - rule.trim_after
    mirrored = rule.minimum + rule.before + rule.after
    assert shapes.is_valid_size(mirrored, depth, "valid", pooled)  # and so every minimum + n step
    assert (rule.minimum - 2 * rule.halo) % step == 0  # kept centres: whole steps
    # A tile whose centre starts on a whole step: its first network voxel lies where
    # unet-seg-predict's first one (half the margin before the image) lies, up to whole steps.
    assert (-rule.halo - rule.before + margin // 2) % step == 0
    same_minimum, same_step, _ = shapes.size_rule(depth, "same", pooled)
    assert axis_rule(depth, "same", pooled) == AxisRule(same_minimum, same_step, 0, 0, 0, 0, 0)


def test_the_paper_network_gets_halo_107_and_tiles_from_230():
    assert axis_rule(5, "valid", True) == AxisRule(230, 16, 107, 97, 101, 5, 9)


@pytest.mark.parametrize("cfg", [NET_2D, NET_3D], ids=["2d", "3d"])
def test_same_size_network_keeps_the_valid_networks_output_on_grid_tiles(cfg):
    """A tile whose kept centre starts on the grid gives, halo cropped, the valid network's
    output on the image mirrored by half the margin (what unet-seg-predict computes)."""
    torch.manual_seed(0)
    net = UNet(**{**cfg, "features": [2**k for k in range(1, len(cfg["features"]) + 1)]}).eval()
    rules = axis_rules(net)
    centres = [r.minimum - 2 * r.halo for r in rules]  # whole steps
    starts = [-(-r.halo // c) * c for r, c in zip(rules, centres, strict=True)]  # >= the halo
    image = np.random.default_rng(0).standard_normal(
        (1, 1, *(s + r.minimum for s, r in zip(starts, rules, strict=True)))
    )
    # unet-seg-predict: half the margin mirrored before, as much or more after (a valid size).
    valid = [shapes.size_rule(net.depth, "valid", p)[0] for p in net.pooled_axes]
    margins = [shapes.size_rule(net.depth, "valid", p)[2] for p in net.pooled_axes]
    half = [(m // 2, m // 2 + (v - m - n) % r.step)
            for r, v, m, n in zip(rules, valid, margins, image.shape[2:], strict=True)]  # fmt: skip
    mirrored = np.pad(image, [(0, 0), (0, 0), *half], mode="reflect")
    tile = tuple(
        slice(s - r.halo, s - r.halo + r.minimum) for s, r in zip(starts, rules, strict=True)
    )
    kept = tuple(slice(r.halo, r.minimum - r.halo) for r in rules)
    where = tuple(slice(s, s + c) for s, c in zip(starts, centres, strict=True))
    with torch.no_grad():
        expected = net(torch.from_numpy(mirrored).float())[(..., *where)]
        got = SameSizeNetwork(net).eval()(torch.from_numpy(image[(..., *tile)]).float())
    assert got.shape[2:] == tuple(r.minimum for r in rules)
    np.testing.assert_allclose(got[(..., *kept)].numpy(), expected.numpy(), atol=1e-5)


def _checkpoint_and_package(root: Path, cfg: dict) -> tuple[Path, Path]:
    """A checkpoint with perturbed weights and running statistics, and its bioimage.io package
    exported by ``unet-seg-export format=bioimageio``."""
    ckpt = save_checkpoint(root / f"net{cfg['spatial_dims']}d.ckpt", cfg, seed=5,
                           normalization={"low": 1.0, "high": 99.0}, perturb=0.2)  # fmt: skip
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        export_cfg = compose("export", overrides=[f"checkpoint={ckpt}", f"output_dir={root}",
                                                  "format=bioimageio"])  # fmt: skip
    export(export_cfg)
    return ckpt, root / f"{ckpt.stem}.bioimageio.zip"


def _our_labels(ckpt: Path, image: np.ndarray, root: Path) -> np.ndarray:
    """The labels ``unet-seg-predict`` writes for ``image`` (``(*spatial)``)."""
    root.mkdir(parents=True, exist_ok=True)
    source = write_volume(root / "image.tif", Volume(image))
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        overrides = [f"checkpoint={ckpt}", f"input={source}", f"output_dir={root / 'ours'}"]
        cfg = compose("predict", overrides=[*overrides, "progress=false"])
    summary = predict(cfg)
    assert summary["ok"] == 1, summary
    return read_volume(summary["files"][0]["outputs"][0]).array


def _tiled_labels(package: Path, image: np.ndarray, blocksize, weight_format=None) -> np.ndarray:
    """``bioimageio.core``'s tiled prediction of ``image``: the argmax of its probabilities."""
    from bioimageio.core import Tensor, create_prediction_pipeline, load_description
    from bioimageio.core import predict as core_predict

    model = load_description(package)
    pipeline = create_prediction_pipeline(model, weight_format=weight_format)
    # A Tensor with named axes: bioimageio.core refuses plain arrays of a size the model
    # does not take as one tile, which tiling is for.
    axes = ("batch", "channel", *"zyx"[-image.ndim :])
    sample = core_predict(model=pipeline, inputs=Tensor(image[None, None], dims=axes),
                          blocksize_parameter=blocksize)  # fmt: skip
    probabilities = sample.members["output"].data.values[0]
    assert probabilities.shape[1:] == image.shape
    return probabilities.argmax(axis=0).astype(np.uint8)


ALL_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")


@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg,cases",
    # blocksize_parameter -> (image shape: a multiple of the step, at least one tile; formats)
    [(NET_2D, {0: ((200, 192), ALL_FORMATS), 2: ((128, 136), ("pytorch_state_dict",))}),
     (NET_3D, {0: ((40, 42, 40), ("torchscript",)), 2: ((24, 26, 24), ("onnx",))})],
    ids=["2d", "3d"],
)  # fmt: skip
def test_bioimageio_core_tiles_the_package_into_our_labels(tmp_path, cfg, cases):
    """``bioimageio test`` passes (all three weight formats, sample tensors present), and tiled
    prediction with ``blocksize_parameter`` 0 and 2 gives ``unet-seg-predict``'s labels on an
    image whose size is a multiple of the step."""
    core = pytest.importorskip("bioimageio.core")
    pytest.importorskip("onnxruntime")
    from scipy.ndimage import gaussian_filter

    ckpt, package = _checkpoint_and_package(tmp_path, cfg)
    summary = core.test_model(package)
    assert summary.status == "passed", summary.format()
    tested = {d.loc[1] for d in summary.details if len(d.loc) > 1 and d.loc[0] == "weights"}
    assert tested == set(ALL_FORMATS)
    assert not [w for d in summary.details for w in d.warnings if "sample_tensor" in str(w.loc)]
    rng = np.random.default_rng(0)
    for blocksize, (shape, formats) in cases.items():
        image = (gaussian_filter(rng.random(shape), 2) * 4000).astype(np.float32)
        ours = _our_labels(ckpt, image, tmp_path / str(blocksize))
        assert 0.01 < ours.mean() < 0.99  # both classes: the comparison means something
        for weight_format in formats:
            tiled = _tiled_labels(package, image, blocksize, weight_format)
            np.testing.assert_array_equal(tiled, ours, err_msg=f"{weight_format}, {blocksize}")
