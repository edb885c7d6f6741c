"""Block-wise ``seeded`` and ``distance`` instances (first pass, stitch, flood with a halo, key
table, relabel) equal the whole-volume methods exactly when the halo covers the objects."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from unet_seg.blockwise import instance_passes
from unet_seg.blockwise.engine import InProcess
from unet_seg.blockwise.flood import halo_region, key_table
from unet_seg.blockwise.instance_passes import finish_instances, scratch_outputs
from unet_seg.blockwise.plan import plan_blocks
from unet_seg.errors import UsageError
from unet_seg.inference.inputs import Layout
from unet_seg.inference.tiling import plan_tiles
from unet_seg.instances.methods import InstanceOptions, from_class_map, seeded_from
from unet_seg.instances.stitch import StitchOptions, local_outputs, stitch_options_of
from unet_seg.io.zarr.output import ZarrOutput
from unet_seg.models import UNet

HALO = 16  # the blob pairs are 14 voxels apart, each pair under 12 across


class MemoryOutput(ZarrOutput):
    """A :class:`ZarrOutput` held in memory: the passes' logic without zarr's I/O cost
    (``tests/prediction/test_predict_zarr_instances.py`` runs them on disk)."""

    def open(self) -> set[int]:
        self.__dict__.setdefault("_open_array", np.zeros(self.shape, self.dtype))
        self.__dict__.setdefault("_records", {})
        return set(self._records)

    def record(self, index: int, info: dict) -> None:
        self._records[index] = json.loads(json.dumps(info))

    def records_of(self) -> dict[int, dict]:
        return dict(self._records)


@pytest.fixture(autouse=True)
def _in_memory(monkeypatch):
    monkeypatch.setattr(instance_passes, "ZarrOutput", MemoryOutput)


def blocked(tmp_path, options: StitchOptions, labels, maps, block_shape):
    """``(Z, Y, X)`` instances through the block-wise passes (first pass, stitch, flood, relabel)
    like predict's, on in-memory stores."""
    shape = labels.shape
    model = UNet(3, 1, 2, features=(4, 8), padding="same", dropout=0.0)
    blocks = plan_blocks(plan_tiles(model, shape, 8), block_shape)
    target = tmp_path / "out_instances.zarr"
    outputs = scratch_outputs(target, options, shape, block_shape, {"test": 1}, 3)
    for output in outputs.values():
        output.open()
    for block in blocks:
        box = block.write_box
        block_maps = None if maps is None else maps[(slice(None), *box)]
        arrays, summaries = local_outputs(labels[box], block_maps, options)
        for name, data in arrays.items():
            outputs[name].write(box, data)
        for output in outputs.values():
            output.record(block.index, summaries)
    job = SimpleNamespace(outputs=outputs, blocks=blocks, layout=Layout(False, 3),
                          instances=options)  # fmt: skip

    def store(path, dtype, key):
        return MemoryOutput(path, shape, dtype, block_shape, None, True, key, 3)

    final, count, failed = finish_instances(job, target, InProcess(), options.min_size, store, {})
    assert not failed
    out = final.read(tuple(slice(0, s) for s in shape))
    assert count == out.max()
    return out


