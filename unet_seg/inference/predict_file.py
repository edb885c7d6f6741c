"""One file through the model: read lazily -> tiles -> model -> blend -> post-process -> write.

TIFF, NIfTI and PNG inputs stream slabs of whole planes through :class:`SlabWriter`; zarr and
OME-Zarr inputs run block by block (:mod:`unet_seg.inference.blockrun`). Instances and the
preview are made from what was written.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.inference.blockrun import BlockOptions, predict_blockwise
from unet_seg.inference.inputs import Layout, LuminanceView, input_layout, region_reader
from unet_seg.inference.instance_methods import InstanceOptions, from_class_map, seeded_from
from unet_seg.inference.options import PredictOptions
from unet_seg.inference.outputs import scratch_path
from unet_seg.inference.postprocess import (
    label_dtype,
    probabilities_to_labels,
    store_probabilities,
)
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.seeded import foreground_and_interior
from unet_seg.inference.stream import iter_tiled_predictions
from unet_seg.inference.tiling import plan_tiles
from unet_seg.io import Volume, open_volume, read_volume, write_volume
from unet_seg.io.files import format_suffix, is_directory_format
from unet_seg.io.slabs import SlabWriter
from unet_seg.models.protocol import SegmentationNetwork
from unet_seg.normalization import percentile_range, percentiles
from unet_seg.viz.previews import PreviewCollector, plane_reader

log = logging.getLogger(__name__)


def _probability_dtype(wanted: str, suffix: str) -> str:
    # NIfTI has no float16; float32 keeps the values exact there.
    return "float32" if wanted == "float16" and suffix.startswith(".nii") else wanted


def open_input(
    path: Path, model: SegmentationNetwork, options: PredictOptions
) -> tuple[Any, Any, Layout]:
    """``(volume, source, layout)``: the opened file, what the model reads of it (the volume, or
    its luminance for a colour image and a one-channel model) and how it reads it."""
    volume = open_volume(path, max_voxels=options.max_voxels)
    kind = volume.metadata.get("channels")
    layout = input_layout(path, volume.shape, model, options.slice_axis, kind)
    if layout.luminance is None:
        return volume, volume, layout
    return volume, LuminanceView(volume, kind), replace(layout, channels=False, luminance=None)


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
    """Predict one file into ``targets``; returns its summary entry (shape, seconds, voxels/s).

    ``norm``: the ``{low, high}`` percentiles to normalise with (those of training). Zarr and
    OME-Zarr inputs run block by block (:mod:`unet_seg.inference.blockrun`) on ``engine``
    (in-process by default) with ``block`` options, and their entry counts the blocks.
    """
    if is_directory_format(path):
        if block is None:
            raise ValueError(f"{path}: zarr inputs need block options (BlockOptions)")
        return predict_blockwise(path, targets, model, runner, options, norm, block, engine)
    start = time.perf_counter()
    volume, source, layout = open_input(path, model, options)
    if source is not volume:
        kind = volume.metadata.get("channels")
        log.warning("%s: %s image, predicted on its luminance (the model takes one channel)",
                    path, kind)  # fmt: skip
    lo, hi = percentile_range(source, *percentiles(norm))
    shape = layout.volume_shape(source.shape)
    plan = plan_tiles(model, shape, options.tile_for(model.spatial_dims), options.overlap)
    spatial = layout.spatial_shape(source.shape)
    classes = int(model.num_classes)
    reader = region_reader(source, layout, lo, hi)
    slices = iter_tiled_predictions(
        reader, shape, plan, runner, options.batch_size, options.blend, options.progress
    )
    preview = PreviewCollector(shape, options.preview_slices) if "preview" in targets else None
    instances = options.instances
    # Instances come from the whole label map, so it is written even if not asked for; the
    # seeded watershed also needs the foreground and interior probabilities: a scratch file too.
    label_target = targets.get("labels") or targets.get("instances")
    label_path = label_target if "labels" in targets else None
    if label_path is None and "instances" in targets:
        label_path = scratch_path(label_target)
    seed_path = None
    if "instances" in targets and instances.needs_probabilities:
        seed_path = scratch_path(targets["instances"], "seeds", ".tif")
    with ExitStack() as stack:
        writers = {}
        if label_path is not None:
            writers["labels"] = stack.enter_context(
                SlabWriter(label_path, spatial, label_dtype(classes), volume, layout.spatial_dims)
            )
        if seed_path is not None:  # float16: thresholds need no more, and it halves the file
            writers["seeds"] = stack.enter_context(
                SlabWriter(seed_path, (2, *spatial), "float16", volume, layout.spatial_dims)
            )
        if "probabilities" in targets:
            dtype = _probability_dtype(options.probability_dtype, format_suffix(path))
            writers["probabilities"] = stack.enter_context(
                SlabWriter(targets["probabilities"], (classes, *spatial), dtype, volume,
                           layout.spatial_dims)
            )  # fmt: skip
        for z0, probs in slices:
            labels = probabilities_to_labels(probs)
            if "labels" in writers:
                writers["labels"].write(z0, labels, layout.slice_axis)
            if preview is not None:
                preview.add(z0, labels)  # keeps only the few slices it will show
            if "probabilities" in writers:
                dtype = writers["probabilities"].dtype.name
                stored = store_probabilities(probs, dtype) if dtype != "float32" else probs
                writers["probabilities"].write(z0, stored, layout.slice_axis)
            if "seeds" in writers:
                maps = foreground_and_interior(
                    probs, instances.background_class, instances.interior_class
                )
                writers["seeds"].write(z0, np.stack(maps).astype(np.float16), layout.slice_axis)
    if "instances" in targets:
        try:
            _write_instances(label_path, seed_path, targets["instances"], volume, instances)
        finally:
            if "labels" not in targets:
                label_path.unlink(missing_ok=True)
            if seed_path is not None:
                seed_path.unlink(missing_ok=True)
    if preview is not None:
        plane = (slice(0, shape[1]), slice(0, shape[2]))
        read_image = lambda z: reader((slice(z, z + 1), *plane))[0, 0]  # noqa: E731  (channel 0)
        _write_preview(preview, targets, read_image, layout.slice_axis, path.name)
    seconds = time.perf_counter() - start
    voxels = int(np.prod(spatial))
    return {
        "shape": list(volume.shape),
        "tiles": plan.num_windows,
        "seconds": round(seconds, 3),
        "voxels_per_second": round(voxels / seconds, 1) if seconds > 0 else None,
    }


def _write_instances(
    label_path: Path, seed_path: Path | None, target: Path, volume: Any, options: InstanceOptions
) -> None:
    """Instances over the whole volume (in 3D for a stack predicted slice by slice): from the
    label map, or for ``seeded`` from the ``(2, *spatial)`` foreground and interior maps at
    ``seed_path``. This step holds the whole map in memory, unlike the tiled prediction."""
    labels = read_volume(label_path)
    if options.needs_probabilities:
        maps = read_volume(seed_path).array
        inst = seeded_from(maps[0], maps[1], options)
    else:
        spacing = volume.spacing[-labels.array.ndim :]
        inst = from_class_map(labels.array, options, spacing)
    dtype = np.uint16 if inst.max() < 2**16 else np.uint32
    write_volume(
        target,
        Volume(inst.astype(dtype), labels.affine, labels.spacing, labels.metadata),
    )


def _write_preview(
    preview: PreviewCollector, targets: dict[str, Path], read_image: Any, axis: int, title: str
) -> None:
    """``<stem>_preview.png``, with the instances when they were written. A preview that cannot
    be drawn is logged; the file's outputs stand."""
    try:
        read_instances = None
        if "instances" in targets:
            read_instances = plane_reader(open_volume(targets["instances"]), axis)
        preview.write(targets["preview"], read_image, read_instances, title)
    except Exception as err:  # a picture is not worth failing the prediction for
        log.warning("%s: no preview: %s", targets["preview"], err)
