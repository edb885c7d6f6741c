"""The block-wise instance passes after the prediction: stitch, (flood,) relabel block by block.

Runs after every block has written its first-pass scratch stores (:func:`~unet_seg.inference.
stitch.local_outputs` writes them, :func:`scratch_outputs` makes them). ``cc``: the merge table
of the local components, then the relabel pass. ``distance`` / ``seeded``: the components (and
seeds) are stitched, every block floods its region with a halo (:mod:`unet_seg.blockwise.flood`,
recorded per block in one more scratch store), the keys are numbered, and the relabel pass
writes the result. Each pass is a set of block tasks on the same engine, recorded per block like
the prediction, so an interrupted run resumes in the pass it stopped in and redoes nothing else.
Stitching holds one face at a time and the tables; a flood task one block's halo region.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unet_seg.blockwise.flood import FloodJob, flood_block, key_table
from unet_seg.blockwise.plan import BlockPlan
from unet_seg.blockwise.task import BlockJob, block_info, file_box
from unet_seg.inference.inputs import Layout
from unet_seg.instances.object_table import Measurements, combine, measure
from unet_seg.instances.stitch import (
    MergeTable,
    StitchOptions,
    face_boxes,
    merge_table,
    neighbour_faces,
)
from unet_seg.io.zarr.output import ZarrOutput

SCRATCH_PREFIX = "instances_"  # job.outputs entries that are scratch: removed after the commit
ScratchMaker = Callable[[str, tuple, Any], Any]  # (suffix, shape, dtype) -> an output store


def scratch_specs(options: StitchOptions, spatial: tuple[int, ...]) -> list[tuple]:
    """The first pass's scratch outputs as ``(name, suffix, shape, dtype)``: local component
    ids, and for ``seeded`` local seed ids and the float16 foreground / interior maps
    ``(2, *spatial)``."""
    specs = [("instances_local", "local", spatial, np.uint32)]
    if options.seeded:
        specs.append(("instances_seeds", "seeds", spatial, np.uint32))
        specs.append(("instances_maps", "maps", (2, *spatial), np.float16))
    return specs


def scratch_outputs(
    target: Path, options: StitchOptions, spatial: tuple[int, ...], chunks: tuple[int, ...],
    fingerprint: dict, zarr_format: int,
) -> dict[str, ZarrOutput]:  # fmt: skip
    """The hidden first-pass stores (:func:`scratch_specs`) beside the zarr instance output
    ``target``."""
    key = {**fingerprint, "instances": repr(options)}
    outputs = {}
    for name, suffix, shape, dtype in scratch_specs(options, spatial):
        path = target.with_name(f"{target.name}.{suffix}")
        chunk = chunks if len(shape) == len(spatial) else (1, *chunks)
        outputs[name] = ZarrOutput(path, shape, dtype, chunk, None, True, key, zarr_format)
    return outputs


def _zarr_scratch(local: ZarrOutput) -> ScratchMaker:
    """Makes further scratch stores like the zarr store ``local``."""

    def make(suffix: str, shape: tuple[int, ...], dtype: Any) -> ZarrOutput:
        path = local.path.with_name(local.path.name.removesuffix(".local") + f".{suffix}")
        return ZarrOutput(path, shape, dtype, local.chunks, None, True,
                          {**local.fingerprint, "pass": suffix}, local.zarr_format)  # fmt: skip

    return make


@dataclass
class RelabelJob:
    """The relabel pass; with ``image`` (the input the network saw, channels first if
    ``layout.channels``) every block also measures its objects (:mod:`~unet_seg.inference.
    object_table`) into its record."""

    layout: Layout
    blocks: BlockPlan
    local: ZarrOutput
    final: ZarrOutput
    table: MergeTable
    image: Any = None


def read_image(image: Any, layout: Layout, box: tuple[slice, ...]) -> np.ndarray:
    """The ``(C, *box)`` input voxels of the file box ``box`` (C = 1 without a channel axis)."""
    if layout.channels:
        return np.asarray(image[(slice(None), *box)])
    return np.asarray(image[tuple(box)])[None]


def relabel_block(job: RelabelJob, index: int) -> dict:
    """Write block ``index``'s global instance ids and record it (with its objects'
    measurements when the job has an image)."""
    start = time.perf_counter()
    block = job.blocks.block(index)
    box = file_box(job.layout, block.write_box)
    ids = job.table.relabel(index, job.local.read(box))
    job.final.write(box, ids)
    info = block_info(block, "computed", time.perf_counter() - start)
    if job.image is not None:
        origin = [s.start for s in box]
        info["objects"] = measure(ids, origin, read_image(job.image, job.layout, box)).to_record()
    job.final.record(index, info)
    return info


def measured_objects(final: Any, ndim: int) -> Measurements:
    """The whole objects' measurements from the relabel records of ``final`` (read before the
    store is committed, which removes its records)."""
    records = [r["objects"] for r in final.records_of().values() if "objects" in r]
    parts = [Measurements.from_record(r, ndim) for r in records]
    channels = parts[0].intensity_sums.shape[0] if parts else 0
    return combine(parts, ndim, channels)


def _faces(blocks: BlockPlan, layout: Layout, local: ZarrOutput) -> Iterator[tuple]:
    for a, b, axis in neighbour_faces(blocks):
        box_a, box_b = face_boxes(blocks, a, b, axis)
        yield a, b, local.read(file_box(layout, box_a)), local.read(file_box(layout, box_b))


def _stitched(job: BlockJob, name: str, record: str, min_size: int) -> MergeTable:
    """The merge table of the local ids in ``job.outputs[name]`` (summaries under ``record``)."""
    store = job.outputs[name]
    summaries = {i: r[record] for i, r in store.records_of().items()}
    return merge_table(job.blocks, summaries, _faces(job.blocks, job.layout, store), min_size)


def _run_blocks(engine: Any, fn: Callable, job: Any, todo: list[int], blocks: BlockPlan,
                desc: str, progress: bool | None) -> list:  # fmt: skip
    """Run ``fn(job, index)`` for ``todo`` on ``engine``; the failed ``(index, position,
    error)``."""
    failed = []
    bar = tqdm(total=len(blocks), initial=len(blocks) - len(todo), desc=desc, unit="block",
               disable=None if progress is None else not progress)  # fmt: skip
    with bar:
        for index, result in engine.map(fn, job, todo):
            if isinstance(result, BaseException):
                position = blocks.block(index).position
                failed.append((index, position, f"{type(result).__name__}: {result}"))
            bar.update()
    return failed


def flood_pass(
    job: BlockJob, components: MergeTable, engine: Any, progress: bool | None = None,
    scratch: ScratchMaker | None = None,
) -> tuple[Any, MergeTable, list]:  # fmt: skip
    """Flood the blocks not yet recorded; returns the store of their keyed local ids (added to
    ``job.outputs`` as scratch, made by ``scratch``: by default a zarr store beside the local
    ids), the table of the keys and the failed blocks."""
    local, options = job.outputs["instances_local"], job.instances
    scratch = scratch or _zarr_scratch(local)
    flooded = scratch("flooded", local.shape, np.uint32)
    job.outputs["instances_flooded"] = flooded
    flood = FloodJob(job.layout, job.blocks, options, local, components, flooded)
    if options.seeded:
        flood.seeds = job.outputs["instances_seeds"]
        flood.seed_table = _stitched(job, "instances_seeds", "seeds", 0)
        flood.maps = job.outputs["instances_maps"]
    done = flooded.open()
    todo = [i for i in range(len(job.blocks)) if i not in done]
    failed = _run_blocks(engine, flood_block, flood, todo, job.blocks, "flood", progress)
    if failed:
        return flooded, MergeTable(np.zeros(1, np.int64), np.zeros(1, np.int64), 0), failed
    floods = {i: r["flood"] for i, r in flooded.records_of().items()}
    table = key_table(floods, len(job.blocks), options.min_size if options.seeded else 0)
    return flooded, table, []


def finish_instances(
    job: BlockJob, target: Path, engine: Any, min_size: int, store: Any, key: dict,
    progress: bool | None = None, scratch: ScratchMaker | None = None, image: Any = None,
) -> tuple[Any, int, list]:  # fmt: skip
    """Stitch (and flood) and relabel into the instance store at ``target`` (not committed).

    ``store(path, dtype, key)`` makes a label-image :class:`ZarrOutput` like the labels output;
    ``progress``: bars for the flood and relabel passes (None: on a terminal); ``scratch``:
    makes the flood pass's scratch output (default: a zarr store); ``image``: the input, for
    the objects' measurements in the relabel records (:func:`measured_objects`), or None.
    Returns the store (None if a flood block failed), the number of objects and the failed
    blocks ``(index, position, error)``. Scratch stores it adds join ``job.outputs`` under
    :data:`SCRATCH_PREFIX` names, for the caller to remove after the commit.
    """
    options = job.instances
    # seeded drops small objects after the flood; the others drop small components first.
    components = _stitched(job, "instances_local", "instances", 0 if options.seeded else min_size)
    source, table = job.outputs["instances_local"], components
    if options.method != "cc":
        source, table, failed = flood_pass(job, components, engine, progress, scratch)
        if failed:
            return None, 0, failed
    dtype = np.uint16 if table.count < 2**16 else np.uint32
    final = store(
        target,
        dtype,
        {**key, "objects": table.count, "min_size": min_size, "instances": repr(options),
         "measured": image is not None},
    )  # fmt: skip
    done = final.open()
    relabel = RelabelJob(job.layout, job.blocks, source, final, table, image)
    todo = [i for i in range(len(job.blocks)) if i not in done]
    failed = _run_blocks(engine, relabel_block, relabel, todo, job.blocks, "instances", progress)
    return final, table.count, failed
