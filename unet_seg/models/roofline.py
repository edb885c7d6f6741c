"""How close a run comes to the machine's limit: the matrix-multiply peak of a device and the
effective FLOP/s of a network's useful work.

Useful work is ``2 x MACs`` of the network for the voxels a run writes (each multiply-accumulate
is two floating-point operations; tile overlap and recomputed margins are not counted), MACs
counted by :func:`unet_seg.models.summary.summarize`. The peak is a square matrix multiply on the
threads (or the GPU) the run uses, the best of a few after a warm-up. The benchmarks print both
beside their peer ratios; ``precision=auto`` of :mod:`unet_seg.inference.precision` compares
the float32 and bfloat16 peaks to decide what the hardware runs fast.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from unet_seg.models.summary import summarize


def matmul_gflops(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    size: int = 2048,
    repeats: int = 5,
    warmup: int = 2,
    budget_s: float | None = None,
) -> float:
    """GFLOP/s of a ``(size, size) @ (size, size)`` matrix multiply in ``dtype`` on ``device``:
    ``2 * size**3`` operations over the fastest of ``repeats`` timed runs after ``warmup``.

    ``budget_s``: stop early (fewer repeats) once the timed runs took that long, for dtypes a
    device emulates slowly. Uses the threads torch uses now (``torch.get_num_threads()``).
    """
    if size <= 0 or repeats <= 0 or warmup < 0:
        raise ValueError(f"size and repeats must be positive, got size={size} repeats={repeats}")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.rand(size, size, generator=generator).to(device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        for _ in range(warmup):
            torch.mm(a, b)
        sync()
        best, spent = math.inf, 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            sync()
            seconds = time.perf_counter() - start
            best, spent = min(best, seconds), spent + seconds
            if budget_s is not None and spent > budget_s:
                break
    return 2.0 * size**3 / best / 1e9


def alternating_peaks(
    dtypes: Mapping[str, torch.dtype], device: str | torch.device = "cpu", rounds: int = 3
) -> dict[str, float]:
    """Short matmul probe (1024 x 1024) GFLOP/s for each of ``dtypes`` (by name) on ``device``:
    rounds that alternate the dtypes, best of each, so that a shared machine's load, which comes
    and goes, hits them alike. About a second per dtype at most."""
    peaks: dict[str, float] = {}
    for round_ in range(rounds):
        for name, dtype in dtypes.items():
            gflops = matmul_gflops(dtype, device, 1024, 1, warmup=int(round_ == 0), budget_s=1.0)
            peaks[name] = max(peaks.get(name, 0.0), gflops)
    return peaks


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether torch runs bfloat16 matrix multiplies on ``device`` at all (not whether they are
    fast: that is measured). A CUDA GPU says so itself; CPUs all run them, some only emulated."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def macs_per_output_voxel(model: nn.Module, input_spatial: Sequence[int]) -> float:
    """Multiply-accumulates of one forward pass of ``model`` (a :class:`~unet_seg.models.UNet`)
    on a ``(1, C, *input_spatial)`` input divided by its output voxels. For a same-padding net
    on the whole written region this is exact; for a valid net it includes the margin its window
    recomputes, so pass a large ``input_spatial`` for the network's own cost per voxel."""
    summary = summarize(model, tuple(int(s) for s in input_spatial))
    return summary.total_macs / math.prod(summary.output_shape[2:])


def useful_gflop(model: nn.Module, written_spatial: Sequence[int], count: int = 1) -> float:
    """GFLOP of useful work for ``count`` outputs of spatial shape ``written_spatial``:
    ``2 * MACs`` per output voxel times the voxels written (tile overlap not counted).

    The MACs per output voxel are those of one pass on the smallest input whose output covers
    ``written_spatial``: for a same-padding net that fits it, exactly the pass on that region.
    """
    written = tuple(int(s) for s in written_spatial)
    macs = macs_per_output_voxel(model, _covering_input(model, written))
    return 2.0 * macs * math.prod(written) * count / 1e9


def _covering_input(model: nn.Module, written: tuple[int, ...]) -> tuple[int, ...]:
    """The smallest input size (equal growth per axis) whose output covers ``written``."""
    for grow in range(2 ** (int(model.depth) + 6)):
        size = tuple(w + grow for w in written)
        try:
            out = model.output_shape(size)
        except ValueError:
            continue
        if all(o >= w for o, w in zip(out, written, strict=True)):
            return size
    raise ValueError(f"no input size near {written} gives an output covering it")


def gflops(gflop: float, seconds: float) -> float:
    """Effective GFLOP/s of ``gflop`` of useful work done in ``seconds``."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return gflop / seconds


def fraction_of_peak(achieved_gflops: float, peak_gflops: float) -> float:
    """``achieved / peak``: 1.0 is the matrix-multiply limit of the device."""
    if peak_gflops <= 0:
        raise ValueError(f"peak_gflops must be positive, got {peak_gflops}")
    return achieved_gflops / peak_gflops