def touching_blobs(rng, shape, radius, pairs_every):
    """Pairs of touching balls (centres ``radius`` apart) on a grid ``pairs_every`` apart, at
    random offsets and orientations: ``(foreground, interior)`` float16 maps ``(*shape)``."""
    ndim = len(shape)
    grid = np.indices(shape).astype(np.float32)
    depth = np.full(shape, np.inf, np.float32)  # distance to the nearest centre, in radii
    starts = [np.arange(3, s - pairs_every // 2, pairs_every) for s in shape]
    origins = np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, ndim)
    for origin in origins:
        first = origin + rng.integers(0, pairs_every // 3, ndim)
        step = rng.normal(size=ndim)
        second = first + radius * 1.1 * step / np.linalg.norm(step)
        r = radius * rng.uniform(0.7, 1.0)
        for centre in (first, second):
            d = np.sqrt(sum((grid[i] - centre[i]) ** 2 for i in range(ndim))) / r
            depth = np.minimum(depth, d)
    noise = rng.normal(0, 0.02, shape)
    foreground = np.clip(1.6 - depth + noise, 0, 1)
    interior = np.clip(1.0 - depth + noise, 0, 1)
    return foreground.astype(np.float16), interior.astype(np.float16)


@pytest.mark.parametrize(
    "shape,block_shape",
    [((1, 70, 66), (1, 17, 13)), ((22, 40, 37), (7, 11, 9))],
    ids=["2d", "3d"],
)
def test_seeded_blocks_equal_the_whole_volume(tmp_path, rng, shape, block_shape):
    spatial = shape[1:] if shape[0] == 1 else shape
    foreground, interior = touching_blobs(rng, spatial, radius=4, pairs_every=14)
    foreground[..., 2:5, -4:-1] = 0.9  # a faint object: foreground without a seed
    instances = InstanceOptions(method="seeded", min_size=6, seed_threshold=0.45)
    expected = seeded_from(foreground, interior, instances)
    options = stitch_options_of(InstanceOptions(**{**vars(instances), "halo": HALO}), None)
    maps = np.stack([foreground, interior]).reshape(2, *shape)
    out = blocked(tmp_path, options, np.zeros(shape, np.uint8), maps, block_shape)
    assert expected.max() > 8
    np.testing.assert_array_equal(out.reshape(spatial), expected)


@pytest.mark.parametrize(
    "shape,block_shape,spacing",
    [((1, 70, 66), (1, 17, 13), None), ((22, 40, 37), (7, 11, 9), None),
     ((22, 40, 37), (7, 11, 9), (1.5, 1.0, 1.0))],
    ids=["2d", "3d", "3d-anisotropic"],
)  # fmt: skip
def test_distance_blocks_equal_the_whole_volume(tmp_path, rng, shape, block_shape, spacing):
    spatial = shape[1:] if shape[0] == 1 else shape
    foreground, _ = touching_blobs(rng, spatial, radius=4, pairs_every=14)
    labels = (foreground > 0.5).astype(np.uint8)
    instances = InstanceOptions(method="distance", min_distance=2, min_size=5, halo=HALO)
    expected = from_class_map(labels, instances, spacing)
    options = stitch_options_of(instances, spacing)
    out = blocked(tmp_path, options, labels.reshape(shape), None, block_shape)
    assert expected.max() > 8
    assert expected.max() > from_class_map(labels, InstanceOptions(method="cc")).max()  # split
    np.testing.assert_array_equal(out.reshape(spatial), expected)


def test_an_object_wider_than_the_halo_keeps_one_id_across_blocks(tmp_path):
    foreground = np.zeros((1, 12, 90), np.float16)
    interior = np.zeros_like(foreground)
    foreground[0, 2:10, 3:87] = 0.9
    interior[0, 4:8, 5:85] = 0.8  # one seed, 80 voxels long: far beyond a halo of 6
    options = StitchOptions(method="seeded", halo=6)
    maps = np.stack([foreground, interior])
    out = blocked(tmp_path, options, np.zeros(foreground.shape, np.uint8), maps, (1, 6, 10))
    expected = seeded_from(foreground[0], interior[0], InstanceOptions(method="seeded"))
    np.testing.assert_array_equal(out[0], expected)
    assert out.max() == 1


def test_key_table_orders_seeds_before_seedless_components_and_drops_small_ones():
    floods = {0: {"keys": [5, 2, 1 << 62 | 1], "sizes": [3, 1, 4]},
              1: {"keys": [2, 9], "sizes": [4, 1]}}  # fmt: skip
    table = key_table(floods, 2, min_size=2)
    # keys 2 (5 voxels), 5 (3), component 1 (4) are kept; 9 (1 voxel) is dropped
    np.testing.assert_array_equal(table.relabel(0, np.array([0, 1, 2, 3])), [0, 2, 1, 3])
    np.testing.assert_array_equal(table.relabel(1, np.array([0, 1, 2])), [0, 1, 0])
    assert table.count == 3


def test_halo_region_is_clipped_at_the_volume_and_scaled_by_spacing():
    assert halo_region(((0, 4), (8, 16), (5, 9)), (2, 3, 3), (6, 20, 10)) == (
        (0, 6), (5, 19), (2, 10),
    )  # fmt: skip
    options = StitchOptions(spacing=(2.0, 0.5, 0.5), halo=8)
    assert options.halo_voxels() == (2, 8, 8)
    assert stitch_options_of(InstanceOptions(min_distance=10), None).halo == 40  # automatic
    with pytest.raises(UsageError, match=r"instances\.halo"):
        InstanceOptions(halo=-1)
