"""One block of a block-wise prediction, as a task any process can run.

A :class:`BlockJob` holds only what pickles cheaply (the lazily opened input, the block plan,
the output stores, the checkpoint's path), so a Dask worker receives it once and runs
:func:`run_block` for each of its blocks: load the block's read region, run the whole-volume
windows that touch it (:func:`unet_seg.blockwise.plan.predict_block`), write exactly its own
output chunks, then record it as done in every output. The model is loaded once per worker
process (:func:`runner_for`), never sent with a task.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from unet_seg.blockwise.allocator import reuse_freed_memory
from unet_seg.blockwise.mask import ForegroundMask
from unet_seg.blockwise.plan import Block, BlockPlan, predict_block, region_view
from unet_seg.inference.inputs import Layout, region_reader
from unet_seg.inference.postprocess import probabilities_to_labels, store_probabilities
from unet_seg.inference.runner import ModelRunner, RunnerOptions
from unet_seg.instances.seeded import foreground_and_interior
from unet_seg.instances.stitch import StitchOptions, local_outputs
from unet_seg.models.ensemble import CheckpointSpec, load_ensemble


@dataclass(frozen=True)
class RunnerSpec:
    """How a worker builds its :class:`ModelRunner` (hashable: the per-process cache key);
    ``checkpoint``: one path, or an ensemble's paths (:mod:`unet_seg.models.ensemble`)."""

    checkpoint: CheckpointSpec
    device: str = "auto"
    tta: bool = False
    amp: bool | None = None
    cpu_bf16: bool | None = None
    precision: str | None = None  # predict sends it decided, so workers measure nothing
    runtime: str = "torch"
    channels_last: bool | str = "auto"
    threads: int | None = None


_RUNNERS: dict[RunnerSpec, ModelRunner] = {}
_RUNNERS_LOCK = threading.Lock()


def register_runner(spec: RunnerSpec, runner: ModelRunner) -> None:
    """Use an already built runner for ``spec`` in this process (in-process runs load once)."""
    with _RUNNERS_LOCK:
        _RUNNERS[spec] = runner


def _current_worker():
    """The Dask worker of this process, or ``None`` (in-process, or Dask not installed).

    Inside a task ``get_worker`` says; in a ``client.run`` call (which warms workers up, outside
    any task) the process's only worker does, so a runner cached there is the worker's too.
    """
    try:
        from distributed import get_worker
        from distributed.worker import Worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:
        workers = list(getattr(Worker, "_instances", ()))
        return workers[0] if len(workers) == 1 else None


def _worker_number(name: object) -> int:
    """A worker's number from its name: ``3``, ``"3"``, ``"SLURMCluster-12-3"`` (the last
    integer: dask-jobqueue's process index within its job), else a stable hash of the name."""
    if isinstance(name, int):
        return name
    digits = re.findall(r"\d+", str(name))
    return int(digits[-1]) if digits else sum(map(ord, str(name)))


def _worker_device(device: str) -> str:
    """``auto`` on a Dask worker with GPUs: the GPU of the worker's number (one GPU each)."""
    import torch

    if device != "auto" or not torch.cuda.is_available():
        return device
    worker = _current_worker()
    if worker is None:
        return device
    return f"cuda:{_worker_number(worker.name) % torch.cuda.device_count()}"


def runner_for(spec: RunnerSpec) -> ModelRunner:
    """The runner of ``spec`` in this process, loading the checkpoint the first time only (and
    then letting malloc reuse freed tensors, where a Dask nanny stopped it)."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(spec)
        if runner is None:
            reuse_freed_memory()
            model = load_ensemble(spec.checkpoint)[0]
            device = _worker_device(spec.device)
            options = {f.name: getattr(spec, f.name) for f in fields(RunnerOptions)}
            runner = RunnerOptions(**{**options, "device": device}).runner(model)
            _RUNNERS[spec] = runner
        return runner


@dataclass
class BlockJob:
    """Everything a block needs; ``outputs`` maps ``labels`` / ``probabilities`` to stores with
    ``write(file_box, data)`` and ``record(index, info)`` (:class:`~unet_seg.io.zarr.output.
    ZarrOutput`)."""

    volume: Any
    layout: Layout
    lo: float
    hi: float
    blocks: BlockPlan
    outputs: dict[str, Any]
    runner: RunnerSpec
    num_classes: int
    probability_dtype: str = "uint8"
    batch_size: int = 4
    blend: str = "gaussian"
    mask: ForegroundMask | None = None
    instances: StitchOptions | None = None  # what stitch.local_outputs names, to outputs
    progress: bool | None = False  # a bar over each block's windows: in-process runs only
    clip: tuple[float, float] | None = None  # a fixed normalisation window, before lo/hi


def file_box(layout: Layout, box: tuple[slice, ...]) -> tuple[slice, ...]:
    """A tiling ``(Z, Y, X)`` box in the file's spatial axis order."""
    if layout.spatial_dims == 2:
        return tuple(box[1:])
    index = [box[1], box[2]]
    index.insert(layout.slice_axis, box[0])
    return tuple(index)


