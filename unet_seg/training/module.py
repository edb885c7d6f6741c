"""The LightningModule: a U-Net, its loss and validation figures, built from plain config values.

Only plain values (dicts, numbers, strings) go into the hyperparameters, so a checkpoint restores
with ``SegmentationModule.load_from_checkpoint(path, weights_only=True)`` alone and loads with
``torch.load(..., weights_only=True)``. The optimizer and scheduler are Hydra ``_partial_``
factories used only for training and kept out of the hyperparameters.

Batches: ``{"image": (N, C, *spatial) float32, "label": (N, *spatial) int64,
"weight": (N, *spatial) float32}``. In valid mode the logits are smaller than the image, and the
label and weight are centre-cropped to them (the overlap-tile strategy of the paper).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from unet_seg.config import plain
from unet_seg.models import UNet
from unet_seg.models.blocks import center_crop
from unet_seg.normalization import DEFAULT_PERCENTILES
from unet_seg.training.losses import IGNORE_INDEX, SegmentationLoss
from unet_seg.training.metrics import SegmentationMetrics

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def crop_to(target: torch.Tensor, spatial_shape: torch.Size) -> torch.Tensor:
    """Centre-crop a ``(N, *spatial)`` label or weight map to ``spatial_shape``."""
    if target.shape[1:] == spatial_shape:
        return target
    return center_crop(target.unsqueeze(1), spatial_shape).squeeze(1)


class SegmentationModule(pl.LightningModule):
    """U-Net training, validation and prediction.

    Args:
        model: ``UNet`` keyword arguments (``conf/model/*.yaml``).
        loss: ``SegmentationLoss`` keyword arguments (``conf/loss/*.yaml``).
        optimizer: factory ``params -> Optimizer`` (Hydra ``_partial_``); Adam(1e-3) if ``None``.
        scheduler: factory ``optimizer -> LR scheduler`` (Hydra ``_partial_``) or ``None``.
        normalization: the intensity percentiles the data were normalised with, kept
            so that prediction normalises the same way.
        region_class: class whose connected components are the segments for Rand error and VI.
        scheduler_monitor: metric a ``ReduceLROnPlateau`` scheduler watches.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        loss: Mapping[str, Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        normalization: Mapping[str, float] | None = None,
        region_class: int = 1,
        scheduler_monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "model": plain(model),
                "loss": plain(loss) if loss is not None else {},
                "normalization": plain(normalization)
                if normalization is not None
                else dict(DEFAULT_PERCENTILES),
                "region_class": int(region_class),
                "scheduler_monitor": str(scheduler_monitor),
            }
        )
        self.model = UNet(**self.hparams.model)
        self.loss_fn = SegmentationLoss(**self.hparams.loss)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = SegmentationMetrics(
            self.model.num_classes,
            region_class,
            self.hparams.loss.get("ignore_index", IGNORE_INDEX),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, C, *spatial)`` image -> ``(N, K, *output_shape(spatial))`` logits."""
        return self.model(image)

    def _shared_step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        logits = self(batch["image"])
        out_shape = logits.shape[2:]
        label = crop_to(batch["label"], out_shape)
        weight = batch.get("weight")
        weight = crop_to(weight, out_shape) if weight is not None else None
        loss = self.loss_fn(logits, label, weight)
        return loss, logits, label

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._shared_step(batch)
        batch_size = batch["image"].shape[0]
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict:
        """Returns ``{"loss", "pred": (N, *out) int64, "label": (N, *out)}`` for the callbacks."""
        loss, logits, label = self._shared_step(batch)
        pred = logits.argmax(dim=1)
        self.val_metrics.update(pred, label)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=batch["image"].shape[0])  # fmt: skip
        return {"loss": loss, "pred": pred, "label": label}

    def on_validation_epoch_end(self) -> None:
        # Pooled over this process's share of the epoch; sync_dist averages across processes.
        for name, value in self.val_metrics.compute().items():
            self.log(f"val/{name}", value, prog_bar=name == "dice", sync_dist=True)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
        else:
            optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams.scheduler_monitor,
                "interval": "epoch",
            },
        }
