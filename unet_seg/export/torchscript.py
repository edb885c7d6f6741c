"""TorchScript export: ``torch.jit.trace`` of the U-Net, metadata as an extra file in the archive.

Tracing records the spatial sizes as tensor operations (the centre crops of the skip connections
are size differences that do not depend on the input), so the saved module takes any batch and
any accepted spatial size, not only the example's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unet_seg.export.trace import example_input, quiet_tracing, traceable_copy
from unet_seg.io.atomic import replace_atomic
from unet_seg.models.exported import TORCHSCRIPT_EXTRA, network_metadata


def export_torchscript(
    model: torch.nn.Module,
    normalization: Mapping[str, float] | None,
    path: str | os.PathLike,
    tuning: Mapping[str, Any] | None = None,
    target: str | None = None,
) -> Path:
    """Write ``model`` (a ``UNet``) as TorchScript to ``path`` (atomically); returns ``path``.

    The archive's ``unet_seg.json`` extra file holds :func:`network_metadata` (with ``tuning``,
    the checkpoint's tuned instance post-processing, and ``target``, the data.target it learnt).
    """
    model = traceable_copy(model)
    with quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(model, example_input(model), check_trace=False)
    extra = {TORCHSCRIPT_EXTRA: json.dumps(network_metadata(model, normalization, tuning, target))}
    return replace_atomic(lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra), path)