def file_order(layout: Layout, data: np.ndarray) -> np.ndarray:
    """``(*lead, Z, Y, X)`` data of a tiling box in the file's spatial axis order."""
    if layout.spatial_dims == 2:
        return data[..., 0, :, :]
    return np.moveaxis(data, -3, -3 + layout.slice_axis)


def tiling_order(layout: Layout, data: np.ndarray) -> np.ndarray:
    """``(*lead, *spatial)`` data read from a file box back in the tiling's ``(Z, Y, X)`` order
    (the inverse of :func:`file_order`)."""
    if layout.spatial_dims == 2:
        return data[..., None, :, :]
    return np.moveaxis(data, -3 + layout.slice_axis, -3)


def block_info(block: Block, status: str, seconds: float) -> dict:
    return {
        "index": block.index, "position": list(block.position), "status": status,
        "write": [list(r) for r in block.write], "seconds": round(seconds, 3),
    }  # fmt: skip


def run_block(job: BlockJob, index: int) -> dict:
    """Predict block ``index`` of ``job``, write its chunks, record it; returns its info.

    A block outside the foreground mask is written as background (label 0, probability 1 for
    class 0) without running the network.
    """
    start = time.perf_counter()
    block = job.blocks.block(index)
    box = block.write_box
    labels = np.zeros(block.shape, np.uint8 if job.num_classes <= 256 else np.uint16)
    probs = None
    maps = None  # seeded instances: the foreground and interior maps, as predict_file keeps them
    if job.instances is not None and job.instances.seeded:
        maps = np.zeros((2, *block.shape), np.float16)
    want_probs = "probabilities" in job.outputs
    if job.mask is not None and not job.mask.any_in(block.write):
        status = "skipped"
        if want_probs:
            probs = np.zeros((job.num_classes, *block.shape), np.float32)
            probs[0] = 1.0
    else:
        status = "computed"
        loaded = region_reader(job.volume, job.layout, job.lo, job.hi, job.clip)(block.read_box)
        read = region_view(loaded, block.read)
        runner = runner_for(job.runner)
        z_start = block.write[0][0]
        slabs = predict_block(
            read, job.blocks, block, runner, job.batch_size, job.blend, job.progress
        )
        for z0, slab in slabs:
            rows = slice(z0 - z_start, z0 - z_start + slab.shape[1])
            labels[rows] = probabilities_to_labels(slab)
            if want_probs and slab.shape[1] == len(labels):  # one slab is the block: no copy
                probs = slab
            elif want_probs:
                if probs is None:
                    probs = np.empty((job.num_classes, *block.shape), np.float32)
                probs[:, rows] = slab
            if maps is not None:
                roles = job.instances.background_class, job.instances.interior_class
                maps[:, rows] = np.stack(foreground_and_interior(slab, *roles))
    target = file_box(job.layout, box)
    if "labels" in job.outputs:
        job.outputs["labels"].write(target, file_order(job.layout, labels))
    if probs is not None:
        dtype = job.probability_dtype
        stored = store_probabilities(probs, dtype) if dtype != "float32" else probs
        job.outputs["probabilities"].write(target, file_order(job.layout, stored))
    info = block_info(block, status, time.perf_counter() - start)
    # Per slice of the tiling's Z: what the preview picks its slices by, without the labels.
    info["foreground"] = np.count_nonzero(labels.reshape(len(labels), -1), axis=1).tolist()
    if job.instances is not None:
        arrays, summaries = local_outputs(labels, maps, job.instances)
        info.update(summaries)
        for name, data in arrays.items():
            job.outputs[name].write(target, file_order(job.layout, data))
    for output in job.outputs.values():  # only after every chunk of the block is written
        output.record(index, info)
    return info
