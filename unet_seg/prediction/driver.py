"""One input through the model, block by block: open -> blocks -> outputs -> instances -> commit.

Every input runs these stages in this order, whatever its format and engine; only the output
factory differs (:mod:`unet_seg.prediction.sinks`):

- TIFF, NIfTI and PNG inputs run in this process: blocks read their input region lazily
  (memory-mapped TIFF and ``.nii``, compressed TIFF page by page, ``.nii.gz`` through nibabel's
  proxy) and write the region they own straight into memory-mapped output files; an error or
  an interrupt removes every partial file, and a killed run's are swept by
  :mod:`unet_seg.io.sweep`.
- Zarr and OME-Zarr inputs write zarr stores on any engine (in-process or Dask), resumably:
  a block is recorded after its chunks are written, so a rerun computes only the blocks not
  recorded and gives the same output. A block that fails (after Dask's retries) is reported by
  index and position, the others finish, and the outputs stay partial for a rerun.

Memory is bounded by a block (:func:`~unet_seg.blockwise.plan.default_block_shape`), not by the
plane or the volume. Instances take the block-wise passes
(:mod:`unet_seg.blockwise.instance_passes`): memory is a block (plus its halo) and the merge
tables. The preview is drawn from what was written, a few strided planes
(:mod:`unet_seg.prediction.preview`).
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.blockwise.engine import InProcess
from unet_seg.blockwise.instance_passes import finish_instances, measured_objects
from unet_seg.blockwise.mask import load_mask
from unet_seg.blockwise.plan import MAX_BLOCK_VOXELS, default_block_shape, plan_blocks
from unet_seg.blockwise.run import (
    BlockFailures,
    BlockOptions,
    run_blocks,
    stitch_options,
    tiling_chunks,
)
from unet_seg.blockwise.task import BlockJob, RunnerSpec, register_runner
from unet_seg.inference.inputs import input_layout, model_input, open_input
from unet_seg.inference.options import PredictOptions
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import restrict_plan
from unet_seg.inference.tiling import TilePlan, plan_tiles
from unet_seg.instances.object_table import write_object_table
from unet_seg.io.channel_files import InputFiles, describe, first_file, is_store, naming_path
from unet_seg.io.limits import check_voxels
from unet_seg.io.zarr.store import ZarrVolume
from unet_seg.models.protocol import SegmentationNetwork
from unet_seg.normalization import intensity_range, percentile_range
from unet_seg.prediction.preview import foreground_counts, write_preview
from unet_seg.prediction.provenance import checkpoint_id
from unet_seg.prediction.sinks import FileSinks, ZarrSinks

log = logging.getLogger(__name__)


def file_block_shape(tiles: TilePlan, batch_size: int) -> tuple[int, int, int]:
    """Blocks for a file (no chunks to respect): a few windows per axis in plane
    (:func:`~unet_seg.blockwise.plan.default_block_shape`) and, for a 2D network, as many
    slices as fill one batch of windows: the memory of a slab of the streamed prediction, with
    a plane of at most a few windows whatever the file's plane."""
    depth, height, width = default_block_shape(tiles, (1, 1, 1))
    if tiles.axes[0].in_size > 1:
        return (depth, height, width)
    plane = restrict_plan(tiles, ((0, 1), (0, height), (0, width)))
    per_slice = len(plane.axes[1].starts) * len(plane.axes[2].starts)
    slices = max(1, min(tiles.axes[0].size, -(-batch_size // per_slice)))
    while slices > 1 and slices * height * width > MAX_BLOCK_VOXELS:
        slices -= 1
    return (slices, height, width)


def _open_source(
    path: InputFiles, model: SegmentationNetwork, options: PredictOptions,
    block: BlockOptions | None, store: bool,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """``(volume, source, layout)`` of the input (see
    :func:`~unet_seg.inference.inputs.open_input`); a zarr ``store`` at ``block.input_level``."""
    if not store:
        volume, source, layout = open_input(path, model, options)
        if source is not volume:
            kind = volume.metadata.get("channels")
            log.warning("%s: %s image, predicted on its luminance (the model takes one channel)",
                        describe(path), kind)  # fmt: skip
        return volume, source, layout
    if block is None:
        raise ValueError(f"{path}: zarr inputs need block options (BlockOptions)")
    volume = ZarrVolume(path, block.input_level)
    check_voxels(path, volume.shape, options.max_voxels)  # a header can claim any size
    layout = input_layout(path, volume.shape, model, options.slice_axis,
                          axes=volume.metadata.get("axes"), channel=options.channel)  # fmt: skip
    return volume, volume, layout


def predict_file(
    path: InputFiles,
    targets: dict[str, Path],
    model: SegmentationNetwork,
    runner: ModelRunner,
    options: PredictOptions,
    norm: dict,
    block: BlockOptions | None = None,
    engine: Any = None,
) -> dict:
    """Predict one file into ``targets``; returns its summary entry (shape, tiles, blocks
    ``{total, computed, skipped, failed}``, block shape, instances, seconds, voxels/s).

    ``path``: a file, or the channel files of one case (:mod:`unet_seg.io.channel_files`).
    ``norm``: the normalisation of training (``{low, high}`` percentiles or a fixed window).
    ``block``: block size, foreground mask (and for zarr inputs, which need it, the runner and the
    resolution level). Zarr and OME-Zarr inputs run on ``engine`` (in-process by default),
    files in this process.

    Raises:
        BlockFailures: after all other blocks finished, when some block failed.
    """
    start = time.perf_counter()
    store = is_store(path)
    volume, source, layout = _open_source(path, model, options, block, store)
    name = describe(path)  # what messages call the input
    lo, hi, clip = intensity_range(
        norm, lambda low, high: percentile_range(model_input(source, layout), low, high)
    )
    value_range = [lo, hi] if clip is None else [lo, hi, *clip]  # a resumed run's must match
    shape = layout.volume_shape(source.shape)
    spatial = tuple(layout.spatial_shape(source.shape))
    classes = int(model.num_classes)
    tiles = plan_tiles(model, shape, options.tile_for(model, shape), options.overlap)
    size = None if block is None else block.block_size
    if store:
        blocks = plan_blocks(tiles, size, tiling_chunks(volume.chunks[-len(spatial) :], layout))
        spec = block.runner
        key = {
            "input": str(path.resolve()), "level": volume.level, "shape": list(volume.shape),
            "block_shape": list(blocks.block_shape), "tiles": repr(tiles), "range": value_range,
            "checkpoint": checkpoint_id(spec.checkpoint), "tta": spec.tta,
            "blend": options.blend, "precision": spec.precision, "runtime": spec.runtime,
        }  # fmt: skip
        sinks: FileSinks | ZarrSinks = ZarrSinks(path, volume, spatial, key)
    else:
        blocks = plan_blocks(tiles, size or file_block_shape(tiles, options.batch_size))
        spec = RunnerSpec(f"<in-process runner {id(runner)}>") if block is None else block.runner
        key = {}
        sinks = FileSinks(first_file(path), volume, layout.spatial_dims)
    engine = InProcess() if sinks.in_process_only or engine is None else engine
    register_runner(spec, runner)  # in-process: the model is loaded already
    stitch = stitch_options(options.instances, volume, layout) if "instances" in targets else None
    objects = measured = foreground = None
    try:
        with sinks:
            outputs = sinks.create(targets, spatial, classes, options, stitch)
            done = sinks.open(outputs)
            mask = load_mask(None if block is None else block.mask, volume, layout, shape)
            job = BlockJob(source, layout, lo, hi, blocks, outputs, spec, classes,
                           sinks.probability_dtype(options.probability_dtype),
                           options.batch_size, options.blend, mask,
                           stitch, progress=options.progress, clip=clip)  # fmt: skip
            counts = run_blocks(first_file(path), job, engine, done, options.progress)
            if stitch is not None:
                image = source if "objects" in targets else None
                final, objects, failed = finish_instances(
                    job, targets["instances"], engine, options.instances.min_size,
                    sinks.instance_store(spatial), key, options.progress,
                    sinks.scratch_maker(targets), image,
                )  # fmt: skip
                if failed:
                    raise BlockFailures(name, failed, {**counts, "failed": len(failed)})
                if image is not None:  # the records go at commit
                    measured = measured_objects(final, len(spatial))
                outputs["instances"] = final
            if "preview" in targets and "labels" in outputs:  # the records go at commit
                records = outputs["labels"].records_of().values()
                foreground = foreground_counts(records, shape[0])
            sinks.commit(outputs)
        if measured is not None:  # after the instances are in place under their name
            write_object_table(targets["objects"], measured, volume.spacing[-len(spatial) :])
        if foreground is not None:
            with ExitStack() as stack:
                labels = sinks.read_back(stack, targets, outputs, "labels")
                ids = None
                if "instances" in targets:
                    ids = sinks.read_back(stack, targets, outputs, "instances")
                write_preview(targets["preview"], foreground, layout, source, labels, ids,
                              options.preview_slices, naming_path(path).name)  # fmt: skip
        elif "preview" in targets:
            log.info("%s: no preview without the labels output", name)
    finally:
        sinks.close()
    seconds = time.perf_counter() - start
    return {
        "shape": list(volume.shape),
        "tiles": tiles.num_windows,
        "blocks": counts,
        "block_shape": list(blocks.block_shape),
        **({"instances": objects} if objects is not None else {}),
        "seconds": round(seconds, 3),
        "voxels_per_second": round(float(np.prod(spatial)) / seconds, 1) if seconds else None,
    }
