"""Training callbacks and run artifacts: validation overlays, the published best checkpoint,
``metrics.json``.

Files are written under a temporary name in the destination folder and renamed when complete,
so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from unet_seg.models.blocks import center_crop


def _replace_atomic(write, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file in ``dst``'s folder and a rename."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint to publish not found: {src}")
    return _replace_atomic(lambda tmp: shutil.copyfile(src, tmp), dst)


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON (NaN written as ``null``) to ``path`` atomically."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        return value

    text = json.dumps(clean(dict(data)), indent=2, sort_keys=True) + "\n"
    return _replace_atomic(lambda tmp: tmp.write_text(text), Path(path))


def render_overlay(image: torch.Tensor, pred: torch.Tensor, label: torch.Tensor) -> np.ndarray:
    """An RGB picture ``(3, H, 2W)`` in [0, 1]: the image, and beside it the image with the
    prediction in red and the label in green (agreement shows yellow).

    ``image`` ``(C, *spatial)`` (centre-cropped to the prediction here), ``pred`` and ``label``
    ``(*spatial)``; 3D shows the middle slice of the first axis; class 0 counts as background.
    """
    image = center_crop(image[None].float(), pred.shape)[0, 0]
    if image.ndim == 3:
        middle = image.shape[0] // 2
        image, pred, label = image[middle], pred[middle], label[middle]
    gray = image.cpu().numpy()
    low, high = np.percentile(gray, (1, 99))
    gray = np.clip((gray - low) / max(high - low, 1e-8), 0, 1)
    pred_fg = (pred.cpu().numpy() > 0).astype(np.float32)
    label_fg = (label.cpu().numpy() > 0).astype(np.float32)
    overlay = np.stack([gray * 0.6 + 0.4 * pred_fg, gray * 0.6 + 0.4 * label_fg, gray * 0.6])
    return np.concatenate([np.stack([gray] * 3), overlay], axis=2).astype(np.float32)


class ValidationOverlays(pl.Callback):
    """Logs the first ``num_images`` validation images with prediction and label to TensorBoard."""

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1) -> None:
        if num_images < 0 or every_n_epochs < 1:
            raise ValueError("num_images must be >= 0 and every_n_epochs >= 1")
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self._pictures: list[np.ndarray] = []

    def _active(self, trainer: pl.Trainer) -> bool:
        return (
            not trainer.sanity_checking
            and trainer.current_epoch % self.every_n_epochs == 0
            and any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers)
        )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pictures = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if len(self._pictures) >= self.num_images or not self._active(trainer):
            return
        if not isinstance(outputs, Mapping) or "pred" not in outputs:
            return
        for image, pred, label in zip(
            batch["image"], outputs["pred"], outputs["label"], strict=True
        ):
            if len(self._pictures) < self.num_images:
                self._pictures.append(render_overlay(image, pred, label))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active(trainer):
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for i, picture in enumerate(self._pictures):
                    logger.experiment.add_image(
                        f"val/overlay_{i}", picture, trainer.global_step, dataformats="CHW"
                    )
        self._pictures = []
