"""Batch prediction: read lazily -> tiles -> model -> blend -> post-process -> write, per file.

``predict(cfg)`` is what ``unet-seg-predict`` runs (``conf/predict.yaml``); tests call it directly.
Outputs land in ``output_dir`` in the input's format, named ``<stem>_labels<suffix>`` (class
indices), ``<stem>_probs<suffix>`` (``(K, *spatial)`` probabilities; TIFF for PNG inputs) and
``<stem>_instances<suffix>``, plus ``predict_summary.json``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unet_seg.errors import InputNotFoundError
from unet_seg.inference.inputs import input_layout, slab_reader
from unet_seg.inference.postprocess import (
    PROBABILITY_DTYPES,
    instance_labels,
    label_dtype,
    probabilities_to_labels,
    store_probabilities,
)
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import iter_tiled_predictions
from unet_seg.inference.tiling import BLEND_MODES, plan_tiles
from unet_seg.io import Volume, open_volume, read_volume, write_volume
from unet_seg.io.atomic import write_json_atomic
from unet_seg.io.files import find_files, format_suffix, output_path, stem
from unet_seg.io.slabs import SlabWriter
from unet_seg.models.checkpoint import load_model
from unet_seg.models.protocol import SegmentationNetwork
from unet_seg.normalization import percentile_range, percentiles

log = logging.getLogger(__name__)
DEFAULT_TILE = {2: 512, 3: 96}  # output region per window; bigger tiles waste less margin
OUTPUT_ENDINGS = ("_labels", "_probs", "_instances")


@dataclass(frozen=True)
class InstanceOptions:
    """How instances are made from the label map (see :func:`instance_labels`).

    ``anisotropic``: distances in physical units, from the input's voxel spacing.
    """

    foreground_class: int = 1
    split: bool = True
    min_distance: int = 5
    min_size: int = 10
    anisotropic: bool = True


@dataclass(frozen=True)
class PredictOptions:
    """How one file is predicted (``conf/predict.yaml`` documents each option).

    ``tile_size``: output region per window, an int for every network axis or one per axis;
    None picks :data:`DEFAULT_TILE`. ``blend`` and ``overlap`` apply to same-padding networks.
    """

    tile_size: int | tuple[int, ...] | None = None
    overlap: float = 0.25
    blend: str = "gaussian"
    batch_size: int = 4
    slice_axis: int = 0
    probability_dtype: str = "uint8"
    progress: bool | None = None
    instances: InstanceOptions = InstanceOptions()

    def __post_init__(self) -> None:
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.probability_dtype not in (*PROBABILITY_DTYPES, "float32"):
            raise ValueError(
                f"probability_dtype must be one of {PROBABILITY_DTYPES}, "
                f"got {self.probability_dtype!r}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @classmethod
    def from_config(cls, cfg: Any) -> PredictOptions:
        """The options of a ``conf/predict.yaml``-shaped config."""
        tile = cfg.tile_size
        if tile is not None:
            tile = int(tile) if isinstance(tile, int) else tuple(int(t) for t in tile)
        icfg = cfg.instances
        return cls(
            tile_size=tile,
            overlap=float(cfg.overlap),
            blend=str(cfg.blend),
            batch_size=int(cfg.batch_size),
            slice_axis=int(cfg.slice_axis),
            probability_dtype=str(cfg.probability_dtype),
            progress=cfg.progress,
            instances=InstanceOptions(
                int(icfg.foreground_class),
                bool(icfg.split),
                int(icfg.min_distance),
                int(icfg.min_size),
                bool(icfg.anisotropic),
            ),
        )

    def tile_for(self, spatial_dims: int) -> int | Sequence[int]:
        return self.tile_size if self.tile_size is not None else DEFAULT_TILE[spatial_dims]


def output_paths(path: Path, out_dir: Path, outputs: dict) -> dict[str, Path]:
    """Output file per enabled kind (``labels``, ``probabilities``, ``instances``)."""
    suffix = format_suffix(path)
    names = {
        "labels": output_path(path, out_dir, "_labels"),
        "probabilities": output_path(path, out_dir, "_probs", ".tif" if suffix == ".png" else None),
        "instances": output_path(path, out_dir, "_instances"),
    }
    return {kind: name for kind, name in names.items() if outputs.get(kind)}


def _probability_dtype(wanted: str, suffix: str) -> str:
    # NIfTI has no float16; float32 keeps the values exact there.
    return "float32" if wanted == "float16" and suffix.startswith(".nii") else wanted


def predict_file(
    path: Path,
    targets: dict[str, Path],
    model: SegmentationNetwork,
    runner: ModelRunner,
    options: PredictOptions,
    norm: dict,
) -> dict:
    """Predict one file into ``targets``; returns its summary entry (shape, seconds, voxels/s).

    ``norm``: the ``{low, high}`` percentiles to normalise with (those of training).
    """
    start = time.perf_counter()
    volume = open_volume(path)
    layout = input_layout(path, volume.shape, model, options.slice_axis)
    lo, hi = percentile_range(volume, *percentiles(norm))
    shape = layout.volume_shape(volume.shape)
    plan = plan_tiles(model, shape, options.tile_for(model.spatial_dims), options.overlap)
    spatial = volume.shape[1:] if layout.channels else volume.shape
    classes = int(model.num_classes)
    slices = iter_tiled_predictions(
        slab_reader(volume, layout, lo, hi), shape, plan, runner, options.batch_size,
        options.blend, options.progress,
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
            dtype = _probability_dtype(options.probability_dtype, format_suffix(path))
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
            _write_instances(label_path, targets["instances"], volume, options.instances)
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
    return path.parent.resolve() == out_dir.resolve() and stem(path).endswith(OUTPUT_ENDINGS)


def _scratch(path: Path) -> Path:
    return path.with_name(f".{path.name}.labels-{uuid.uuid4().hex[:8]}{format_suffix(path)}")


def _write_instances(label_path: Path, target: Path, volume: Any, options: InstanceOptions) -> None:
    """Instances of the foreground class over the whole label map (in 3D for a stack predicted
    slice by slice). This step holds the label map in memory, unlike the tiled prediction."""
    labels = read_volume(label_path)
    mask = labels.array == options.foreground_class
    spacing = volume.spacing[-mask.ndim :] if options.anisotropic else None
    inst = instance_labels(mask, options.split, options.min_distance, options.min_size, spacing)
    dtype = np.uint16 if inst.max() < 2**16 else np.uint32
    write_volume(
        target,
        Volume(inst.astype(dtype), labels.affine, labels.spacing, labels.metadata),
    )


def _load_model(checkpoint: str) -> tuple[SegmentationNetwork, dict]:
    try:
        return load_model(checkpoint)
    except FileNotFoundError as err:
        raise InputNotFoundError(
            f"{err}: train the sample model first with `unet-seg-train experiment=sample_2d`, "
            "or pass checkpoint=<path to a .ckpt>"
        ) from err


def predict(cfg: Any) -> dict:
    """Predict every input of ``cfg.input`` into ``cfg.output_dir``; returns the run summary.

    A file that cannot be read or predicted is reported by name and skipped; ``summary["failed"]``
    counts them. Existing outputs are kept unless ``cfg.overwrite``.
    """
    model, norm = _load_model(cfg.checkpoint)
    if cfg.get("normalization"):
        norm = dict(cfg.normalization)
    options = PredictOptions.from_config(cfg)
    out_dir = Path(cfg.output_dir)
    # Our own outputs are not inputs, e.g. when output_dir is the input folder.
    files = [f for f in find_files(cfg.input) if not _is_output(f, out_dir)]
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
                entry.update(predict_file(path, targets, model, runner, options, norm))
                entry["status"] = "ok"
        except Exception as err:  # one bad file must not stop the batch; it is reported by name
            # The reason goes to the summary and to the CLI's one line on stderr, not the log too.
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
    write_json_atomic(out_dir / "predict_summary.json", summary)
    return summary
