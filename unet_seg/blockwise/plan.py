"""Cutting a volume into blocks that can be predicted independently and still give the whole
volume's result.

A block owns a **write region**: output voxels aligned to the output chunks, so no two blocks
write the same chunk. It runs the windows of the whole-volume tile plan
(:func:`unet_seg.inference.tiling.plan_tiles`) that touch its write region, and reads their
input, its **read region** (the write region plus the network's margin, or plus the reach of the
blended windows for a same-padding network), mirrored at the volume's edges exactly as the whole
volume would be. Every voxel thus gets the same windows, in the same order, as in one
whole-volume pass: overlap-tile keeps the same last writer, a Gaussian-blended sliding window the
same weighted sum, so blocked and unblocked predictions agree (up to the batching of the
network's float arithmetic).

The price of blocks is the windows that straddle a block face: they run once for each block they
touch. Blocks a few windows wide keep that share small (see :func:`default_block_shape`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from unet_seg.inference.stream import Box, input_indices, iter_tiled_predictions, restrict_plan
from unet_seg.inference.tiling import TilePlan, plan_tiles

Region = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (start, stop) per axis
MAX_BLOCK_VOXELS = 1 << 24  # ~16.8M output voxels: ~300 MB of float32 buffers for 2 classes
WINDOWS_PER_BLOCK_AXIS = 4  # straddling windows then cost at most ~1/4 extra per axis


@dataclass(frozen=True)
class Block:
    """One unit of work: ``index`` in C order over the block grid, at grid ``position``.

    ``write``: the ``(Z, Y, X)`` output region it owns; ``read``: the input region inside the
    volume its windows read (the part beyond the volume's edge is mirrored from inside it).
    """

    index: int
    position: tuple[int, int, int]
    write: Region
    read: Region

    @property
    def write_box(self) -> Box:
        return tuple(slice(a, b) for a, b in self.write)

    @property
    def read_box(self) -> Box:
        return tuple(slice(a, b) for a, b in self.read)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in self.write)


@dataclass(frozen=True)
class BlockPlan:
    """The blocks of a ``(Z, Y, X)`` volume: a grid of ``block_shape`` write regions (the last
    block per axis is cut at the volume's edge) over the whole-volume ``tiles``."""

    tiles: TilePlan
    block_shape: tuple[int, int, int]

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return tuple(a.size for a in self.tiles.axes)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(-(-s // b) for s, b in zip(self.volume_shape, self.block_shape, strict=True))

    def __len__(self) -> int:
        return math.prod(self.grid)

    def __iter__(self) -> Iterator[Block]:
        return (self.block(i) for i in range(len(self)))

    def block(self, index: int) -> Block:
        if not 0 <= index < len(self):
            raise IndexError(f"block {index} outside the {len(self)} blocks of the plan")
        position = tuple(int(p) for p in np.unravel_index(index, self.grid))
        write = tuple(
            (p * b, min((p + 1) * b, s))
            for p, b, s in zip(position, self.block_shape, self.volume_shape, strict=True)
        )
        return Block(index, position, write, read_region(self.tiles, write))


def read_region(tiles: TilePlan, write: Sequence[tuple[int, int]]) -> Region:
    """The input region, inside the volume, read by the windows that touch ``write``."""
    region = []
    for axis in restrict_plan(tiles, write).axes:
        idx = input_indices(axis)
        region.append((int(idx.min()), int(idx.max()) + 1))
    return tuple(region)


def _step(axis) -> int:
    """Distance between neighbouring windows along one axis (the window itself if only one)."""
    return axis.starts[1] - axis.starts[0] if len(axis.starts) > 1 else axis.out_size


def default_block_shape(
    tiles: TilePlan,
    chunks: Sequence[int] | None = None,
    max_voxels: int = MAX_BLOCK_VOXELS,
) -> tuple[int, int, int]:
    """A block shape for ``tiles``: multiples of ``chunks`` (the output's ``(Z, Y, X)`` chunks;
    default 1), about :data:`WINDOWS_PER_BLOCK_AXIS` window steps along each network axis (the
    axis split into blocks of equal size nearest to that), one
    chunk along the slice axis of a 2D network (as many slices as fit when there are no chunks),
    and at most ``max_voxels`` (blocks shrink by a chunk along their longest axis until they
    fit, never below one chunk)."""
    free = chunks is None  # no chunks to respect: a 2D network's block takes many slices
    chunks = (1, 1, 1) if chunks is None else tuple(int(c) for c in chunks)
    if len(chunks) != 3 or min(chunks) < 1:
        raise ValueError(f"chunks must be three positive sizes (Z, Y, X), got {chunks}")
    shape = []
    for axis, chunk in zip(tiles.axes, chunks, strict=True):
        wanted = chunk if axis.in_size == 1 else WINDOWS_PER_BLOCK_AXIS * _step(axis)
        whole, per_block = -(-axis.size // chunk), -(-wanted // chunk)  # in chunks
        # Blocks of equal size closest to the wanted one: a 256-voxel axis with 212 wanted is
        # one block, not 212 + 44 (a sliver whose windows all run twice).
        count = max(1, int(whole / per_block + 0.5))
        shape.append(-(-whole // count) * chunk)
    while math.prod(shape) > max_voxels:
        axis = max(range(3), key=lambda a: shape[a] if shape[a] > chunks[a] else 0)
        if shape[axis] <= chunks[axis]:
            break
        shape[axis] -= chunks[axis]
    if free and tiles.axes[0].in_size == 1:  # fill the voxel budget with slices
        shape[0] = max(1, min(tiles.axes[0].size, max_voxels // (shape[1] * shape[2])))
    return tuple(shape)


def plan_blocks(
    tiles: TilePlan,
    block_shape: Sequence[int] | None = None,
    chunks: Sequence[int] | None = None,
) -> BlockPlan:
    """Blocks over the volume of ``tiles`` whose write regions are whole output ``chunks``.

    Args:
        tiles: the whole-volume plan from :func:`plan_tiles`.
        block_shape: ``(Z, Y, X)`` output voxels per block, rounded up to whole chunks
            (``None``: :func:`default_block_shape`).
        chunks: ``(Z, Y, X)`` chunk shape of the output (``None``: no alignment needed).
    """
    chunk = (1, 1, 1) if chunks is None else tuple(int(c) for c in chunks)
    if block_shape is None:
        return BlockPlan(tiles, default_block_shape(tiles, chunk))
    block = tuple(int(b) for b in block_shape)
    if len(block) != 3 or min(block) < 1 or len(chunk) != 3 or min(chunk) < 1:
        raise ValueError(
            f"block_shape and chunks must be three positive sizes (Z, Y, X), got {block_shape} "
            f"and {chunks}"
        )
    return BlockPlan(tiles, tuple(-(-b // c) * c for b, c in zip(block, chunk, strict=True)))


def predict_block(
    read: Callable[[Box], np.ndarray],
    blocks: BlockPlan,
    block: Block,
    run_batch: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 4,
    blend_mode: str = "gaussian",
    progress: bool | None = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Predict one block: yields ``(z0, (K, n, Y, X))`` slabs covering its write region, where
    ``Y, X`` is the block's plane. ``read`` takes ``(z, y, x)`` slices inside its read region;
    ``progress``: a tqdm bar over the block's windows (``None``: only on a TTY)."""
    return iter_tiled_predictions(
        read, blocks.volume_shape, blocks.tiles, run_batch, batch_size, blend_mode,
        progress=progress, region=block.write,
    )  # fmt: skip


def predict_blocked(
    image: np.ndarray,
    model,
    run_batch: Callable[[np.ndarray], np.ndarray],
    tile_size: int | Sequence[int],
    block_shape: Sequence[int] | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    blend_mode: str = "gaussian",
) -> np.ndarray:
    """In-memory block by block: ``(C, Z, Y, X)`` image -> ``(K, Z, Y, X)`` probabilities, equal
    to :func:`unet_seg.inference.stream.predict_tiled` (a reference for tests and benchmarks)."""
    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, Y, X) image, got shape {image.shape}")
    blocks = plan_blocks(plan_tiles(model, image.shape[1:], tile_size, overlap), block_shape)
    out: np.ndarray | None = None
    for block in blocks:
        loaded = image[(slice(None), *block.read_box)]  # what a worker would load
        read = region_view(loaded, block.read)
        for z0, probs in predict_block(read, blocks, block, run_batch, batch_size, blend_mode):
            if out is None:
                out = np.zeros((probs.shape[0], *image.shape[1:]), np.float32)
            _, (ya, yb), (xa, xb) = block.write
            out[:, z0 : z0 + probs.shape[1], ya:yb, xa:xb] = probs
    return out


def region_view(data: np.ndarray, region: Region) -> Callable[[Box], np.ndarray]:
    """A reader of volume boxes from ``data`` ``(C, *region)``, the input loaded for ``region``;
    a box outside ``region`` raises ``ValueError`` (a block must read only its read region)."""

    def read(box: Box) -> np.ndarray:
        if any(s.start < a or s.stop > b for s, (a, b) in zip(box, region, strict=True)):
            raise ValueError(f"read of {box} outside the loaded region {region}")
        local = tuple(slice(s.start - a, s.stop - a) for s, (a, _) in zip(box, region, strict=True))
        return data[(slice(None), *local)]

    return read
