"""Networks loaded from exported files (TorchScript ``.pt``, ONNX ``.onnx``) without Lightning.

An exported file carries, next to its weights, a small JSON record under :data:`METADATA_KEY`:
the size arithmetic (``spatial_dims``, ``depth``, ``padding``, ``pooled_axes``), the channels and
classes, the intensity percentiles the training data were normalised with and, when the
checkpoint was tuned by ``unet-seg-tune``, its instance post-processing (:data:`TUNED_KEY`).
The adapters below read it back and satisfy the ``SegmentationNetwork`` protocol
(``spatial_dims``, ``in_channels``, ``num_classes``, ``output_shape``), so tiling and batch
prediction treat them like a ``UNet``.
Both return logits ``(N, num_classes, *output_shape(spatial))``, as the ``UNet`` does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unet_seg.models import shapes
from unet_seg.normalization import check_normalization

METADATA_KEY = "unet_seg"  # ONNX metadata_props key; TorchScript extra file "unet_seg.json"
TORCHSCRIPT_EXTRA = f"{METADATA_KEY}.json"
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".torchscript")
ONNX_SUFFIXES = (".onnx",)
TUNED_KEY = "instance_postprocessing"  # unet-seg-tune's result, in checkpoints and exports
TARGET_KEY = "target"  # what the network learnt: data.target of its training
_REQUIRED = ("spatial_dims", "in_channels", "num_classes", "depth", "padding", "pooled_axes")


def network_metadata(
    model: Any,
    normalization: Mapping[str, float] | None,
    tuning: Mapping[str, Any] | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """The record an exported file carries for ``model`` (a ``UNet``), its percentiles, its
    checkpoint's tuned instance post-processing (plain JSON values), if any, and the training
    target it learnt (``data.target``: ``"classes"`` or ``"boundary"``), if known."""
    norm = dict(normalization or {})
    record = {
        "format": 1,
        "spatial_dims": int(model.spatial_dims),
        "in_channels": int(model.in_channels),
        "num_classes": int(model.num_classes),
        "features": [int(f) for f in model.features],
        "depth": int(model.depth),
        "padding": str(model.padding),
        "pooled_axes": [bool(p) for p in model.pooled_axes],
        "normalization": check_normalization(norm),
    }
    if tuning:
        record[TUNED_KEY] = json.loads(json.dumps(dict(tuning)))  # plain, as JSON keeps it
    if target is not None:
        record[TARGET_KEY] = str(target)
    return record


def _check_metadata(meta: Mapping[str, Any], path: Path) -> dict[str, Any]:
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise ValueError(
            f"{path}: the {METADATA_KEY} metadata lacks {', '.join(missing)}; "
            "export the model with unet-seg-export"
        )
    return dict(meta)


class ExportedNetwork(nn.Module):
    """What every exported network shares: the size arithmetic, the stored normalisation, and
    the contract its file declares (checked on every output: the declared classes, the output
    size the arithmetic gives, finite values), since the file may not be what it claims."""

    def __init__(self, metadata: Mapping[str, Any], path: Path) -> None:
        super().__init__()
        self.path = path
        self.metadata = dict(metadata)
        self.spatial_dims = int(metadata["spatial_dims"])
        self.in_channels = int(metadata["in_channels"])
        self.num_classes = int(metadata["num_classes"])
        self.depth = int(metadata["depth"])
        self.padding = str(metadata["padding"])
        self.pooled_axes = tuple(bool(p) for p in metadata["pooled_axes"])

    @property
    def normalization(self) -> dict[str, float]:
        return dict(self.metadata.get("normalization") or {})

    @property
    def tuning(self) -> dict[str, Any] | None:
        """The checkpoint's tuned instance post-processing the export carries, or None."""
        return self.metadata.get(TUNED_KEY)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial ``input_shape``; ``ValueError`` if it does not fit."""
        if len(input_shape) != self.spatial_dims:
            raise ValueError(
                f"expected {self.spatial_dims} spatial sizes, got {tuple(input_shape)}"
            )
        return shapes.output_shape(input_shape, self.depth, self.padding, self.pooled_axes)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, {self.spatial_dims} spatial dims), "
                f"got {tuple(x.shape)}"
            )
        self.output_shape(x.shape[2:])

    def _checked_output(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` of ``x`` as the file's metadata promises them, else ``ValueError`` naming
        the file: outputs of another shape or with NaN / infinity are never written as labels."""
        expected = (x.shape[0], self.num_classes, *self.output_shape(x.shape[2:]))
        if tuple(logits.shape) != expected:
            raise ValueError(
                f"{self.path}: the model returned shape {tuple(logits.shape)} for input "
                f"{tuple(x.shape)}, but its metadata declares {self.num_classes} classes and "
                f"output {expected}: the file does not match its metadata"
            )
        if not bool(torch.isfinite(logits).all()):
            raise ValueError(f"{self.path}: the model returned NaN or infinite values")
        return logits


