"""Block-wise prediction equals the whole-volume prediction (blocks, stream regions)."""

from __future__ import annotations

import numpy as np
import pytest

from unet_seg.blockwise.plan import default_block_shape, plan_blocks, predict_blocked
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import iter_tiled_predictions, predict_tiled
from unet_seg.inference.tiling import plan_tiles
from unet_seg.models import UNet


def small_unet(spatial_dims: int, padding: str, classes: int = 3) -> UNet:
    return UNet(spatial_dims, 1, classes, features=(4, 8, 16), padding=padding, dropout=0.0).eval()


CASES = [
    # spatial_dims, padding, (Z, Y, X), tile, block, overlap
    (2, "valid", (2, 61, 45), 24, (1, 32, 20), 0.25),
    (2, "same", (2, 67, 53), 16, (1, 24, 40), 0.25),
    # blocks smaller than a window: many windows run several times (slow)
    pytest.param(2, "same", (1, 41, 37), 12, (1, 9, 7), 0.5, marks=pytest.mark.slow),
    (3, "valid", (9, 13, 11), 6, (5, 8, 7), 0.25),
    (3, "same", (11, 19, 14), 8, (4, 8, 6), 0.25),
    pytest.param(
        3, "same", (9, 13, 10), 8, (64, 64, 64), 0.25, marks=pytest.mark.slow
    ),  # one block
]


@pytest.mark.parametrize("spatial_dims,padding,shape,tile,block,overlap", CASES)
def test_blocked_prediction_equals_whole_volume(
    rng, spatial_dims, padding, shape, tile, block, overlap
):
    model = small_unet(spatial_dims, padding)
    runner = ModelRunner(model, device="cpu")
    image = rng.standard_normal((1, *shape)).astype(np.float32)
    whole = predict_tiled(image, model, runner, tile, overlap, batch_size=3)
    # Each block sees only its read region (predict_blocked raises on any read outside it).
    blocked = predict_blocked(image, model, runner, tile, block, overlap, batch_size=2)
    np.testing.assert_allclose(blocked, whole, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(blocked.argmax(0), whole.argmax(0))
    plan = plan_blocks(plan_tiles(model, shape, tile, overlap), block)
    assert (len(plan) > 1) == (block[1] < shape[1])  # really blocked, except the one-block case


def test_blocks_own_each_voxel_once_and_align_to_chunks():
    model = small_unet(3, "same")
    tiles = plan_tiles(model, (21, 50, 33), 8, 0.25)
    blocks = plan_blocks(tiles, (5, 17, 10), chunks=(4, 8, 8))
    assert blocks.block_shape == (8, 24, 16)  # rounded up to whole chunks
    owner = np.zeros(blocks.volume_shape, np.int32)
    for block in blocks:
        owner[block.write_box] += 1
        assert all(a % c == 0 for (a, _), c in zip(block.write, (4, 8, 8), strict=True))
        # The read region holds the write region and stays inside the volume.
        for (wa, wb), (ra, rb), s in zip(block.write, block.read, blocks.volume_shape, strict=True):
            assert 0 <= ra <= wa < wb <= rb <= s
    np.testing.assert_array_equal(owner, 1)
    assert blocks.block(len(blocks) - 1).write == ((16, 21), (48, 50), (32, 33))
    with pytest.raises(IndexError):
        blocks.block(len(blocks))


def test_valid_block_reads_its_write_region_plus_the_margin():
    model = small_unet(2, "valid")
    tiles = plan_tiles(model, (4, 300, 300), 40)
    margin = tiles.axes[1].lo
    block = plan_blocks(tiles, (1, 100, 100)).block(4)  # the middle of a 3 x 3 grid
    assert block.write == ((0, 1), (100, 200), (100, 200))
    (_, _), (ya, yb), (xa, xb) = block.read
    # Windows that straddle the faces read up to one window beyond the margin, no more.
    out, step = tiles.axes[1].out_size, tiles.axes[1].starts[1]
    assert 100 - margin - step <= ya <= 100 - margin and 200 + margin <= yb <= 200 + margin + out
    assert (xa, xb) == (ya, yb)


def test_default_block_shape_is_chunk_aligned_and_bounded():
    tiles2d = plan_tiles(small_unet(2, "valid"), (500, 3000, 2900), 512)
    shape = default_block_shape(tiles2d, chunks=(16, 256, 256))
    assert shape[0] == 16  # a 2D network takes one chunk of slices per block
    assert all(s % c == 0 for s, c in zip(shape, (16, 256, 256), strict=True))
    assert np.prod(shape) <= 1 << 24
    tiles3d = plan_tiles(small_unet(3, "same"), (12, 14, 13), 16)
    assert default_block_shape(tiles3d) == (12, 14, 13)  # a small volume is one block
    assert default_block_shape(tiles3d, max_voxels=1000) == (10, 10, 10)


def test_default_blocks_split_an_axis_evenly_without_slivers():
    # Same padding, tile 96 over 256: windows at 0, 53, 107, 160, so 4 steps want 212 voxels.
    tiles = plan_tiles(small_unet(3, "same"), (64, 256, 256), 96)
    assert default_block_shape(tiles) == (64, 256, 256)  # not 212 + 44: one block per axis
    long = plan_tiles(small_unet(3, "same"), (64, 256, 1000), 96)
    shape = default_block_shape(long)
    blocks = -(-1000 // shape[2])
    assert blocks > 1 and blocks * shape[2] - 1000 < shape[2] / 4  # near-equal blocks
    assert default_block_shape(long, chunks=(64, 64, 64))[2] % 64 == 0


def test_region_outside_the_volume_is_rejected():
    model = small_unet(2, "same")
    tiles = plan_tiles(model, (1, 20, 20), 8)
    with pytest.raises(ValueError, match="outside the volume"):
        next(
            iter_tiled_predictions(
                lambda box: np.zeros((1, 1, 20, 20), np.float32), (1, 20, 20), tiles,
                ModelRunner(model, device="cpu"), region=((0, 1), (0, 21), (0, 20)),
            )
        )  # fmt: skip
