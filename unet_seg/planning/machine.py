"""The machine and the budget a plan is made for: device, memory, throughput, time or epochs.

Everything can be given; what is not is detected (memory) or taken from a stated default
(throughput), so that a plan is deterministic for the same inputs. Measuring the throughput of a
candidate network is optional: :func:`unet_seg.planning.plan.make_plan` takes a ``measure``
callable that tests replace.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from unet_seg.errors import UsageError
from unet_seg.io.limits import memory_budget

# Multiply-accumulates per second of a training step on one CPU core (fp32 convolutions of the
# small U-Nets, forward and backward): 2.5e9 is about what 2 cores of the development machine
# reached on the 16..128 2D net while other jobs ran; a conservative rule, not a benchmark.
CPU_MACS_PER_CORE = 2.5e9
# One GPU: small U-Nets are bound by kernel launches far below the card's peak.
GPU_MACS_PER_SECOND = 1e12
GPU_MEMORY_SHARE = 0.8  # of the card's memory: the CUDA context and the allocator's slack


@dataclass(frozen=True)
class Machine:
    """``device`` ``"cpu"`` or ``"cuda"``, ``memory_bytes`` the plan may use for a training
    step, ``macs_per_second`` of a training step, ``cores`` (CPU)."""

    device: str
    memory_bytes: int
    macs_per_second: float
    cores: int = 1

    def describe(self) -> str:
        return (
            f"{self.device}, {self.memory_bytes / 2**30:.1f} GiB, {self.macs_per_second:.2g} MAC/s"
        )


@dataclass(frozen=True)
class Budget:
    """A training budget: ``seconds`` of wall-clock time, or a number of ``epochs``."""

    seconds: float | None = None
    epochs: int | None = None

    def describe(self) -> str:
        if self.epochs is not None:
            return f"{self.epochs} epochs"
        return f"{self.seconds / 60:g} min"


_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600}
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")


def parse_budget(text: object) -> Budget:
    """``"30min"``, ``"2h"``, ``"90s"`` or ``"50epochs"`` as a :class:`Budget`; ``UsageError``
    naming ``budget`` otherwise."""
    match = _BUDGET.match(str(text).lower())
    unit = match[2] if match else ""
    if match and unit in ("epoch", "epochs") and float(match[1]).is_integer() and float(match[1]):
        return Budget(epochs=int(float(match[1])))
    if match and unit in _UNITS and float(match[1]) > 0:
        return Budget(seconds=float(match[1]) * _UNITS[unit])
    raise UsageError(
        f"budget={text!r}: give a time (30min, 2h, 90s) or a number of epochs (50epochs)"
    )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def detect_machine(
    device: str = "auto", memory_gib: float | None = None, macs_per_second: float | None = None
) -> Machine:
    """The :class:`Machine` this runs on: ``device`` ``auto`` picks CUDA when torch sees a GPU;
    memory is half the available RAM (:func:`~unet_seg.io.limits.memory_budget`) or
    :data:`GPU_MEMORY_SHARE` of the card unless ``memory_gib`` is given; throughput the stated
    defaults unless ``macs_per_second`` is given."""
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"machine.device={device!r}: choose auto, cpu or cuda")
    gpu_memory = None
    if device in ("auto", "cuda"):
        import torch  # only to ask for a GPU

        if torch.cuda.is_available():
            device = "cuda"
            gpu_memory = torch.cuda.get_device_properties(0).total_memory
        elif device == "cuda":
            raise UsageError("machine.device=cuda, but torch sees no GPU")
        else:
            device = "cpu"
    cores = _cores()
    if memory_gib is not None:
        if float(memory_gib) <= 0:
            raise UsageError(f"machine.memory_gib={memory_gib}: must be positive")
        memory = int(float(memory_gib) * 2**30)
    else:
        memory = int(gpu_memory * GPU_MEMORY_SHARE) if gpu_memory else memory_budget()
    if macs_per_second is None:
        macs_per_second = GPU_MACS_PER_SECOND if device == "cuda" else CPU_MACS_PER_CORE * cores
    elif float(macs_per_second) <= 0:
        raise UsageError(f"machine.macs_per_second={macs_per_second}: must be positive")
    return Machine(device, memory, float(macs_per_second), cores)
