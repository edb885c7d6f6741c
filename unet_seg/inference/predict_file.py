"""One file through the model, block by block: read lazily -> blocks -> write -> instances.

Every input runs the block path (:mod:`unet_seg.inference.blocks`), so memory is bounded by a
block (:func:`~unet_seg.inference.blocks.default_block_shape`), not by the y-x plane or the
volume. Zarr and OME-Zarr inputs write zarr stores, resumably, on any engine
(:mod:`unet_seg.inference.blockrun`). TIFF, NIfTI and PNG inputs run in this process: blocks
read their input region lazily (memory-mapped TIFF and ``.nii``, compressed TIFF page by page,
``.nii.gz`` through nibabel's proxy) and write the region they own straight into the
memory-mapped output files (:mod:`unet_seg.inference.file_outputs`); an error or an interrupt
removes every partial file, and a killed run's are swept by :mod:`unet_seg.io.sweep`.

Instances take the passes of zarr inputs (:mod:`unet_seg.inference.instance_blocks`): blocks
label their components (and seeds, and keep the float16 foreground / interior maps) into
hidden scratch files, which are stitched across block faces, flooded per block with a halo
(``distance``, ``seeded``) and relabelled into the final file: memory is a block (plus its
halo) and the merge tables.
The preview is drawn from what was written, a few strided planes
(:mod:`unet_seg.inference.preview_output`).
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.inference.blockrun import (
    BlockFailures,
    BlockOptions,
    predict_blockwise,
    run_blocks,
    stitch_options,
)
from unet_seg.inference.blocks import MAX_BLOCK_VOXELS, default_block_shape, plan_blocks
from unet_seg.inference.blockwise import BlockJob, RunnerSpec, register_runner
from unet_seg.inference.engine import InProcess
from unet_seg.inference.file_outputs import FileOutput
from unet_seg.inference.inputs import model_input, open_input
from unet_seg.inference.instance_blocks import finish_instances, measured_objects, scratch_specs
from unet_seg.inference.mask import load_mask
from unet_seg.inference.object_table import write_object_table
from unet_seg.inference.options import PredictOptions
from unet_seg.inference.outputs import scratch_path
from unet_seg.inference.postprocess import label_dtype
from unet_seg.inference.preview_output import foreground_counts, write_preview
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import restrict_plan
from unet_seg.inference.tiling import TilePlan, plan_tiles
from unet_seg.io import open_volume
from unet_seg.io.files import format_suffix, is_directory_format
from unet_seg.io.slabs import SlabWriter
from unet_seg.models.protocol import SegmentationNetwork
from unet_seg.normalization import percentile_range, percentiles

log = logging.getLogger(__name__)


def _probability_dtype(wanted: str, suffix: str) -> str:
    # NIfTI has no float16; float32 keeps the values exact there.
    return "float32" if wanted == "float16" and suffix.startswith(".nii") else wanted


def file_block_shape(tiles: TilePlan, batch_size: int) -> tuple[int, int, int]:
    """Blocks for a file (no chunks to respect): a few windows per axis in plane
    (:func:`~unet_seg.inference.blocks.default_block_shape`) and, for a 2D network, as many
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


def predict_file(
    path: Path,
    targets: dict[str, Path],
    model: SegmentationNetwork,
    runner: ModelRunner,
    options: PredictOptions,
    norm: dict,
    block: BlockOptions | None = None,
    engine: Any = None,
) -> dict:
    """Predict one file into ``targets``; returns its summary entry (shape, blocks, seconds,
    voxels/s).

    ``norm``: the ``{low, high}`` percentiles to normalise with (those of training). ``block``:
    block size, foreground mask (and for zarr inputs the runner and the resolution level). Zarr
    and OME-Zarr inputs run on ``engine`` (in-process by default), files in this process.
    """
    if is_directory_format(path):
        if block is None:
            raise ValueError(f"{path}: zarr inputs need block options (BlockOptions)")
        return predict_blockwise(path, targets, model, runner, options, norm, block, engine)
    return _predict_into_files(path, targets, model, runner, options, norm, block)


