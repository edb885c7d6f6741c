"""bioimage.io model packages (format 0.5), built and validated with ``bioimageio.spec``.

The package holds the weights three ways (``pytorch_state_dict`` with the one-file architecture
``unet_architecture.py``, ``torchscript``, ``onnx``), all in the same-size form of
:mod:`~unet_seg.export.same_size` (the input mirrored by the valid network's halo), so that tools
tile it: the output has the input's size and declares the ``halo`` a tool crops from every tile,
the input is padded by ``reflect`` at the image border, as ``unet-seg-predict`` pads. It states
the accepted input sizes as ``min + n * step`` per axis from the network's arithmetic, the
checkpoint's percentile normalisation as ``scale_range`` preprocessing and softmax over the
classes as postprocessing, and ships test tensors, sample tensors (TIFF), a cover image and a
README. ``save_bioimageio_package`` refuses to write a package that does not validate.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unet_seg.export import unet_architecture
from unet_seg.export.bioimageio_files import write_cover, write_readme, write_sample
from unet_seg.export.onnx import OPSET, export_onnx
from unet_seg.export.same_size import SameSizeNetwork, axis_rules, mirror
from unet_seg.export.torchscript import export_torchscript
from unet_seg.export.trace import traceable_copy
from unet_seg.io.atomic import replace_atomic
from unet_seg.models.exported import network_metadata
from unet_seg.normalization import check_normalization, fixed_window, normalize

AXIS_IDS = ("z", "y", "x")
UNET_CITATION = ("Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image "
                 "Segmentation. MICCAI 2015.", "10.1007/978-3-319-24574-4_28")  # fmt: skip
TEST_SIZE = {2: 128, 3: 32}  # smallest test-tensor side: big enough to show structure, small file


@dataclass
class PackageInfo:
    """What a bioimage.io package says about the model beyond its arithmetic."""

    name: str
    description: str = "U-Net (Ronneberger et al. 2015) segmentation, trained with unet-seg."
    authors: Sequence[str] = ("unet-seg user",)
    license: str = "MIT"  # SPDX identifier of the weights' licence
    tags: Sequence[str] = ("unet", "segmentation", "microscopy", "pytorch", "onnx")
    class_names: Sequence[str] | None = None  # one per output channel; None: class0, class1, ...
    extra_citations: Sequence[Mapping[str, str]] = field(default_factory=tuple)


def package_input_size(model) -> tuple[int, ...]:
    """Per axis the smallest accepted size at least :data:`TEST_SIZE` (and the minimum): the
    spatial size of :func:`package_test_input`."""
    sizes = []
    for rule in axis_rules(model):
        wanted = max(rule.minimum, TEST_SIZE[model.spatial_dims])
        sizes.append(rule.minimum + -(-(wanted - rule.minimum) // rule.step) * rule.step)
    return tuple(sizes)


def package_test_input(model, image: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """``(1, C, *test_size)`` float32: the centre of ``image`` (``(*spatial)`` or ``(C, *spatial)``;
    a stack for a 2D model gives its middle slice), mirrored where it is too small, or smooth
    random blobs when no image is given."""
    size = package_input_size(model)
    channels = int(model.in_channels)
    if image is None:
        from scipy.ndimage import gaussian_filter

        noise = np.random.default_rng(seed).random((channels, *size))
        blobs = gaussian_filter(noise, sigma=(0, *[3] * len(size)))
        return (blobs * 1000).astype(np.float32)[None]
    array = np.asarray(image, dtype=np.float32)
    if channels == 1:
        array = array[None]
    while array.ndim > len(size) + 1:  # a stack for a 2D model: its middle slice
        array = array[:, array.shape[1] // 2]
    if array.ndim != len(size) + 1 or array.shape[0] != channels:
        raise ValueError(
            f"test image of shape {np.shape(image)} does not fit a {model.spatial_dims}D model "
            f"with {channels} channel(s)"
        )
    pad = [(0, 0)] + [
        (max(0, (s - a + 1) // 2),) * 2 for s, a in zip(size, array.shape[1:], strict=True)
    ]
    array = np.pad(array, pad, mode="reflect")
    crop = tuple(
        slice((a - s) // 2, (a - s) // 2 + s) for s, a in zip(size, array.shape[1:], strict=True)
    )
    return np.ascontiguousarray(array[(slice(None), *crop)])[None]


def package_test_output(
    model, normalization: Mapping[str, float], inputs: np.ndarray
) -> np.ndarray:
    """Softmax of ``model`` (the package's :class:`SameSizeNetwork`) on ``inputs`` normalised
    as the package's preprocessing does: ``(1, C, *s)`` -> ``(1, K, *s)`` float32."""
    x = torch.from_numpy(normalize(inputs[0], normalization))[None]
    with torch.no_grad():
        return model(x).softmax(dim=1).numpy().astype(np.float32)


def _axes(model, info: PackageInfo):
    """Input and output axis descriptions of the package's tensors."""
    from bioimageio.spec.model import v0_5 as bio

    spatial_ids = AXIS_IDS[-model.spatial_dims :]
    channels = [bio.Identifier(f"channel{c}") for c in range(model.in_channels)]
    in_axes = [bio.BatchAxis(), bio.ChannelAxis(channel_names=channels)]
    names = info.class_names or [f"class{k}" for k in range(model.num_classes)]
    if len(names) != model.num_classes:
        raise ValueError(f"{len(names)} class names for {model.num_classes} classes")
    out_axes = [bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier(n) for n in names])]
    for axis_id, rule in zip(spatial_ids, axis_rules(model), strict=True):
        sizes = bio.ParameterizedSize(min=rule.minimum, step=rule.step)
        in_axes.append(bio.SpaceInputAxis(id=bio.AxisId(axis_id), size=sizes))
        # The output has the input's size; a tool crops the halo (what saw the mirror) per tile.
        reference = bio.SizeReference(tensor_id=bio.TensorId("input"), axis_id=bio.AxisId(axis_id))
        out_axes.append(
            bio.SpaceOutputAxisWithHalo(id=bio.AxisId(axis_id), size=reference, halo=rule.halo)
            if rule.halo
            else bio.SpaceOutputAxis(id=bio.AxisId(axis_id), size=reference)
        )
    return in_axes, out_axes, spatial_ids


