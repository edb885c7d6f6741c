"""Runs a network on batches of tiles: device placement, AMP on CUDA, flip TTA, softmax."""

from __future__ import annotations

import itertools
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` picks CUDA when available, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return device


class ModelRunner:
    """Callable ``(B, C, Tz, Ty, Tx) float32 array -> (B, K, Oz, Oy, Ox) float32 probabilities``.

    A 2D network gets the windows one slice thick (``Tz == 1``) as ``(B, C, Ty, Tx)``.

    Args:
        model: returns logits ``(B, K, *output_shape(spatial))`` and has ``spatial_dims``. Like
            ``nn.Module.to``, the runner moves it, sets eval mode and converts its memory format
            in place: pass a copy if the caller keeps training it.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        tta: average the probabilities of all flips of the spatial axes (4 in 2D, 8 in 3D); a
            valid network's centred crop commutes with flips, so the average stays aligned.
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
        dims = range(2, 2 + self.spatial_dims)
        self.flips = [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]
        if not tta:
            self.flips = [()]
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
        x = x.contiguous(memory_format=self.memory_format)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        total = None
        for axes in self.flips:
            with autocast:
                logits = self.model(x.flip(axes) if axes else x)
            probs = logits.float().softmax(dim=1) if self.softmax else logits.float()
            probs = probs.flip(axes) if axes else probs
            total = probs if total is None else total + probs
        total = total / len(self.flips)
        if self.spatial_dims == 2:
            total = total[:, :, None]
        return total.contiguous().cpu().numpy()
