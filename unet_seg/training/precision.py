"""``trainer.precision=auto``: bf16 mixed precision where the hardware runs bfloat16 fast,
measured, else full float32.

A CUDA GPU that supports bfloat16 trains in ``bf16-mixed`` (one without it, in ``16-mixed``).
On the CPU a CPU flag decides nothing: a short matrix multiply is timed in float32 and in
bfloat16 on the threads training uses, and ``bf16-mixed`` is taken only where bfloat16 is at
least :data:`MIN_SPEEDUP` times as fast (AMX, or AVX512-BF16 cores whose bf16 peak is twice
float32's); elsewhere bfloat16 is emulated or no faster, and ``32-true`` stays. Lightning's own
values (``32-true``, ``bf16-mixed``, ...) pass through unchanged. :func:`choose_training_precision`
is a pure function of the measured peaks; :func:`resolve_training_precision` measures them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch

from unet_seg.models.roofline import alternating_peaks

log = logging.getLogger(__name__)

AUTO = "auto"
# bfloat16 must be this much faster than float32 in the matmul probe to pay for the casts
# around every layer (the same bar as inference's ``precision=auto``).
MIN_SPEEDUP = 1.5


def choose_training_precision(
    device_type: str, peaks: Mapping[str, float | None], cuda_bf16: bool = True
) -> tuple[str, str]:
    """``(Lightning precision, reason)`` for ``auto`` on a device of ``device_type``.

    Args:
        device_type: ``"cpu"`` or ``"cuda"`` (anything else trains in ``32-true``).
        peaks: matmul GFLOP/s by ``"float32"`` and ``"bf16"`` (``None``: not measured); used
            on the CPU only.
        cuda_bf16: whether the GPU supports bfloat16.
    """
    if device_type == "cuda":
        if cuda_bf16:
            return "bf16-mixed", "a CUDA GPU with bfloat16"
        return "16-mixed", "a CUDA GPU without bfloat16: float16 with loss scaling"
    if device_type != "cpu":
        return "32-true", f"device {device_type!r}: float32"
    f32, bf16 = peaks.get("float32"), peaks.get("bf16")
    if not f32 or not bf16:
        return "32-true", "bfloat16 not measured on this CPU: float32"
    ratio = bf16 / f32
    figures = f"bf16 matmul {bf16:.0f} GFLOP/s = {ratio:.2f}x float32's {f32:.0f}"
    if ratio >= MIN_SPEEDUP:
        return "bf16-mixed", f"{figures} (>= {MIN_SPEEDUP}x)"
    return "32-true", f"{figures} (< {MIN_SPEEDUP}x): float32"


def measure_cpu_peaks() -> dict[str, float | None]:
    """Matmul GFLOP/s in float32 and bfloat16 on the CPU's current threads (the same probe as
    inference's ``precision=auto``); about 0.1 s on a CPU that runs bfloat16 natively."""
    return dict(alternating_peaks({"float32": torch.float32, "bf16": torch.bfloat16}, "cpu"))


def _training_device_type(accelerator: object) -> str:
    """The device kind Lightning's ``accelerator`` setting will train on."""
    name = str(accelerator or "auto").lower()
    if name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu" if name in ("auto", "cpu") else name


def resolve_training_precision(
    precision: object,
    accelerator: object = "auto",
    processes: int = 1,
    peaks: Callable[[], Mapping[str, float | None]] | None = None,
) -> str:
    """Lightning's ``precision`` value for the trainer setting ``precision``: ``auto`` chosen
    by :func:`choose_training_precision` (logged with its reason), anything else unchanged.

    ``processes``: devices x nodes. Several CPU processes would each time their own probe and
    could choose apart, so they train in ``32-true`` (name ``bf16-mixed`` to have it).
    ``peaks``: the CPU probe (default :func:`measure_cpu_peaks`).
    """
    if str(precision) != AUTO:
        return precision  # type: ignore[return-value]
    device_type = _training_device_type(accelerator)
    if device_type == "cpu" and processes > 1:
        log.info(
            "trainer.precision=auto: 32-true (%d CPU processes would measure apart)", processes
        )
        return "32-true"
    measured = (peaks or measure_cpu_peaks)() if device_type == "cpu" else {}
    cuda_bf16 = device_type == "cuda" and bool(torch.cuda.is_bf16_supported())
    chosen, reason = choose_training_precision(device_type, measured, cuda_bf16)
    log.info("trainer.precision=auto: %s (%s)", chosen, reason)
    return chosen