class TorchScriptNetwork(ExportedNetwork):
    """A TorchScript file written by ``unet_seg.export.torchscript``: ``(N, C, *s)`` -> logits."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        extra = {TORCHSCRIPT_EXTRA: ""}
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except (RuntimeError, ValueError, OSError) as err:
            raise ValueError(f"{path}: cannot load as TorchScript ({err})") from err
        if not extra[TORCHSCRIPT_EXTRA]:
            raise ValueError(
                f"{path}: TorchScript file without {TORCHSCRIPT_EXTRA}; "
                "export the model with unet-seg-export"
            )
        super().__init__(_check_metadata(json.loads(extra[TORCHSCRIPT_EXTRA]), path), path)
        self.scripted = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._checked_output(x, self.scripted(x))


class OnnxNetwork(ExportedNetwork):
    """An ONNX file written by ``unet_seg.export.onnx``, run by ONNX Runtime.

    Needs only ``onnxruntime`` (``pip install onnxruntime``), not ``onnx``. Tensors go to the
    session as contiguous float32 numpy arrays and come back on the input's device; after
    ``.to("cuda")`` the session uses CUDA if ONNX Runtime has that provider, else the CPU.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        path = Path(path)
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ValueError(
                f"{path}: running an ONNX model needs onnxruntime (pip install onnxruntime)"
            ) from err
        self._ort = ort
        self.path = path  # before the session, which opens it
        self._threads = threads
        session = self._session("cpu")
        meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if not meta:
            raise ValueError(
                f"{path}: ONNX file without {METADATA_KEY} metadata; "
                "export the model with unet-seg-export"
            )
        super().__init__(_check_metadata(json.loads(meta), path), path)
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def _session(self, device_type: str):
        options = self._ort.SessionOptions()
        if self._threads:
            options.intra_op_num_threads = int(self._threads)
        providers = ["CPUExecutionProvider"]
        if device_type == "cuda" and "CUDAExecutionProvider" in self._ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            return self._ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ValueError(f"{self.path}: cannot load as ONNX ({err})") from err

    def _apply(self, fn, recurse: bool = True):
        # nn.Module.to() ends here; follow a move to CUDA with a CUDA session when one exists.
        probe = fn(torch.empty(0))
        if probe.device.type == "cuda":
            self.session = self._session("cuda")
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        array = x.detach().float().contiguous().cpu().numpy()
        outputs = self.session.run(None, {self.input_name: array})
        return self._checked_output(x, torch.from_numpy(outputs[0]).to(x.device))


def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an exported network by its suffix (``.onnx``, ``.pt``, ...)."""
    return Path(path).suffix.lower() in (*ONNX_SUFFIXES, *TORCHSCRIPT_SUFFIXES)


def load_exported(path: str | os.PathLike) -> tuple[ExportedNetwork, dict[str, float]]:
    """``(network in eval mode, normalisation percentiles)`` from a ``.onnx`` or ``.pt`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        network: ExportedNetwork = OnnxNetwork(path)
    elif suffix in TORCHSCRIPT_SUFFIXES:
        network = TorchScriptNetwork(path)
    else:
        raise ValueError(
            f"{path}: unknown model file type {suffix!r}; expected .ckpt, "
            f"{', '.join(ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES)}"
        )
    return network.eval(), network.normalization
