"""Runs a network on batches of tiles: device placement, precision (measured ``auto``, bf16,
float16), runtime (eager, compiled, ONNX Runtime), batch norm folded, dihedral TTA, softmax."""

from __future__ import annotations

import itertools
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from unet_seg.errors import UsageError
from unet_seg.inference.precision import AUTOCAST_DTYPES, check_precision, resolve_precision
from unet_seg.inference.runtimes import check_runtime, example_input, prepare
from unet_seg.models.blocks import onednn_convolutions
from unet_seg.models.float32_input import float32_input_convolution
from unet_seg.models.fold import fold_batch_norm, has_batch_norm

log = logging.getLogger(__name__)

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
    """How the network runs: ``device``, ``tta``, ``precision``, ``runtime`` and
    ``channels_last`` of ``conf/predict.yaml`` and ``conf/tune.yaml`` (see :class:`ModelRunner`),
    read from a config in one place. ``precision=None`` keeps the earlier defaults (float32 on
    the CPU, float16 autocast on a GPU), which ``auto`` replaces by a measured choice. ``amp``
    and ``cpu_bf16`` are the deprecated spellings of ``precision`` (``None``: not given):
    ``amp=false`` is float32 on a GPU, ``cpu_bf16=true`` bf16 on the CPU. ``threads``: torch's
    threads in the process that runs the network (each Dask worker's too); ``None`` leaves
    torch's default."""

    device: str = "auto"
    tta: bool = False
    amp: bool | None = None
    cpu_bf16: bool | None = None
    precision: str | None = None
    runtime: str = "torch"
    channels_last: bool | str = "auto"
    threads: int | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> RunnerOptions:
        """The options of ``cfg``; a key it lacks keeps its default."""
        legacy = {key: cfg.get(key) for key in ("amp", "cpu_bf16") if cfg.get(key) is not None}
        for key, value in legacy.items():
            log.warning("%s=%s is deprecated: use precision=%s (precision=auto measures what "
                        "the hardware runs fast)", key, str(value).lower(),
                        _legacy_name(key, bool(value)))  # fmt: skip
        channels_last = cfg.get("channels_last", cls.channels_last)
        threads = cfg.get("threads")
        if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
            raise UsageError(f"threads must be a positive integer or null, got {threads!r}")
        return cls(
            str(cfg.get("device", cls.device)), bool(cfg.get("tta", cls.tta)),
            *(bool(legacy[k]) if k in legacy else None for k in ("amp", "cpu_bf16")),
            None if cfg.get("precision") is None else str(cfg.get("precision")),
            str(cfg.get("runtime", cls.runtime)),
            channels_last if channels_last == "auto" else bool(channels_last),
            None if threads is None else int(threads),
        )  # fmt: skip

    def requested_precision(self, device: torch.device) -> str:
        """``precision``, or what the deprecated ``amp`` / ``cpu_bf16`` ask for on ``device``
        when it is ``auto`` or ``None`` (``None`` without them: float16 on a GPU, as ``amp``
        defaulted to, float32 elsewhere); ``UsageError`` where they contradict ``precision``."""
        key = "cpu_bf16" if device.type == "cpu" else "amp" if device.type == "cuda" else None
        value = getattr(self, key) if key else None
        if self.precision is None:
            return _legacy_name(key, key == "amp" if value is None else value) if key else "float32"
        if value is None:
            return self.precision
        legacy = _legacy_name(key, value)
        if self.precision not in ("auto", legacy):
            raise UsageError(f"precision={self.precision} contradicts {key}={str(value).lower()}"
                             f" (deprecated): drop {key}")  # fmt: skip
        return legacy

    def resolve(self, model: nn.Module) -> tuple[RunnerOptions, str]:
        """These options with ``precision`` decided for ``model`` (never ``auto``: measured, see
        :func:`~unet_seg.inference.precision.resolve_precision`) and why; the deprecated keys
        folded in. Dask workers get the resolved options, so they measure nothing."""
        device = resolve_device(self.device)
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        check_runtime(self.runtime, model)
        requested = self.requested_precision(device)
        probe = None
        if self.runtime == "onnxruntime":
            if requested not in ("auto", "float32"):
                raise UsageError(f"runtime=onnxruntime runs float32; got precision={requested}")
        elif hasattr(model, "features"):  # a checkpoint's network; exported ones run as built
            tiles, first = probe_tiles(model), {}

            def probe(precision: str) -> tuple[np.ndarray, float]:
                runner = ModelRunner(model, device, precision=precision,
                                     channels_last=self.channels_last)  # fmt: skip
                start = time.perf_counter()
                probs = runner(tiles)  # also the warm-up: kernel selection, allocations
                seconds = first[precision] = time.perf_counter() - start
                if seconds > 2 * first.get("float32", float("inf")):
                    return probs, seconds  # clearly slower (no native kernels): no second run
                start = time.perf_counter()
                return runner(tiles), time.perf_counter() - start

        choice = resolve_precision(requested, device, probe)
        return replace(self, amp=None, cpu_bf16=None, precision=choice.precision), choice.reason

    def runner(self, model: nn.Module) -> ModelRunner:
        """A :class:`ModelRunner` of ``model`` with these options (``auto`` resolved)."""
        opts = self.resolve(model)[0]
        return ModelRunner(model, opts.device, opts.tta, precision=opts.precision,
                           runtime=opts.runtime, channels_last=opts.channels_last)  # fmt: skip


