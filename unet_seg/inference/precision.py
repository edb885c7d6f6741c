"""The precision inference runs in: ``float32``, ``bf16``, ``float16``, or ``auto``, chosen by
what the hardware does fast, measured.

``auto`` times a short matrix multiply in float32 and in each lower precision the device runs
(bfloat16 on the CPU; bfloat16 and float16 on a CUDA GPU) and takes the fastest lower precision
only if its peak is at least :data:`MIN_SPEEDUP` times float32's: bfloat16 pays on CPUs with AMX
and on GPUs, while a CPU that merely has AVX512-BF16 may run it at half the float32 speed, so a
CPU flag decides nothing. The choice is then checked on the network itself, on a small probe
input: its forward pass must be at least :data:`MIN_NETWORK_SPEEDUP` times float32's (a matmul
is not a convolution, and a loaded machine skews a short probe) and agree with float32 (labels
equal on at least 99.9% of its voxels, probabilities within 1e-2), else float32 with a message.
:func:`choose_precision` and :func:`agreement` are pure functions; :func:`resolve_precision`
runs them on measured peaks and a probe.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from unet_seg.errors import UsageError
from unet_seg.models.roofline import alternating_peaks, bf16_supported

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bf16", "float16")
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "float32": None, "bf16": torch.bfloat16, "float16": torch.float16,
}  # fmt: skip
# A lower precision must be this much faster than float32 in the matmul probe to be worth its
# rounding; a smaller gain is eaten by the casts around the convolutions.
MIN_SPEEDUP = 1.5
LABEL_AGREEMENT = 0.999  # fraction of probe voxels whose label must not change
PROBABILITY_TOLERANCE = 1e-2  # largest allowed |p_low - p_float32| on the probe
# The network itself must gain this much on the probe: never slower than float32.
MIN_NETWORK_SPEEDUP = 1.1


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and why (for the log and the run's summary)."""

    precision: str
    reason: str


def candidates(device_type: str) -> tuple[str, ...]:
    """The lower precisions worth measuring on a device of ``device_type``."""
    return {"cpu": ("bf16",), "cuda": ("bf16", "float16")}.get(device_type, ())


def choose_precision(
    peaks: Mapping[str, float | None], min_speedup: float = MIN_SPEEDUP
) -> PrecisionChoice:
    """The precision ``auto`` picks from measured matmul ``peaks`` (GFLOP/s by precision name;
    ``None``: not supported): the fastest lower precision whose peak is at least ``min_speedup``
    times ``peaks["float32"]``, else float32. Ties go to bf16 (float32's range)."""
    f32 = peaks.get("float32")
    if not f32 or f32 <= 0:
        raise ValueError(f"a positive float32 peak is needed, got {f32!r}")
    lower = {name: peak for name, peak in peaks.items() if name != "float32" and peak}
    if not lower:
        return PrecisionChoice("float32", "no lower precision measured on this device")
    best = max(lower, key=lambda name: (lower[name], name == "bf16"))
    ratio = lower[best] / f32
    if ratio >= min_speedup:
        return PrecisionChoice(best, f"{best} matmul {ratio:.2f}x float32's (>= {min_speedup}x)")
    return PrecisionChoice(
        "float32", f"{best} matmul only {ratio:.2f}x float32's (< {min_speedup}x)"
    )


def agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """``(fraction of voxels with the same label, max |p - p_reference|)`` of two probability
    arrays ``(B, K, *spatial)``; the label is the argmax over ``K``."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {candidate.shape}")
    same = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    return same, float(np.abs(reference.astype(np.float64) - candidate).max())


def agrees(reference: np.ndarray, candidate: np.ndarray) -> tuple[bool, str]:
    """Whether ``candidate`` passes the agreement check against ``reference``, and the figures."""
    same, diff = agreement(reference, candidate)
    ok = same >= LABEL_AGREEMENT and diff <= PROBABILITY_TOLERANCE
    return ok, f"labels equal on {100 * same:.3f}% of the probe, max |dp| {diff:.1e}"


def measure_peaks(device: torch.device) -> dict[str, float | None]:
    """Short matmul probe (1024 x 1024, best of 3) in float32 and each candidate precision;
    measured once per process, device and thread count."""
    return dict(_measured_peaks(str(device), torch.get_num_threads()))


@functools.lru_cache(maxsize=8)
def _measured_peaks(device_name: str, threads: int) -> tuple[tuple[str, float | None], ...]:
    device = torch.device(device_name)
    dtypes = {"float32": torch.float32}
    peaks: dict[str, float | None] = {}
    for name in candidates(device.type):
        if name == "bf16" and not bf16_supported(device):
            peaks[name] = None
        else:
            dtypes[name] = AUTOCAST_DTYPES[name]
    peaks.update(alternating_peaks(dtypes, device))
    del threads  # part of the cache key only: the peak depends on it
    return tuple(peaks.items())


def check_precision(precision: str, device: torch.device) -> None:
    """``UsageError`` for a precision that is not one of :data:`PRECISIONS` or that ``device``
    cannot run (float16 on the CPU, bf16 on a GPU without it)."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float16" and device.type == "cpu":
        raise UsageError("precision=float16 runs on a GPU only; on the CPU use bf16 or auto")
    if precision == "bf16" and not bf16_supported(device) and device.type != "mps":
        raise UsageError(f"precision=bf16: device '{device}' does not support bfloat16")


def resolve_precision(
    requested: str,
    device: torch.device,
    probe: Callable[[str], tuple[np.ndarray, float]] | None,
    peaks: Callable[[torch.device], Mapping[str, float | None]] | None = None,
) -> PrecisionChoice:
    """The precision of a run that asked for ``requested`` on ``device``.

    ``probe(precision)`` returns the probabilities ``(B, K, *spatial)`` of the network on a
    fixed probe input in that precision and the seconds of a warm forward pass; ``None``: the
    network runs in its own precision (an exported one), so ``auto`` is float32. A named
    precision is taken as given (after :func:`check_precision`); ``auto`` measures
    ``peaks(device)`` (default :func:`measure_peaks`), applies :func:`choose_precision`, the
    network's own speed-up and the agreement check, and says why in the log.
    """
    check_precision(requested, device)
    if requested != "auto":
        return PrecisionChoice(requested, "requested")
    if probe is None:
        return PrecisionChoice("float32", "the network runs in its own precision")
    choice = choose_precision((peaks or measure_peaks)(device))
    if choice.precision != "float32":
        (reference, f32_s), (candidate, low_s) = probe("float32"), probe(choice.precision)
        speedup = f32_s / max(low_s, 1e-9)
        if speedup >= MIN_NETWORK_SPEEDUP:  # a second round must confirm it: load comes and goes
            (_, f32_s), (_, low_s) = probe("float32"), probe(choice.precision)
            speedup = min(speedup, f32_s / max(low_s, 1e-9))
        if speedup < MIN_NETWORK_SPEEDUP:
            reason = (f"{choice.reason}, but the network ran only {speedup:.2f}x float32's speed "
                      f"on the probe (< {MIN_NETWORK_SPEEDUP}x)")  # fmt: skip
            log.info("precision=auto: float32 (%s)", reason)
            return PrecisionChoice("float32", reason)
        ok, figures = agrees(reference, candidate)
        if not ok:
            log.warning("precision=auto: %s is fast here but disagrees with float32 (%s): "
                        "running in float32", choice.precision, figures)  # fmt: skip
            return PrecisionChoice("float32", f"{choice.precision} failed the check: {figures}")
        choice = PrecisionChoice(choice.precision, f"{choice.reason}; network {speedup:.2f}x on "
                                                   f"the probe; {figures}")  # fmt: skip
    log.info("precision=auto: %s (%s)", choice.precision, choice.reason)
    return choice