def _preprocessing(normalization, spatial_ids) -> tuple[list[Any], str]:
    """The package's preprocessing steps for ``normalization``, and how they read in words:
    percentiles as ``scale_range`` over all axes (one scale, as trained), or a fixed window as
    ``clip`` then ``fixed_zero_mean_unit_variance``."""
    from bioimageio.spec.model import v0_5 as bio

    window = fixed_window(normalization)
    if window is not None:
        low, high, mean, std = window
        clip = bio.ClipDescr(kwargs=bio.ClipKwargs(min=low, max=high))
        zscore = bio.FixedZeroMeanUnitVarianceDescr(
            kwargs=bio.FixedZeroMeanUnitVarianceKwargs(mean=mean, std=std)
        )
        return [clip, zscore], f"by clipping to [{low:g}, {high:g}], minus {mean:g}, over {std:g}"
    low, high = check_normalization(normalization).values()
    joint = [bio.AxisId("channel"), *(bio.AxisId(a) for a in spatial_ids)]
    scale_range = bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(
        axes=joint, min_percentile=low, max_percentile=high))  # fmt: skip
    return [scale_range], f"by their {low}/{high} percentiles"


def build_description(
    model, normalization, info: PackageInfo, files: Mapping[str, Path], tuning=None, target=None
):
    """The ``bioimageio.spec`` ``ModelDescr`` of ``model`` over the staged ``files``."""
    from bioimageio.spec.model import v0_5 as bio

    in_axes, out_axes, spatial_ids = _axes(model, info)
    preprocessing, described = _preprocessing(normalization, spatial_ids)
    softmax = bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=bio.AxisId("channel")))
    inputs = bio.InputTensorDescr(
        id=bio.TensorId("input"), axes=in_axes, test_tensor=bio.FileDescr(source=files["test_in"]),
        sample_tensor=bio.FileDescr(source=files["sample_in"]),
        data=bio.IntervalOrRatioDataDescr(type="float32"), preprocessing=preprocessing,
        pad=bio.ReflectPadding(mode="reflect"),  # as unet-seg-predict mirrors an image (set
        # explicitly: bioimageio.spec 0.5.12 writes an unset mode as `{}`, read back as constant)
        description=f"raw intensities; normalised {described}",
    )  # fmt: skip
    outputs = bio.OutputTensorDescr(
        id=bio.TensorId("output"), axes=out_axes,
        test_tensor=bio.FileDescr(source=files["test_out"]),
        sample_tensor=bio.FileDescr(source=files["sample_out"]),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[softmax], description="class probabilities",
    )  # fmt: skip
    torch_version = bio.Version(torch.__version__.split("+")[0])
    kwargs = network_kwargs(model)
    if any(rule.halo for rule in axis_rules(model)):
        kwargs.update(mirror(model))  # the same-size form, as the other two formats
    arch = bio.ArchitectureFromFileDescr(
        source=files["architecture"], callable=bio.Identifier("UNet"), kwargs=kwargs)  # fmt: skip
    weights = bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=files["state_dict"], architecture=arch, pytorch_version=torch_version),
        torchscript=bio.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=torch_version,
            parent="pytorch_state_dict"),
        onnx=bio.OnnxWeightsDescr(
            source=files["onnx"], opset_version=OPSET, parent="pytorch_state_dict"),
    )  # fmt: skip
    cite = [bio.CiteEntry(text=UNET_CITATION[0], doi=bio.Doi(UNET_CITATION[1]))]
    cite += [bio.CiteEntry(**entry) for entry in info.extra_citations]
    return bio.ModelDescr(
        name=info.name, description=info.description,
        authors=[bio.Author(name=name) for name in info.authors],
        cite=cite, license=info.license, tags=list(info.tags),
        covers=[bio.FileDescr(source=files["cover"])],
        documentation=bio.FileDescr(source=files["readme"]),
        inputs=[inputs], outputs=[outputs], weights=weights,
        config={"unet_seg": network_metadata(model, normalization, tuning, target)},
    )  # fmt: skip