def _legacy_name(key: str, value: bool) -> str:
    """The precision a deprecated ``amp`` / ``cpu_bf16`` value stands for."""
    if key == "amp":
        return "float16" if value else "float32"
    return "bf16" if value else "float32"


def probe_tiles(model: nn.Module) -> np.ndarray:
    """The agreement check's input ``(1, C, Z, Y, X)``: seeded noise in [0, 1] (the normalised
    range) of at least 64 x 64 output pixels in 2D, 24^3 voxels in 3D."""
    steps, x = 1, example_input(model)
    want = 64 if model.spatial_dims == 2 else 24
    while min(model.output_shape(x.shape[2:])) < want:
        steps += 1
        x = example_input(model, steps)
    tiles = x.numpy()
    return tiles[:, :, None] if model.spatial_dims == 2 else tiles


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
        amp: autocast to float16 on CUDA (float16 on the CPU would only slow down); used
            only where ``precision`` is ``None``.
        cpu_bf16: autocast to bfloat16 on the CPU; used only where ``precision`` is ``None``.
        softmax: turn logits into probabilities (off: raw outputs, for tests and regression nets).
        channels_last: channels-last memory format (NHWC / NDHWC), in which oneDNN's CPU
            convolutions ran 1.3-1.6x faster in our benchmarks; ``"auto"``: on the CPU.
        precision: ``"float32"``, ``"bf16"`` or ``"float16"`` (autocast); ``None``: as ``amp``
            and ``cpu_bf16`` say. ``"auto"`` is decided before, by :class:`RunnerOptions`.
        runtime: ``"torch"``, ``"compile"`` or ``"onnxruntime"``
            (:mod:`~unet_seg.inference.runtimes`).

    Batch norm layers are folded into their convolutions (:mod:`unet_seg.models.fold`, on a
    copy: the caller's model keeps them). In a lower precision the input convolution stays in
    float32 (:mod:`unet_seg.models.float32_input`).
    """

    def __init__(
        self, model: nn.Module, device: str | torch.device | None = "auto", tta: bool = False,
        amp: bool = True, cpu_bf16: bool = False, softmax: bool = True,
        channels_last: bool | str = "auto", precision: str | None = None,
        runtime: str = "torch",
    ) -> None:  # fmt: skip
        self.device = resolve_device(device)
        on_cuda = self.device.type == "cuda"
        if precision is None:
            precision = ("float16" if amp else "float32") if on_cuda else (
                "bf16" if cpu_bf16 else "float32")  # fmt: skip
        check_precision(precision, self.device)
        if precision == "auto":
            raise ValueError("ModelRunner takes a decided precision; RunnerOptions decides auto")
        self.precision, self.runtime = precision, runtime
        self.autocast_dtype = AUTOCAST_DTYPES[precision]
        if has_batch_norm(model):
            model = fold_batch_norm(model)
        if self.autocast_dtype is not None and runtime != "onnxruntime":
            model = float32_input_convolution(model)  # the image is not rounded to 8 bits
        self.model = model.to(self.device).eval()
        self.spatial_dims = int(model.spatial_dims)
        self.views = tta_views(self.spatial_dims, tta)
        self.softmax = softmax
        if channels_last == "auto":
            channels_last = not on_cuda
        last = torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d
        self.memory_format = last if channels_last else torch.contiguous_format
        self.model = prepare(self.model.to(memory_format=self.memory_format), runtime, self.device)

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
            # Autocast works on aten's convolution, which the oneDNN path goes around; compiled
            # and ONNX Runtime forwards choose their own convolutions.
            eager_float32 = self.autocast_dtype is None and self.runtime == "torch"
            convolutions = onednn_convolutions() if eager_float32 else nullcontext()
            with autocast, convolutions:
                logits = self.model(view.apply(x).contiguous(memory_format=self.memory_format))
            probs = logits.float().softmax(dim=1) if self.softmax else logits.float()
            probs = view.undo(probs)
            total = probs if total is None else total + probs
        total = total / len(self.views)
        if self.spatial_dims == 2:
            total = total[:, :, None]
        return total.contiguous().cpu().numpy()
