"""Batch prediction: read lazily -> tiles -> model -> blend -> post-process -> write, per file.

``predict(cfg)`` is what ``unet-seg-predict`` runs (``conf/predict.yaml``); tests call it directly.
Outputs land in ``output_dir`` in the input's format, named ``<stem>_labels<suffix>`` (class
indices), ``<stem>_probs<suffix>`` (``(K, *spatial)`` probabilities; TIFF for PNG inputs) and
``<stem>_instances<suffix>``, plus ``predict_summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unet_seg.atomic import write_text_atomic
from unet_seg.data.io import Volume, open_volume, read_volume, write_volume
from unet_seg.inference.inputs import (
    find_inputs,
    input_layout,
    percentile_range,
    slab_reader,
)
from unet_seg.inference.postprocess import (
    instance_labels,
    label_dtype,
    probabilities_to_labels,
    store_probabilities,
)
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import iter_tiled_predictions
from unet_seg.inference.tiling import plan_tiles
from unet_seg.inference.writers import SlabWriter, format_suffix

log = logging.getLogger(__name__)
DEFAULT_TILE = {2: 512, 3: 96}  # output region per window; bigger tiles waste less margin
OUTPUT_ENDINGS = ("_labels", "_probs", "_instances")


def load_model(checkpoint: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """The ``UNet`` and the normalisation percentiles stored in a training checkpoint."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found: train the sample model first with "
            "`unet-seg-train experiment=sample_2d`, or pass checkpoint=<path to a .ckpt>"
        )
    from unet_seg.training.module import SegmentationModule  # Lightning import only when needed

    try:
        module = SegmentationModule.load_from_checkpoint(path, map_location="cpu")
    except (RuntimeError, KeyError, ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot load the checkpoint ({err})") from err
    return module.model.eval(), dict(module.hparams.get("normalization") or {})


def output_paths(path: Path, out_dir: Path, outputs: dict) -> dict[str, Path]:
    """Output file per enabled kind (``labels``, ``probabilities``, ``instances``)."""
    suffix = format_suffix(path)
    stem = path.name[: -len(suffix)]
    names = {
        "labels": f"{stem}_labels{suffix}",
        "probabilities": f"{stem}_probs{'.tif' if suffix == '.png' else suffix}",
        "instances": f"{stem}_instances{suffix}",
    }
    return {kind: out_dir / name for kind, name in names.items() if outputs.get(kind)}


def _probability_dtype(wanted: str, suffix: str) -> str:
    # NIfTI has no float16; float32 keeps the values exact there.
    return "float32" if wanted == "float16" and suffix.startswith(".nii") else wanted


def predict_file(
    path: Path, targets: dict[str, Path], model, runner: ModelRunner, cfg: Any, norm: dict
) -> dict:
    """Predict one file into ``targets``; returns its summary entry (shape, seconds, voxels/s)."""
    start = time.perf_counter()
    volume = open_volume(path)
    layout = input_layout(path, volume.shape, model, int(cfg.slice_axis))
    low, high = float(norm.get("low", 1.0)), float(norm.get("high", 99.8))
    lo, hi = percentile_range(volume, low, high)
    shape = layout.volume_shape(volume.shape)
    tile = cfg.tile_size if cfg.tile_size is not None else DEFAULT_TILE[model.spatial_dims]
    tile = int(tile) if isinstance(tile, int) else [int(t) for t in tile]
    plan = plan_tiles(model, shape, tile, float(cfg.overlap))
    spatial = volume.shape[1:] if layout.channels else volume.shape
    classes = int(model.num_classes)
    slices = iter_tiled_predictions(
        slab_reader(volume, layout, lo, hi), shape, plan, runner, int(cfg.batch_size),
        str(cfg.blend), cfg.progress,
    )  # fmt: skip
    with ExitStack() as stack:
        writers = {}
        label_target = targets.get("labels") or targets.get("instances")
        # Instances are computed from the label map, so it is written even if not asked for.
        label_path = label_target if "labels" in targets else _scratch(label_target)
        writers["labels"] = stack.enter_context(
            SlabWriter(label_path, spatial, label_dtype(classes), volume, layout.spatial_dims)
        )
        if "probabilities" in targets:
            dtype = _probability_dtype(cfg.probability_dtype, format_suffix(path))
            writers["probabilities"] = stack.enter_context(
                SlabWriter(targets["probabilities"], (classes, *spatial), dtype, volume,
                           layout.spatial_dims)
            )  # fmt: skip
        for z0, probs in slices:
            writers["labels"].write(z0, probabilities_to_labels(probs), layout.slice_axis)
            if "probabilities" in writers:
                dtype = writers["probabilities"].dtype.name
                stored = store_probabilities(probs, dtype) if dtype != "float32" else probs
                writers["probabilities"].write(z0, stored, layout.slice_axis)
    if "instances" in targets:
        try:
            _write_instances(label_path, targets["instances"], volume, cfg)
        finally:
            if "labels" not in targets:
                label_path.unlink()
    seconds = time.perf_counter() - start
    voxels = int(np.prod(spatial))
    return {
        "shape": list(volume.shape),
        "tiles": plan.num_windows,
        "seconds": round(seconds, 3),
        "voxels_per_second": round(voxels / seconds, 1) if seconds > 0 else None,
    }


def _is_output(path: Path, out_dir: Path) -> bool:
    stem = path.name[: -len(format_suffix(path))]
    return path.parent.resolve() == out_dir.resolve() and stem.endswith(OUTPUT_ENDINGS)


def _scratch(path: Path) -> Path:
    return path.with_name(f".{path.name}.labels-{uuid.uuid4().hex[:8]}{format_suffix(path)}")


def _write_instances(label_path: Path, target: Path, volume, cfg: Any) -> None:
    """Instances of the foreground class over the whole label map (in 3D for a stack predicted
    slice by slice). This step holds the label map in memory, unlike the tiled prediction."""
    labels = read_volume(label_path)
    icfg = cfg.instances
    mask = labels.array == int(icfg.foreground_class)
    spacing = volume.spacing[-mask.ndim :] if icfg.anisotropic else None
    inst = instance_labels(mask, bool(icfg.split), int(icfg.min_distance), int(icfg.min_size),
                           spacing)  # fmt: skip
    dtype = np.uint16 if inst.max() < 2**16 else np.uint32
    write_volume(
        target,
        Volume(inst.astype(dtype), labels.affine, labels.spacing, labels.metadata),
    )


def predict(cfg: Any) -> dict:
    """Predict every input of ``cfg.input`` into ``cfg.output_dir``; returns the run summary.

    A file that cannot be read or predicted is reported by name and skipped; ``summary["failed"]``
    counts them. Existing outputs are kept unless ``cfg.overwrite``.
    """
    model, norm = load_model(cfg.checkpoint)
    if cfg.get("normalization"):
        norm = dict(cfg.normalization)
    out_dir = Path(cfg.output_dir)
    # Our own outputs are not inputs, e.g. when output_dir is the input folder.
    files = [f for f in find_inputs(cfg.input) if not _is_output(f, out_dir)]
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = ModelRunner(model, cfg.device, bool(cfg.tta), bool(cfg.amp), bool(cfg.cpu_bf16))
    outputs = dict(cfg.outputs)
    entries, start = [], time.perf_counter()
    bar = tqdm(
        files, desc="files", unit="file", disable=None if cfg.progress is None else not cfg.progress
    )
    for path in bar:
        entry: dict[str, Any] = {"input": str(path)}
        try:
            targets = output_paths(path, out_dir, outputs)
            entry["outputs"] = [str(p) for p in targets.values()]
            if not targets:
                raise ValueError("no outputs enabled (outputs.labels/probabilities/instances)")
            if not cfg.overwrite and all(p.exists() for p in targets.values()):
                entry["status"] = "skipped"
            else:
                entry.update(predict_file(path, targets, model, runner, cfg, norm))
                entry["status"] = "ok"
        except Exception as err:  # one bad file must not stop the batch; it is reported by name
            log.error("%s: prediction failed: %s", path, err)
            entry.update(status="failed", error=f"{type(err).__name__}: {err}")
        entries.append(entry)
        log.info("%s: %s", path, entry["status"])
    summary = {
        "checkpoint": str(cfg.checkpoint),
        "output_dir": str(out_dir),
        "device": str(runner.device),
        "files": entries,
        "ok": sum(e["status"] == "ok" for e in entries),
        "skipped": sum(e["status"] == "skipped" for e in entries),
        "failed": sum(e["status"] == "failed" for e in entries),
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_text_atomic(out_dir / "predict_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