def _predict_into_files(
    path: Path,
    targets: dict[str, Path],
    model: SegmentationNetwork,
    runner: ModelRunner,
    options: PredictOptions,
    norm: dict,
    block: BlockOptions | None,
) -> dict:
    start = time.perf_counter()
    volume, source, layout = open_input(path, model, options)
    if source is not volume:
        kind = volume.metadata.get("channels")
        log.warning("%s: %s image, predicted on its luminance (the model takes one channel)",
                    path, kind)  # fmt: skip
    lo, hi = percentile_range(model_input(source, layout), *percentiles(norm))
    shape = layout.volume_shape(source.shape)
    spatial = layout.spatial_shape(source.shape)
    classes = int(model.num_classes)
    tiles = plan_tiles(model, shape, options.tile_for(model, shape), options.overlap)
    size = None if block is None else block.block_size
    blocks = plan_blocks(tiles, size or file_block_shape(tiles, options.batch_size))
    spec = RunnerSpec(f"<in-process runner {id(runner)}>") if block is None else block.runner
    register_runner(spec, runner)  # the model is loaded already
    stitch = None
    if "instances" in targets:
        stitch = stitch_options(options.instances, volume, layout)
    probability_dtype = _probability_dtype(options.probability_dtype, format_suffix(path))
    engine = InProcess()  # the output files are memory maps of this process
    scratch: list[SlabWriter] = []  # never renamed: removed whatever happens
    try:
        with ExitStack() as stack:  # the outputs: renamed on success, removed on any exception

            def output(target: Path, shape: tuple, dtype: Any, keep: bool = True) -> FileOutput:
                writer = SlabWriter(target, shape, dtype, volume, layout.spatial_dims)
                (stack.enter_context if keep else scratch.append)(writer)
                return FileOutput(writer)

            def scratch_output(suffix: str, shape: tuple, dtype: Any) -> FileOutput:
                target = scratch_path(targets["instances"], suffix, ".tif")
                return output(target, shape, dtype, keep=False)

            outputs: dict[str, Any] = {}
            if "labels" in targets or "preview" in targets:  # the preview reads the labels
                keep = "labels" in targets
                target = targets.get("labels") or scratch_path(targets["preview"], "labels", ".tif")
                outputs["labels"] = output(target, spatial, label_dtype(classes), keep)
            if "probabilities" in targets:
                shape_k = (classes, *spatial)
                outputs["probabilities"] = output(targets["probabilities"], shape_k,
                                                  probability_dtype)  # fmt: skip
            if stitch is not None:
                for name, suffix, part_shape, dtype in scratch_specs(stitch, spatial):
                    outputs[name] = scratch_output(suffix, part_shape, dtype)
            mask = load_mask(None if block is None else block.mask, volume, layout, shape)
            job = BlockJob(source, layout, lo, hi, blocks, outputs, spec, classes,
                           probability_dtype, options.batch_size, options.blend, mask, stitch,
                           progress=options.progress)  # fmt: skip
            counts = run_blocks(path, job, engine, set(), options.progress)
            objects = measured = None
            if stitch is not None:
                final = lambda target, dtype, key: output(target, spatial, dtype)  # noqa: E731
                image = source if "objects" in targets else None
                written, objects, failed = finish_instances(
                    job, targets["instances"], engine, options.instances.min_size, final, {},
                    options.progress, scratch_output, image,
                )  # fmt: skip
                if failed:
                    raise BlockFailures(path, failed, {**counts, "failed": len(failed)})
                if image is not None:
                    measured = measured_objects(written, len(spatial))
        if measured is not None:  # after the instances are in place under their name
            write_object_table(targets["objects"], measured, volume.spacing[-len(spatial) :])
        if "preview" in targets:
            foreground = foreground_counts(outputs["labels"].infos.values(), shape[0])
            _preview(targets, foreground, layout, source, outputs["labels"], options, path.name)
    finally:
        for writer in scratch:
            writer.abort()
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


def _preview(
    targets: dict[str, Path], foreground: np.ndarray, layout: Any, source: Any,
    labels: FileOutput, options: PredictOptions, title: str,
) -> None:  # fmt: skip
    """The preview from the written outputs (the labels' scratch file when they were not
    asked for, which is still open)."""
    with ExitStack() as stack:
        if "labels" in targets:
            written = stack.enter_context(open_volume(targets["labels"]))
        else:
            written = labels.writer.array
        ids = None
        if "instances" in targets:
            ids = stack.enter_context(open_volume(targets["instances"]))
        write_preview(targets["preview"], foreground, layout, source, written, ids,
                      options.preview_slices, title)  # fmt: skip
