"""Runs a network on batches of tiles: device placement, AMP on CUDA, dihedral TTA, softmax."""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from unet_seg.errors import UsageError
from unet_seg.models.blocks import onednn_convolutions

DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` picks CUDA when available, else the CPU; otherwise ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``, which must be present (``UsageError`` saying what is not)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise UsageError(f"device must be auto, cpu, cuda, cuda:N or mps, got {str(device)!r}")
    device = parsed
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"device '{device}' requested but CUDA is not available")
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"device '{device}' requested but there are {count} CUDA devices "
                f"(cuda:0..cuda:{count - 1})"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device '{device}' requested but MPS is not available")
    return device


@dataclass(frozen=True)
class View:
    """One test-time view of a ``(B, C, *spatial)`` batch: flip ``flips`` (tensor dims), then
    turn the last two axes (y, x) by ``turns`` quarter turns; :meth:`undo` maps the prediction
    back. A turned non-square tile comes out turned, so the inverse turn restores its shape."""

    flips: tuple[int, ...] = ()
    turns: int = 0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flip(self.flips) if self.flips else x
        return torch.rot90(x, self.turns, dims=(-2, -1)) if self.turns else x

    def undo(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.rot90(y, -self.turns, dims=(-2, -1)) if self.turns else y
        return y.flip(self.flips) if self.flips else y


def tta_views(spatial_dims: int, tta: bool = True) -> list[View]:
    """The views averaged by test-time augmentation of a ``spatial_dims`` network.

    2D: the 8 symmetries of the square (4 quarter turns, each with and without a flip), the
    rotated copies the U-Net paper averaged over. 3D: the 8 flips of the three axes; quarter turns
    are left out because a stack's z spacing usually differs from its in-plane spacing.
    Without ``tta``: the identity only.
    """
    if not tta:
        return [View()]
    if spatial_dims == 2:
        return [View((3,) if flip else (), k) for k in range(4) for flip in (False, True)]
    dims = range(2, 2 + spatial_dims)
    return [View(c) for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]


@dataclass(frozen=True)
class RunnerOptions:
    """How the network runs: ``device``, ``tta``, ``amp``, ``cpu_bf16`` of ``conf/predict.yaml``
    and ``conf/tune.yaml`` (see :class:`ModelRunner`), read from a config in one place."""

    device: str = "auto"
    tta: bool = False
    amp: bool = True
    cpu_bf16: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> RunnerOptions:
        """The options of ``cfg``; a key it lacks keeps its default."""
        return cls(
            str(cfg.get("device", cls.device)), bool(cfg.get("tta", cls.tta)),
            bool(cfg.get("amp", cls.amp)), bool(cfg.get("cpu_bf16", cls.cpu_bf16)),
        )  # fmt: skip

    def runner(self, model: nn.Module) -> ModelRunner:
        """A :class:`ModelRunner` of ``model`` with these options."""
        return ModelRunner(model, self.device, self.tta, self.amp, self.cpu_bf16)


class ModelRunner:
    """Callable ``(B, C, Tz, Ty, Tx) float32 array -> (B, K, Oz, Oy, Ox) float32 probabilities``.

    A 2D network gets the windows one slice thick (``Tz == 1``) as ``(B, C, Ty, Tx)``.

    Args:
        model: returns logits ``(B, K, *output_shape(spatial))`` and has ``spatial_dims``. Like
            ``nn.Module.to``, the runner moves it, sets eval mode and converts its memory format
            in place: pass a copy if the caller keeps training it.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        tta: average the probabilities over :func:`tta_views` (8 in 2D and in 3D). A valid
            network's output is the centre of its input with the same margin on every axis, so
            flipped and turned predictions land back on the same voxels.
        amp: autocast to float16 on CUDA (float16 on the CPU would only slow down).
        cpu_bf16: autocast to bfloat16 on the CPU: about 2x faster on CPUs with AMX or
            AVX512-BF16 at probabilities within about 1e-2 of float32; off by default.
        softmax: turn logits into probabilities (off: raw outputs, for tests and regression nets).
        channels_last: channels-last memory format (NHWC / NDHWC), in which oneDNN's CPU
            convolutions ran 1.3-1.6x faster in our benchmarks; ``"auto"``: on the CPU.
    """

    def __init__(
        self, model: nn.Module, device: str | torch.device | None = "auto", tta: bool = False,
        amp: bool = True, cpu_bf16: bool = False, softmax: bool = True,
        channels_last: bool | str = "auto",
    ) -> None:  # fmt: skip
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.spatial_dims = int(model.spatial_dims)
        self.views = tta_views(self.spatial_dims, tta)
        on_cuda = self.device.type == "cuda"
        self.autocast_dtype = (
            torch.float16
            if amp and on_cuda
            else torch.bfloat16
            if cpu_bf16 and not on_cuda
            else None
        )
        self.softmax = softmax
        if channels_last == "auto":
            channels_last = not on_cuda
        last = torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d
        self.memory_format = last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 5:
            raise ValueError(f"expected tiles (B, C, Z, Y, X), got shape {batch.shape}")
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.spatial_dims == 2:
            if x.shape[2] != 1:
                raise ValueError(f"a 2D network takes one-slice tiles, got shape {batch.shape}")
            x = x[:, :, 0]
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        total = None
        for view in self.views:
            # Autocast works on aten's convolution, which the oneDNN path goes around.
            convolutions = onednn_convolutions() if self.autocast_dtype is None else nullcontext()
            with autocast, convolutions:
                logits = self.model(view.apply(x).contiguous(memory_format=self.memory_format))
            probs = logits.float().softmax(dim=1) if self.softmax else logits.float()
            probs = view.undo(probs)
            total = probs if total is None else total + probs
        total = total / len(self.views)
        if self.spatial_dims == 2:
            total = total[:, :, None]
        return total.contiguous().cpu().numpy()
