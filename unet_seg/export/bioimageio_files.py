"""The human-facing files of a bioimage.io package: the cover image, the sample tensors and the
README."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from unet_seg.export.same_size import axis_rules
from unet_seg.normalization import fixed_window, percentiles

COVER_PANEL = 256  # pixels per side of each half of the 2:1 cover the model zoo recommends


def _middle_plane(array: np.ndarray) -> np.ndarray:
    """``(*spatial)`` -> its middle ``(Y, X)`` plane."""
    while array.ndim > 2:
        array = array[array.shape[0] // 2]
    return array


def _to_uint8(plane: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(plane, percentiles())
    scaled = (plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def write_cover(path: Path, inputs: np.ndarray, outputs: np.ndarray) -> None:
    """A 2:1 RGB PNG: the test input (first channel, middle plane, cropped to the output region)
    beside the probability of the last class in green over it.

    ``inputs``: ``(1, C, *s)``; ``outputs``: ``(1, K, *t)`` with ``t <= s``.
    """
    import imageio.v3 as iio
    from skimage.transform import resize

    out_shape = outputs.shape[2:]
    crop = tuple(
        slice((s - t) // 2, (s - t) // 2 + t)
        for s, t in zip(inputs.shape[2:], out_shape, strict=True)
    )
    image = _to_uint8(_middle_plane(inputs[0, 0][crop]).astype(np.float32))
    prob = (_middle_plane(outputs[0, -1]) * 255).astype(np.uint8)
    size = (COVER_PANEL, COVER_PANEL)
    image = (resize(image, size, order=1, preserve_range=True)).astype(np.uint8)
    prob = (resize(prob, size, order=0, preserve_range=True)).astype(np.uint8)
    left = np.stack([image] * 3, axis=-1)
    right = np.stack([image // 2, np.maximum(image // 2, prob), image // 2], axis=-1)
    iio.imwrite(path, np.concatenate([left, right], axis=1))


def write_sample(path: Path, tensor: np.ndarray) -> None:
    """A sample tensor (``(C, *spatial)`` float32, one sample of a test tensor) as a TIFF, which
    imageio reads, as the spec asks: an example a person can open."""
    import tifffile

    tifffile.imwrite(path, np.ascontiguousarray(tensor, dtype=np.float32))


def write_readme(path: Path, model, normalization: Mapping[str, float], info) -> None:
    """Markdown documentation: what the model does, the input sizes it takes, how it was
    normalised, and a Validation section (the model zoo asks for one)."""
    axes = "zyx"[-model.spatial_dims :]
    size_lines = []
    for axis, rule in zip(axes, axis_rules(model), strict=True):
        size_lines.append(f"| {axis} | {rule.minimum} + {rule.step} n | input | {rule.halo} |")
    window = fixed_window(normalization)
    if window is None:
        low, high = percentiles(normalization)
        how = (f"maps the {low} and {high} percentiles of each image (all channels jointly) to 0 "
               "and 1, without clipping")  # fmt: skip
    else:
        how = (
            f"clips the intensities to [{window[0]:g}, {window[1]:g}] (a fixed window: "
            f"absolute units), subtracts {window[2]:g} and divides by {window[3]:g}"
        )
    classes = ", ".join(info.class_names or [f"class{k}" for k in range(model.num_classes)])
    text = f"""# {info.name}

{info.description}

A {model.spatial_dims}D U-Net (Ronneberger, Fischer and Brox, MICCAI 2015) with {model.depth}
levels ({", ".join(map(str, model.features))} features), {model.padding} convolutions,
{model.in_channels} input channel(s) and {model.num_classes} classes ({classes}). Exported by
unet-seg with `unet-seg-export format=bioimageio`.

## Input and output

Input `(batch, channel, {", ".join(axes)})`, float32 raw intensities. Preprocessing {how}:
the normalisation the network was trained with. The output holds the softmax probability of each
class; the segmentation is its argmax over the channel axis.

| axis | input size | output size | halo per side |
| --- | --- | --- | --- |
{chr(10).join(size_lines)}

The network's convolutions are valid (the U-Net paper's): it returns fewer voxels than it sees.
The package holds it behind a mirror of the missing voxels, so its output has the input's size;
the `halo` voxels at each side of the output may have seen the mirror. Tools that tile
(bioimageio.core with a `blocksize_parameter`, deepImageJ, ilastik) read each tile with the halo
around it, pad the image border by `reflect` and crop the halo: the overlap-tile strategy of the
U-Net paper. Where the image size is a multiple of the step on every axis, the labels equal
`unet-seg-predict`'s; elsewhere the last tile, flush with the far edge, sees the pooling grid
shifted and may differ there. Without tiling, crop the halo from the output yourself.

## Weights

`pytorch_state_dict` (architecture in `unet_architecture.py`, needs only PyTorch),
`torchscript` and `onnx` (opset 17) give the same logits.

## Validation

The test tensors were computed with the PyTorch weights; TorchScript and ONNX reproduce them
within 1e-4. Check the segmentation on your own annotated images before relying on it, for
example with `unet-seg-evaluate pred_dir=<predictions> gt_dir=<labels>` (Dice, IoU, Rand error,
VI, instance AP).
"""
    path.write_text(text)
