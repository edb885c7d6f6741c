"""ONNX export with dynamic batch and spatial axes; the metadata in ``metadata_props``.

Uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx`` package,
where the newer exporter also needs ``onnxscript``. Opset 17 runs in every ONNX Runtime since 1.13
and in deepImageJ's and ilastik's runtimes.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unet_seg.export.trace import example_input, quiet_tracing, traceable_copy
from unet_seg.io.atomic import replace_atomic
from unet_seg.models.exported import METADATA_KEY, network_metadata

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "output"
_AXIS_NAMES = ("z", "y", "x")


def dynamic_axes(spatial_dims: int) -> dict[str, dict[int, str]]:
    """Batch and every spatial axis named and free, for input and output alike."""
    names = {0: "batch"}
    names.update({2 + i: name for i, name in enumerate(_AXIS_NAMES[-spatial_dims:])})
    # Output sizes differ from the input's in a valid network, so they get their own names.
    out = {axis: name if axis == 0 else f"{name}_out" for axis, name in names.items()}
    return {INPUT_NAME: names, OUTPUT_NAME: out}


def export_onnx(
    model: torch.nn.Module,
    normalization: Mapping[str, float] | None,
    path: str | os.PathLike,
    tuning: Mapping[str, Any] | None = None,
    target: str | None = None,
) -> Path:
    """Write ``model`` (a ``UNet``) as ONNX to ``path``, atomically, checked by ``onnx.checker``;
    ``tuning``: the checkpoint's tuned instance post-processing, and ``target``: the data.target
    it learnt, both kept in the metadata."""
    import onnx

    model = traceable_copy(model)
    buffer = io.BytesIO()
    with quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            model, (example_input(model),), buffer, dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes(int(model.spatial_dims)),
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(
        proto, {METADATA_KEY: json.dumps(network_metadata(model, normalization, tuning, target))}
    )
    proto.doc_string = "unet-seg U-Net: (N, C, *spatial) float32 -> (N, K, *spatial_out) logits"
    onnx.checker.check_model(proto)
    return replace_atomic(lambda tmp: onnx.save(proto, str(tmp)), path)
