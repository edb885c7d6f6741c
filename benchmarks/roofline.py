"""The roofline figures every speed benchmark prints: the device's matrix-multiply peak on the
threads in use, each method's effective GFLOP/s and its fraction of that peak, and one JSON line
of all figures at the end, so that runs can be compared by a script (``tail -n 1 | jq``).

Useful work is ``2 x MACs`` of the network for the voxels a method writes (tile overlap not
counted), from :mod:`unet_seg.models.roofline`; the peak is a 2048 x 2048 matrix multiply
(1024 with ``quick``), best of 5 after 2 warm-ups, in float32 and, where the device runs it,
bfloat16. Import it from a benchmark as ``import roofline`` (the scripts' folder is on the path).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

import torch

from unet_seg.models.roofline import bf16_supported, fraction_of_peak, gflops, matmul_gflops


@dataclass(frozen=True)
class Peaks:
    """Matrix-multiply peaks (GFLOP/s) of ``device`` on ``threads`` torch threads."""

    device: str
    device_name: str
    threads: int
    float32: float
    bf16: float | None = None


def device_name(device: str | torch.device) -> str:
    """The GPU's name, or the CPU's model name (``/proc/cpuinfo``), or the platform's."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_peaks(device: str | torch.device = "cpu", quick: bool = False) -> Peaks:
    """The float32 and (where supported) bfloat16 matmul peaks on the threads in use now.

    A device that only emulates bfloat16 gets at most about 3 s of timed bfloat16 runs."""
    size, repeats = (1024, 2) if quick else (2048, 5)
    f32 = matmul_gflops(torch.float32, device, size, repeats)
    bf16 = None
    if bf16_supported(device):
        bf16 = matmul_gflops(torch.bfloat16, device, size, repeats, warmup=1, budget_s=3.0)
    return Peaks(str(device), device_name(device), torch.get_num_threads(), f32, bf16)


def method_figures(gflop: float, seconds: float, peaks: Peaks, **extra: Any) -> dict[str, Any]:
    """``seconds``, ``gflops`` and ``fraction_of_peak`` (of the float32 peak; and
    ``fraction_of_bf16_peak`` where measured) of a method that did ``gflop`` of useful work."""
    achieved = gflops(gflop, seconds)
    figures = {"seconds": round(seconds, 4), "gflop": round(gflop, 3),
               "gflops": round(achieved, 2),
               "fraction_of_peak": round(fraction_of_peak(achieved, peaks.float32), 4)}  # fmt: skip
    if peaks.bf16:
        figures["fraction_of_bf16_peak"] = round(fraction_of_peak(achieved, peaks.bf16), 4)
    return {**figures, **extra}


def training_step_gflop(model: torch.nn.Module, x: torch.Tensor) -> float:
    """GFLOP of one forward and backward pass of ``model`` on ``x`` ``(N, C, *spatial)``, as
    ``torch.utils.flop_counter`` counts them (2 per MAC; the backward about twice the forward):
    a training step's useful work, loss and optimiser left out. Gradients are cleared after."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def describe_peaks(peaks: Peaks) -> str:
    """One line: the device, the threads and the peaks."""
    bf16 = f", bfloat16 {peaks.bf16:.0f}" if peaks.bf16 else ""
    return (f"roofline: {peaks.device_name} ({peaks.device}), {peaks.threads} torch threads; "
            f"matmul peak GFLOP/s: float32 {peaks.float32:.0f}{bf16}")  # fmt: skip


def roofline_table(peaks: Peaks, methods: dict[str, dict[str, Any]]) -> str:
    """The peaks and one row per method: useful GFLOP, effective GFLOP/s, fraction of peak."""
    lines = [describe_peaks(peaks), f"{'method':<44}{'GFLOP':>9}{'GFLOP/s':>9}{'of peak':>9}"]
    for name, fig in methods.items():
        if "gflops" not in fig:
            continue
        lines.append(f"{name:<44}{fig['gflop']:>9.1f}{fig['gflops']:>9.1f}"
                     f"{fig['fraction_of_peak']:>9.3f}")  # fmt: skip
    return "\n".join(lines)


def record(benchmark: str, peaks: Peaks | None, methods: dict[str, dict], **extra: Any) -> dict:
    """The benchmark's figures as one JSON-able dict: ``benchmark``, ``device``, ``threads``,
    ``peak_gflops`` (and ``peak_gflops_bf16``), ``methods`` (per method its figures) and the
    benchmark's own figures in ``extra``."""
    out: dict[str, Any] = {"benchmark": benchmark, "torch": torch.__version__}
    if peaks is not None:
        out.update(device=peaks.device, device_name=peaks.device_name, threads=peaks.threads,
                   peak_gflops=round(peaks.float32, 2))  # fmt: skip
        if peaks.bf16 is not None:
            out["peak_gflops_bf16"] = round(peaks.bf16, 2)
    else:
        out.update(device="cpu", threads=torch.get_num_threads())
    return {**out, "methods": methods, **extra}


def print_record(benchmark: str, peaks: Peaks | None, methods: dict[str, dict], **extra) -> None:
    """Print :func:`record` as the one JSON line that ends a benchmark's output."""
    print(json.dumps(record(benchmark, peaks, methods, **extra), sort_keys=True), flush=True)
