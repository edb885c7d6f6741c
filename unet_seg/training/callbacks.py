"""Training callbacks: validation overlays in TensorBoard."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from unet_seg.models.blocks import center_crop


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