def network_kwargs(model) -> dict:
    """Keyword arguments of ``unet_architecture.UNet`` that rebuild ``model``."""
    norm = None
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            norm = "batch"
        elif isinstance(module, torch.nn.modules.instancenorm._InstanceNorm):
            norm = "instance"
    return {
        "spatial_dims": int(model.spatial_dims), "in_channels": int(model.in_channels),
        "num_classes": int(model.num_classes), "features": [int(f) for f in model.features],
        "padding": str(model.padding), "norm": norm,
        "inplane_pooling": not model.pooled_axes[0],
    }  # fmt: skip


def export_bioimageio(
    model: torch.nn.Module,
    normalization: Mapping[str, float] | None,
    path: str | os.PathLike,
    info: PackageInfo,
    image: np.ndarray | None = None,
    tuning: Mapping[str, Any] | None = None,
    target: str | None = None,
) -> Path:
    """Write the bioimage.io package of ``model`` to ``path`` (a ``.zip``, atomically).

    ``image``: the test input's source (``(*spatial)`` or ``(C, *spatial)``); random blobs if
    ``None``; ``tuning``: the checkpoint's tuned instance post-processing, and ``target``: the
    data.target it learnt, kept in the package's ``config.unet_seg``. ``ValueError`` if
    ``bioimageio.spec`` finds the package invalid.
    """
    from bioimageio.spec import save_bioimageio_package

    model = traceable_copy(model)
    norm = check_normalization(normalization)
    with tempfile.TemporaryDirectory(prefix="unet-seg-bioimageio-") as staging:
        root = Path(staging)
        files = {
            "state_dict": root / "weights_state_dict.pt",
            "torchscript": root / "weights_torchscript.pt",
            "onnx": root / "weights.onnx", "architecture": root / "unet_architecture.py",
            "test_in": root / "test_input.npy", "test_out": root / "test_output.npy",
            "sample_in": root / "sample_input.tif", "sample_out": root / "sample_output.tif",
            "cover": root / "cover.png", "readme": root / "README.md",
        }  # fmt: skip
        same_size = SameSizeNetwork(model).eval()
        torch.save(model.state_dict(), files["state_dict"])
        export_torchscript(same_size, norm, files["torchscript"])
        export_onnx(same_size, norm, files["onnx"])
        shutil.copyfile(unet_architecture.__file__, files["architecture"])
        inputs = package_test_input(model, image)
        outputs = package_test_output(same_size, norm, inputs)
        np.save(files["test_in"], inputs)
        np.save(files["test_out"], outputs)
        write_sample(files["sample_in"], inputs[0])
        write_sample(files["sample_out"], outputs[0])
        write_cover(files["cover"], inputs, outputs)
        write_readme(files["readme"], model, norm, info)
        description = build_description(model, norm, info, files, tuning, target)
        return replace_atomic(
            lambda tmp: save_bioimageio_package(description, output_path=tmp), path
        )
