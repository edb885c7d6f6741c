"""What the "Segment" widget runs, without Qt: a napari layer's array through the same per-file
driver ``unet-seg-predict`` runs, so the labels equal the command's for the same input and model.

The layer's array is written to a temporary TIFF with the layer's scale as its spacing (the
spacing matters: anisotropic instance splitting measures distances in physical units) and
predicted by :func:`~unet_seg.prediction.driver.predict_file` with the options of
``conf/predict.yaml`` plus the widget's; a layer read from a zarr / OME-Zarr store is predicted
from the store itself (level 0), never copied. The outputs are read back and the temporary
folder removed.

Loading a model is the slow part of a small image, so :class:`ModelCache` keeps the last one,
keyed by its file's path, size and modification time (a re-exported file is loaded again).
Cancelling sets the process's stop request (:mod:`unet_seg.interrupts`), which the block loop
checks before each block.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.blockwise.run import BlockOptions
from unet_seg.config import config_dir
from unet_seg.inference.options import PredictOptions
from unet_seg.inference.runner import ModelRunner, RunnerOptions
from unet_seg.instances.object_table import read_object_table
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.io.files import is_directory_format
from unet_seg.io.zarr.store import ZarrVolume, is_zarr
from unet_seg.models.checkpoint import load_model_and_tuning
from unet_seg.models.protocol import SegmentationNetwork
from unet_seg.prediction.driver import predict_file
from unet_seg.prediction.outputs import plan_outputs

MODEL_SUFFIXES = (".ckpt", ".pt", ".onnx", ".bioimageio.zip")  # what the widget offers
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class SegmentSettings:
    """The widget's choices; everything else is ``conf/predict.yaml``'s default.

    ``tile_size``: None for the default tile; ``instances_method``: None for the model's tuned
    method (``unet-seg-tune``), else the default.
    """

    model: Path
    device: str = "auto"
    tile_size: int | None = None
    tta: bool = False
    instances: bool = False
    instances_method: str | None = None

    def overrides(self) -> list[str]:
        """These settings as ``unet-seg-predict`` command-line overrides."""
        args = [f"checkpoint={self.model}", f"device={self.device}", f"tta={self.tta}",
                f"outputs.instances={self.instances}", "outputs.preview=false",
                "progress=false"]  # fmt: skip
        if self.tile_size:
            args.append(f"tile_size={int(self.tile_size)}")
        if self.instances_method:
            args.append(f"instances.method={self.instances_method}")
        return args


@dataclass
class SegmentResult:
    """The outputs read back: ``labels`` ``(*spatial)`` class indices; with instances,
    ``instances`` ``(*spatial)`` object ids and ``objects`` their table (column -> values)."""

    labels: np.ndarray
    instances: np.ndarray | None = None
    objects: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class LoadedModel:
    network: SegmentationNetwork
    normalization: dict
    tuning: dict | None
    runners: dict[RunnerOptions, ModelRunner] = field(default_factory=dict)


class ModelCache:
    """The last model loaded, keyed by its file's resolved path, size and mtime, with a runner
    per device / TTA choice (moving the network to a device happens once)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()
        self.loads = 0  # how many times a file was actually read (tests check the cache)

    @staticmethod
    def key(path: str | os.PathLike) -> tuple:
        path = Path(path).resolve()
        if not path.exists():
            raise FileNotFoundError(f"model file {path} not found")
        stat = path.stat()
        return (str(path), stat.st_size, stat.st_mtime_ns)

    def get(self, path: str | os.PathLike) -> LoadedModel:
        """The model of ``path``, read again only when the file changed."""
        key = self.key(path)
        with self._lock:
            if key != self._key or self._loaded is None:
                self._loaded = LoadedModel(*load_model_and_tuning(path))
                self._key = key
                self.loads += 1
            return self._loaded

    def runner(self, loaded: LoadedModel, options: RunnerOptions) -> ModelRunner:
        with self._lock:
            if options not in loaded.runners:
                loaded.runners[options] = options.runner(loaded.network)
            return loaded.runners[options]


def predict_config(settings: SegmentSettings, source: Path, out_dir: Path) -> Any:
    """``conf/predict.yaml`` with the widget's settings, as ``unet-seg-predict`` composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from unet_seg.config import register_resolvers

    register_resolvers()
    overrides = [f"input={source}", f"output_dir={out_dir}", *settings.overrides()]
    with _HYDRA_LOCK:
        GlobalHydra.instance().clear()  # compose inside whoever else initialised Hydra
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("predict", overrides=overrides)


_HYDRA_LOCK = threading.Lock()  # Hydra's global state: one composition at a time


def zarr_source(path: str | None, shape: tuple[int, ...]) -> str | None:
    """The zarr / OME-Zarr store a layer of ``shape`` (level 0) shows whole, to predict from
    it rather than from a copy; None for files, and for a channel of a store split in layers."""
    if not path or not is_zarr(path):
        return None
    try:
        return path if ZarrVolume(path).shape == tuple(shape) else None
    except (OSError, ValueError):
        return None


def segment_steps(
    data: Any,
    scale: Sequence[float],
    settings: SegmentSettings,
    cache: ModelCache,
    source: str | os.PathLike | None = None,
) -> Iterator[str]:
    """Segment ``data`` (``(*spatial)`` or ``(C, *spatial)``, as the layer holds it) with
    ``scale`` (the spatial axes' voxel size); a generator that yields what it starts next
    (napari's worker shows it and may stop there) and returns a :class:`SegmentResult`.

    ``source``: the zarr / OME-Zarr store the layer was read from; predicted in place of
    ``data`` (which may be a lazy pyramid).
    """
    yield "loading the model"
    loaded = cache.get(settings.model)
    with tempfile.TemporaryDirectory(prefix="unet-seg-napari-") as tmp:
        if source is not None and is_directory_format(source):
            path = Path(source)
        else:
            yield "writing the layer"
            array = np.asarray(data)
            spatial = min(array.ndim, 3, len(scale)) if array.ndim > 2 else 2
            spacing = tuple(float(s) for s in scale[-spatial:])
            path = write_volume(Path(tmp) / "layer.tif", Volume(array, spacing=spacing))
        out_dir = Path(tmp) / "out"
        cfg = predict_config(settings, path, out_dir)
        running = RunnerOptions.from_config(cfg)
        runner = cache.runner(loaded, running)
        tuned = loaded.tuning if settings.instances else None
        options = PredictOptions.from_config(cfg, tuned)
        norm = dict(cfg.normalization) if cfg.get("normalization") else loaded.normalization
        targets = plan_outputs([path], out_dir, dict(cfg.outputs))[path]
        out_dir.mkdir()
        yield "predicting"
        predict_file(path, targets, loaded.network, runner, options, norm,
                     BlockOptions.from_config(cfg, running))  # fmt: skip
        yield "reading the result"
        result = SegmentResult(np.asarray(read_volume(targets["labels"]).array))
        if "instances" in targets:
            result.instances = np.asarray(read_volume(targets["instances"]).array)
            if "objects" in targets and targets["objects"].is_file():
                result.objects = read_object_table(targets["objects"])
    return result


def segment(
    data: Any, scale: Sequence[float], settings: SegmentSettings, cache: ModelCache | None = None,
    source: str | os.PathLike | None = None,
) -> SegmentResult:  # fmt: skip
    """:func:`segment_steps` run to the end (no progress, no cancel)."""
    steps = segment_steps(data, scale, settings, cache or ModelCache(), source)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
