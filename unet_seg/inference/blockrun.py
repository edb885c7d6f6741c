"""Block-wise prediction of one chunked (zarr / OME-Zarr) file, in-process or on Dask.

``input -> block plan -> engine.map(run_block) -> records -> pyramid + metadata -> rename``.
Outputs go to hidden ``.<name>.partial`` stores; a block is recorded after its chunks are
written, so a rerun after any interruption computes only the blocks not recorded and gives the
same output. A block that fails (after Dask's retries) is reported by index and position, the
others finish, and the file is reported as failed with its outputs left partial for a rerun.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unet_seg.config import whole
from unet_seg.errors import OutputWriteError
from unet_seg.inference.blocks import plan_blocks
from unet_seg.inference.blockwise import BlockJob, RunnerSpec, register_runner, run_block
from unet_seg.inference.engine import InProcess
from unet_seg.inference.inputs import input_layout, model_input
from unet_seg.inference.instance_blocks import (
    SCRATCH_PREFIX,
    finish_instances,
    measured_objects,
    scratch_outputs,
)
from unet_seg.inference.mask import load_mask
from unet_seg.inference.object_table import write_object_table
from unet_seg.inference.postprocess import label_dtype
from unet_seg.inference.preview_output import foreground_counts, write_preview
from unet_seg.inference.provenance import checkpoint_id
from unet_seg.inference.stitch import StitchOptions, stitch_options_of
from unet_seg.inference.tiling import plan_tiles
from unet_seg.io.limits import check_voxels
from unet_seg.io.zarr import ZarrVolume
from unet_seg.io.zarr_output import ZarrOutput, register_label_image
from unet_seg.normalization import percentile_range, percentiles

log = logging.getLogger(__name__)
LABEL_NAMES = {"labels": "unet-seg", "instances": "unet-seg-instances"}  # in an image's labels/


class BlockFailures(RuntimeError):
    """Some blocks failed; ``failed`` lists ``(index, position, error)``."""

    def __init__(self, path: Path, failed: list[tuple[int, tuple, str]], counts: dict) -> None:
        self.failed, self.counts = failed, counts
        shown = "; ".join(f"block {i} at {p}: {e}" for i, p, e in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(
            f"{path}: {len(failed)} of {counts['total']} blocks failed: {shown}{more}; the other "
            "blocks are recorded, rerun to compute only the missing ones"
        )


def give_up_if_hopeless(path: Path, errors: list[BaseException], outputs: dict) -> None:
    """Raise the first error, after removing the partial stores, when a rerun cannot do better:
    an output that cannot be written (a full disk: the stores would keep holding it while the
    rest of the batch needs it) or an input found damaged (every error is a ``ValueError``
    naming it). Other failures (a worker lost, out of memory) keep the stores for a rerun."""
    written = [e for e in errors if isinstance(e, OutputWriteError)]
    damaged = [e for e in errors if isinstance(e, ValueError) and str(e).startswith(f"{path}: ")]
    if not written and len(damaged) < len(errors):
        return
    for output in outputs.values():
        output.abort()
    raise (written or damaged)[0]


def tiling_chunks(chunks: tuple[int, ...], layout) -> tuple[int, int, int]:
    """The file's spatial chunks in the tiling's ``(Z, Y, X)`` order (slice axis first)."""
    if layout.spatial_dims == 2:
        return (1, *chunks)
    order = [layout.slice_axis, *(a for a in range(3) if a != layout.slice_axis)]
    return tuple(int(chunks[a]) for a in order)


def _ome_of(volume: ZarrVolume) -> dict | None:
    ome = volume.metadata.get("ome")
    if ome is None:
        return None
    axes = [a for a in ome["axes"] if a.get("type", "space") == "space"]
    return {"version": ome["version"], "axes": axes, "scale": volume.spacing, "name": ome["name"]}


def prepare_outputs(
    volume: ZarrVolume, targets: dict[str, Path], spatial: tuple, classes: int, options: Any,
    key: dict, stitch: StitchOptions | None = None,
) -> tuple[dict[str, ZarrOutput], Any]:  # fmt: skip
    """The labels / probabilities (/ with ``stitch``: the instance passes' scratch) stores,
    chunked like the input's spatial axes, and a maker of further label stores alike."""
    chunks = volume.chunks[-len(spatial) :]
    ome = _ome_of(volume)

    def label_store(path: Path, dtype: Any, fingerprint: dict, as_ome: bool = True) -> ZarrOutput:
        return ZarrOutput(path, spatial, dtype, chunks, ome if as_ome else None, True,
                          fingerprint, volume.zarr_format)  # fmt: skip

    outputs = {}
    if "labels" in targets:
        outputs["labels"] = label_store(targets["labels"], label_dtype(classes), key)
    if "probabilities" in targets:
        dtype = options.probability_dtype
        outputs["probabilities"] = ZarrOutput(
            targets["probabilities"], (classes, *spatial), dtype, (1, *chunks), ome, False,
            {**key, "dtype": dtype}, volume.zarr_format,
        )  # fmt: skip
    if stitch is not None:
        outputs.update(scratch_outputs(targets["instances"], stitch, spatial, chunks, key,
                                       volume.zarr_format))  # fmt: skip
    return outputs, label_store


def stitch_options(instances: Any, volume: Any, layout: Any = None) -> StitchOptions:
    """The per-block instance options of the prediction's ``instances`` options; the spacing
    in the tiling's ``(Z, Y, X)`` order (the slice axis first) when ``layout`` is given."""
    spacing = tuple(volume.spacing)
    if layout is not None:
        spacing = spacing[-layout.spatial_dims :]
        if layout.spatial_dims == 3:  # blocks label their labels in the tiling's order
            rest = [s for a, s in enumerate(spacing) if a != layout.slice_axis]
            spacing = (spacing[layout.slice_axis], *rest)
    return stitch_options_of(instances, spacing)


@dataclass(frozen=True)
class BlockOptions:
    """What block-wise prediction adds to the per-file options (``conf/predict.yaml``)."""

    runner: RunnerSpec
    input_level: int = 0
    block_size: tuple[int, int, int] | None = None
    mask: dict | None = None  # {path, threshold, level}

    @classmethod
    def from_config(cls, cfg: Any) -> BlockOptions:
        spec = RunnerSpec(str(cfg.checkpoint), str(cfg.device), bool(cfg.tta), bool(cfg.amp),
                          bool(cfg.cpu_bf16))  # fmt: skip
        size = cfg.get("block_size")
        mask = cfg.get("mask")
        return cls(
            spec, whole("input_level", cfg.get("input_level") or 0),
            None if size is None else tuple(whole("block_size", b) for b in size),
            None if mask is None else {k: mask.get(k) for k in ("path", "threshold", "level")},
        )  # fmt: skip


def predict_blockwise(
    path: Path, targets: dict[str, Path], model, runner, options: Any, norm: dict,
    block: BlockOptions, engine=None,
) -> dict:  # fmt: skip
    """Predict the zarr / OME-Zarr ``path`` block by block into ``targets`` (zarr stores).

    Returns the summary entry with ``blocks: {total, computed, skipped, failed}``; raises
    :class:`BlockFailures` (after all other blocks finished) when a block failed.
    """
    start = time.perf_counter()
    engine = engine or InProcess()
    volume = ZarrVolume(path, block.input_level)
    check_voxels(path, volume.shape, options.max_voxels)  # a header can claim any size
    axes = volume.metadata.get("axes")
    layout = input_layout(path, volume.shape, model, options.slice_axis, axes=axes,
                          channel=options.channel)  # fmt: skip
    lo, hi = percentile_range(model_input(volume, layout), *percentiles(norm))
    shape = layout.volume_shape(volume.shape)
    spatial = volume.shape[1:] if layout.channels else volume.shape
    tiles = plan_tiles(model, shape, options.tile_for(model, shape), options.overlap)
    chunks = tiling_chunks(volume.chunks[-len(spatial) :], layout)
    blocks = plan_blocks(tiles, block.block_size, chunks)
    classes = int(model.num_classes)
    key = {
        "input": str(Path(path).resolve()), "level": volume.level, "shape": list(volume.shape),
        "block_shape": list(blocks.block_shape), "tiles": repr(tiles), "range": [lo, hi],
        "checkpoint": checkpoint_id(block.runner.checkpoint), "tta": block.runner.tta,
        "blend": options.blend, "cpu_bf16": block.runner.cpu_bf16,
    }  # fmt: skip
    stitch = stitch_options(options.instances, volume, layout) if "instances" in targets else None
    outputs, label_store = prepare_outputs(volume, targets, spatial, classes, options, key, stitch)
    try:
        done = set.intersection(*[o.open() for o in outputs.values()])
    except OutputWriteError as err:
        give_up_if_hopeless(path, [err], outputs)
        raise
    register_runner(block.runner, runner)  # in-process: the model already loaded
    job = BlockJob(
        volume, layout, lo, hi, blocks, outputs, block.runner, classes, options.probability_dtype,
        options.batch_size, options.blend, load_mask(block.mask, volume, layout, shape),
        stitch,
    )  # fmt: skip
    counts = run_blocks(path, job, engine, done, options.progress)
    objects = measured = None
    if "instances" in targets:
        min_size = options.instances.min_size
        image = volume if "objects" in targets else None
        final, objects, failed = finish_instances(
            job, targets["instances"], engine, min_size, label_store, key, options.progress,
            image=image,
        )  # fmt: skip
        if failed:
            raise BlockFailures(path, failed, {**counts, "failed": len(failed)})
        if image is not None:  # the records go at commit
            measured = measured_objects(final, len(spatial))
    scratch = [outputs.pop(n) for n in list(outputs) if n.startswith(SCRATCH_PREFIX)]
    if scratch:
        outputs["instances"] = final
    foreground = None
    if "preview" in targets and "labels" in outputs:  # the records go at commit
        foreground = foreground_counts(outputs["labels"].records_of().values(), shape[0])
    committed: list[Path] = []
    for output in outputs.values():  # last, so an interrupted run finds all partial stores
        try:
            committed.append(output.commit())
        except OutputWriteError:  # a full disk: no half of the file's outputs stays
            for done_output in [*outputs.values(), *scratch]:
                done_output.abort()
            for store in committed:
                shutil.rmtree(store, ignore_errors=True)
            raise
        if output.path.parent == Path(path) / "labels" and output.ome is not None:
            register_label_image(path, output.path.name, output.ome["version"])
    for store in scratch:  # the local ids and maps, once the final ids are in place
        store.abort()
    if measured is not None:
        write_object_table(targets["objects"], measured, tuple(volume.spacing)[-len(spatial) :])
    if foreground is not None:
        instances = ZarrVolume(targets["instances"]) if "instances" in targets else None
        write_preview(targets["preview"], foreground, layout, volume, ZarrVolume(targets["labels"]),
                      instances, options.preview_slices, Path(path).name)  # fmt: skip
    elif "preview" in targets:
        log.info("%s: no preview without the labels output", path)
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


def run_blocks(
    path: Path, job: BlockJob, engine: Any, done: set[int], progress: bool | None
) -> dict:
    """Run the blocks of ``job`` not in ``done`` on ``engine`` under a tqdm bar; returns the
    counts ``{total, computed, skipped, failed}``.

    Raises:
        BlockFailures: after all other blocks finished, when some block failed.
    """
    blocks = job.blocks
    todo = [i for i in range(len(blocks)) if i not in done]
    counts = {"total": len(blocks), "computed": 0, "skipped": len(done), "failed": 0}
    failed: list[tuple[int, tuple, str]] = []
    errors: list[BaseException] = []
    bar = tqdm(
        total=len(blocks), initial=len(done), desc=f"blocks {Path(path).name}", unit="block",
        disable=None if progress is None else not progress,
    )  # fmt: skip
    with bar:
        for index, result in engine.map(run_block, job, todo):
            if isinstance(result, BaseException):
                position = blocks.block(index).position
                failed.append((index, position, f"{type(result).__name__}: {result}"))
                errors.append(result)
                log.error("%s: block %d at %s failed: %s", path, index, position, result)
                counts["failed"] += 1
            else:
                counts["computed" if result["status"] == "computed" else "skipped"] += 1
            bar.update()
    if failed:
        give_up_if_hopeless(path, errors, job.outputs)
        raise BlockFailures(path, failed, counts)
    return counts
