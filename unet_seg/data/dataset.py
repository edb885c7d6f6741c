"""Torch datasets of patches: random, augmented patches for training; fixed windows for validation.

Each item is a dict (before batching): ``"image"`` float32 ``(C, *patch)``, ``"label"``
int64 ``(*patch)``, ``"weight"`` float32 ``(*patch)``, all with the same spatial size.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from unet_seg.data.patches import ForegroundSampler, centered_start, grid_starts, random_center

Augment = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]


class PatchSource(Protocol):
    """What patches are cut from: an in-memory :class:`~unet_seg.data.regions.Region` or a
    :class:`~unet_seg.data.lazy_regions.LazyRegion` read from disk patch by patch."""

    name: str

    @property
    def shape(self) -> tuple[int, ...]: ...

    def patch(self, start: Sequence[int], size: Sequence[int], mode: str) -> dict: ...

    def foreground_sampler(
        self, classes: Sequence[int] | None, rng: np.random.Generator
    ) -> ForegroundSampler: ...


def item_rng() -> np.random.Generator:
    """A fresh generator drawn from torch's RNG.

    In the main process torch's RNG is the one ``seed_everything`` set; in a dataloader worker torch
    seeds it from the loader's base seed plus the worker id, drawn anew each epoch. Drawing every
    item's generator from it makes batches reproducible for a seed and worker count, different
    across workers and epochs, without any state in the dataset.
    """
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def init_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy's and Python's global RNGs from the worker's torch seed, for
    third-party code that uses them (the datasets themselves use :func:`item_rng`), and leave
    stop signals to the main process.

    SLURM's preemption, ``kill -- -PGID`` and Ctrl-C in a terminal signal the whole process
    group; a worker that died of it made the main process fail with "DataLoader worker ...
    killed by signal" (exit 1, no checkpoint) instead of stopping as interrupted (exit 130,
    ``interrupted.ckpt``). Workers ignore SIGTERM and SIGINT; the main process stops them (a
    sentinel on their queue, and they exit by themselves when it is gone)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG is what such code uses
    random.seed(seed)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _to_tensors(sample: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32)),
        "label": torch.from_numpy(np.ascontiguousarray(sample["label"], dtype=np.int64)),
        "weight": torch.from_numpy(np.ascontiguousarray(sample["weight"], dtype=np.float32)),
    }


def cut(region: PatchSource, start: Sequence[int], size: Sequence[int], mode: str) -> dict:
    """The ``size`` window at ``start`` of a region's image, label and weight (ones if none)."""
    return region.patch(start, size, mode)


class RandomPatchDataset(Dataset):
    """``length`` random patches per epoch, mirror-padded at borders and augmented.

    A region is drawn with probability proportional to its voxel count, then a patch centre:
    uniform, or on a foreground voxel (class in ``foreground_classes``, default any class > 0) with
    probability ``foreground_prob``. ``augment(sample, rng)`` deforms image, label and weight
    with one displacement.
    """

    def __init__(
        self,
        regions: Sequence[PatchSource],
        patch_size: Sequence[int],
        length: int,
        augment: Augment | None = None,
        foreground_prob: float = 0.0,
        foreground_classes: Sequence[int] | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        if not regions:
            raise ValueError("RandomPatchDataset: no training images")
        if not 0.0 <= foreground_prob <= 1.0:
            raise ValueError(f"foreground_prob must be in [0, 1], got {foreground_prob}")
        self.regions = list(regions)
        self.patch_size = tuple(patch_size)
        self.length = int(length)
        self.augment = augment
        self.foreground_prob = foreground_prob
        self.pad_mode = pad_mode
        sizes = np.array([np.prod(r.shape) for r in self.regions], np.float64)
        self.region_prob = sizes / sizes.sum()
        self.foreground: list[ForegroundSampler | None] = [None] * len(self.regions)
        if foreground_prob > 0:
            rng = np.random.default_rng(0)  # which coordinates are kept is not a training choice
            self.foreground = [r.foreground_sampler(foreground_classes, rng) for r in self.regions]

    def __len__(self) -> int:
        return self.length

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One augmented patch as numpy arrays, drawn with ``rng``."""
        k = int(rng.choice(len(self.regions), p=self.region_prob))
        region = self.regions[k]
        center = random_center(region.shape, rng, self.foreground[k], self.foreground_prob)
        sample = cut(
            region, centered_start(center, self.patch_size), self.patch_size, self.pad_mode
        )
        if self.augment is not None:
            sample = self.augment(sample, rng)
        return sample

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} patches")
        return _to_tensors(self.sample(item_rng()))


class WindowDataset(Dataset):
    """Fixed windows for validation: a grid covering each region (``mode="grid"``, the last
    window flush with the edge), or one window per region centred on it (``mode="whole"``,
    cropping larger and mirror-padding smaller regions to ``size``)."""

    def __init__(
        self,
        regions: Sequence[PatchSource],
        size: Sequence[int],
        mode: str = "grid",
        stride: Sequence[int] | None = None,
        pad_mode: str = "reflect",
    ) -> None:
        if mode not in ("grid", "whole"):
            raise ValueError(f"validation mode must be 'grid' or 'whole', got {mode!r}")
        if not regions:
            raise ValueError("WindowDataset: no validation images")
        self.regions = list(regions)
        self.size = tuple(size)
        self.pad_mode = pad_mode
        self.windows: list[tuple[int, tuple[int, ...]]] = []
        for k, region in enumerate(self.regions):
            if mode == "whole":
                starts = [tuple((n - s) // 2 for n, s in zip(region.shape, self.size, strict=True))]
            else:
                starts = grid_starts(region.shape, self.size, stride)
            self.windows += [(k, start) for start in starts]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k, start = self.windows[index]
        return _to_tensors(cut(self.regions[k], start, self.size, self.pad_mode))
