"""Batch prediction: read lazily -> tiles -> model -> blend -> post-process -> write, per file.

``predict(cfg)`` is what ``unet-seg-predict`` runs (``conf/predict.yaml``); tests call it directly.
Outputs land in ``output_dir`` in the input's format, named ``<stem>_labels<suffix>`` (class
indices), ``<stem>_probs<suffix>`` (``(K, *spatial)`` probabilities; TIFF for PNG inputs) and
``<stem>_instances<suffix>``, ``<stem>_preview.png`` (a few slices with the labels overlaid), plus
``predict_summary.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unet_seg.errors import InputNotFoundError, UsageError
from unet_seg.inference.blockrun import (
    LABEL_NAMES,
    BlockFailures,
    BlockOptions,
    predict_blockwise,
)
from unet_seg.inference.engine import make_engine
from unet_seg.inference.inputs import Layout, LuminanceView, input_layout, region_reader
from unet_seg.inference.instance_methods import (
    InstanceOptions,
    from_class_map,
    resolve,
    seeded_from,
    stored_tuning,
)
from unet_seg.inference.outputs import (
    is_complete,
    is_output,
    plan_outputs,
    scratch_path,
)
from unet_seg.inference.postprocess import (
    PROBABILITY_DTYPES,
    label_dtype,
    probabilities_to_labels,
    store_probabilities,
)
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.seeded import foreground_and_interior
from unet_seg.inference.stream import iter_tiled_predictions
from unet_seg.inference.tiling import BLEND_MODES, plan_tiles
from unet_seg.io import Volume, open_volume, read_volume, write_volume
from unet_seg.io.atomic import write_error, write_json_atomic
from unet_seg.io.files import find_files, format_suffix, is_directory_format
from unet_seg.io.slabs import SlabWriter
from unet_seg.io.sweep import sweep_stale_temporaries
from unet_seg.io.zarr import ZarrVolume
from unet_seg.io.zarr_output import label_group_path
from unet_seg.models.checkpoint import load_model
from unet_seg.models.protocol import SegmentationNetwork
from unet_seg.normalization import percentile_range, percentiles
from unet_seg.viz.previews import PreviewCollector, plane_reader

log = logging.getLogger(__name__)
DEFAULT_TILE = {2: 512, 3: 96}  # output region per window; bigger tiles waste less margin


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
    max_voxels: int | None = None
    instances: InstanceOptions = field(default_factory=InstanceOptions)
    preview_slices: int = 4

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
    def from_config(cls, cfg: Any, tuned: dict | None = None) -> PredictOptions:
        """The options of a ``conf/predict.yaml``-shaped config; ``instances`` settings left
        ``null`` come from ``tuned`` (a checkpoint's ``unet-seg-tune`` result), else defaults."""
        tile = cfg.tile_size
        if tile is not None:
            tile = int(tile) if isinstance(tile, int) else tuple(int(t) for t in tile)
        return cls(
            tile_size=tile,
            overlap=float(cfg.overlap),
            blend=str(cfg.blend),
            batch_size=int(cfg.batch_size),
            slice_axis=int(cfg.slice_axis),
            probability_dtype=str(cfg.probability_dtype),
            progress=cfg.progress,
            max_voxels=int(cfg.max_voxels) if cfg.get("max_voxels") is not None else None,
            instances=resolve(tuned, dict(cfg.instances)),
            preview_slices=int(cfg.get("preview_slices", 4)),
        )

    def tile_for(self, spatial_dims: int) -> int | Sequence[int]:
        return self.tile_size if self.tile_size is not None else DEFAULT_TILE[spatial_dims]


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


def _load_model(checkpoint: str) -> tuple[SegmentationNetwork, dict]:
    try:
        return load_model(checkpoint)
    except FileNotFoundError as err:
        raise InputNotFoundError(
            f"{err}: train the sample model first with `unet-seg-train experiment=sample_2d`, "
            "or pass checkpoint=<a .ckpt, or a .onnx / .pt from unet-seg-export>"
        ) from err


def _normalization(cfg: Any, stored: dict) -> dict:
    """The percentiles to normalise with: the config's, else the checkpoint's; a clear error
    for nonsense (``low >= high``, NaN, not numbers) naming where it came from."""
    given = cfg.get("normalization")
    norm = dict(given) if given else stored
    try:
        percentiles(norm)
    except (TypeError, ValueError) as err:
        if given:
            raise UsageError(f"normalization={norm}: {err}") from err
        raise ValueError(
            f"{cfg.checkpoint}: the normalisation stored in the checkpoint ({norm}) is unusable: "
            f"{err}; pass normalization={{low: 1.0, high: 99.8}} to override it"
        ) from err
    return norm


def _chunked_targets(path: Path, targets: dict[str, Path], outputs: dict) -> dict[str, Path]:
    """Targets of a zarr input: no preview (not drawn block-wise yet); with
    ``outputs.into_input`` the label images go into the input's ``labels/`` group."""
    if not is_directory_format(path):
        if outputs.get("into_input"):
            raise UsageError(f"{path}: outputs.into_input needs an .ome.zarr input")
        return targets
    targets = {k: v for k, v in targets.items() if k != "preview"}
    if outputs.get("into_input"):
        if format_suffix(path) != ".ome.zarr":
            raise UsageError(f"{path}: outputs.into_input needs an .ome.zarr input")
        for kind in ("labels", "instances"):
            if kind in targets:
                targets[kind] = label_group_path(path, LABEL_NAMES[kind])
    return targets


def _complete(path: Path, targets: dict, model: SegmentationNetwork, options: Any) -> bool:
    if not all(t.exists() for t in targets.values()):  # zarr outputs are directories
        return False
    _, source, layout = open_input(path, model, options)
    spatial, classes = layout.spatial_shape(source.shape), int(model.num_classes)
    if is_directory_format(path):  # zarr stores, some named without a suffix (labels/unet-seg)
        try:
            return all(
                ZarrVolume(t).shape == ((classes, *spatial) if k == "probabilities" else spatial)
                for k, t in targets.items()
            )
        except (OSError, ValueError):  # a foreign or broken store: predict again
            return False
    return is_complete(targets, spatial, classes)


def predict(cfg: Any) -> dict:
    """Predict every input of ``cfg.input`` into ``cfg.output_dir``; returns the run summary.

    A file that cannot be read or predicted is reported by name and skipped; ``summary["failed"]``
    counts them. Complete existing outputs are kept unless ``cfg.overwrite``. Temporaries a killed
    run left in ``output_dir`` are removed first. On ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM
    where the CLI turns it into one) the file in progress leaves nothing behind, the summary is
    written with ``"interrupted": true``, and the interrupt goes on.

    Raises:
        UsageError: two inputs would write the same output, or no output is enabled.
    """
    started = time.time()
    model, stored = _load_model(cfg.checkpoint)
    norm = _normalization(cfg, stored)
    tuned = stored_tuning(cfg.checkpoint) if cfg.outputs.get("instances") else None
    options = PredictOptions.from_config(cfg, tuned)
    if tuned:
        log.info("instances: %s, tuned by unet-seg-tune (%s %.4f)", options.instances.method,
                 tuned.get("objective"), tuned.get("score", float("nan")))  # fmt: skip
    out_dir = Path(cfg.output_dir)
    outputs = dict(cfg.outputs)
    if not any(on for kind, on in outputs.items() if kind != "preview"):
        raise UsageError("no outputs enabled (outputs.labels/probabilities/instances)")
    # Our own outputs are not inputs, e.g. when output_dir is the input folder.
    files = [f for f in find_files(cfg.input) if not is_output(f, out_dir)]
    planned = plan_outputs(files, out_dir, outputs)
    plan = {f: _chunked_targets(f, targets, outputs) for f, targets in planned.items()}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(out_dir, err) from err
    sweep_stale_temporaries(out_dir, started)
    runner = ModelRunner(model, cfg.device, bool(cfg.tta), bool(cfg.amp), bool(cfg.cpu_bf16))
    entries, start, interrupted = [], time.perf_counter(), False
    bar = tqdm(
        files, desc="files", unit="file", disable=None if cfg.progress is None else not cfg.progress
    )
    block = BlockOptions.from_config(cfg)
    # Dask (when configured) starts only for chunked inputs, which run block by block.
    engine = make_engine(cfg.get("cluster")) if any(map(is_directory_format, files)) else None
    try:
        for path in bar:
            targets = plan[path]
            entry: dict[str, Any] = {
                "input": str(path),
                "outputs": [str(p) for kind, p in targets.items() if kind != "preview"],
            }
            if "preview" in targets:
                entry["preview"] = str(targets["preview"])
            try:
                if not cfg.overwrite and _complete(path, targets, model, options):
                    entry["status"] = "skipped"
                else:
                    entry.update(
                        predict_file(path, targets, model, runner, options, norm, block, engine)
                    )
                    entry["status"] = "ok"
            except KeyboardInterrupt:
                entry["status"], interrupted = "interrupted", True
            except Exception as err:  # one bad file must not stop the batch; it is reported by name
                # The reason goes to the summary and the CLI's line on stderr, not the log too.
                if isinstance(err, BlockFailures):
                    entry["blocks"] = err.counts
                entry.update(status="failed", error=f"{type(err).__name__}: {err}")
            entries.append(entry)
            log.info("%s: %s", path, entry["status"])
            if interrupted:
                break
    finally:
        if engine is not None:
            engine.close()
    summary = {
        "checkpoint": str(cfg.checkpoint),
        "output_dir": str(out_dir),
        "device": str(runner.device),
        "instances": asdict(options.instances) if cfg.outputs.get("instances") else None,
        "files": entries,
        "ok": sum(e["status"] == "ok" for e in entries),
        "skipped": sum(e["status"] == "skipped" for e in entries),
        "failed": sum(e["status"] == "failed" for e in entries),
        "interrupted": interrupted,
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_json_atomic(out_dir / "predict_summary.json", summary)
    if interrupted:
        raise KeyboardInterrupt
    return summary
