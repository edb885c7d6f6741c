"""SegmentationModule: valid-mode cropping, optimisers, and the checkpoint round trip."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from unet_seg.models import shapes
from unet_seg.training.module import SegmentationModule

TINY = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [4, 8],
        "padding": "valid", "norm": "batch", "dropout": 0.0, "inplane_pooling": False}  # fmt: skip


def _batches(n: int, size: int, spatial_dims: int = 2) -> list[dict[str, torch.Tensor]]:
    """Fake data-module samples: a bright square is class 1; label/weight as big as the image."""
    samples = []
    for i in range(n):
        image = torch.zeros((1,) + (size,) * spatial_dims)
        label = torch.zeros((size,) * spatial_dims, dtype=torch.int64)
        lo, hi = size // 4 + i % 3, 3 * size // 4
        region = (slice(lo, hi),) * spatial_dims
        image[(slice(None), *region)] = 1.0
        label[region] = 1
        image += 0.05 * torch.randn_like(image)
        samples.append({"image": image, "label": label, "weight": torch.ones(label.shape)})
    return samples


def _trainer(tmp_path, epochs: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
        enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )  # fmt: skip


def test_valid_mode_crops_label_and_weight_to_logits() -> None:
    size = shapes.smallest_valid_size(20, depth=2)
    module = SegmentationModule(model=TINY, loss={"ce_weight": 1.0, "dice_weight": 1.0})
    batch = {
        key: torch.stack([s[key] for s in _batches(2, size)])
        for key in ("image", "label", "weight")
    }
    loss, logits, label = module._shared_step(batch)
    out = module.model.output_shape((size, size))
    assert logits.shape == (2, 2, *out) and label.shape == (2, *out)
    assert out[0] == size - 16  # two levels: 4 + 2 * 4 + 4 voxels trimmed
    # The crop is the centre: the label's border of 8 voxels is dropped on every side.
    assert torch.equal(label, batch["label"][:, 8:-8, 8:-8])
    assert torch.isfinite(loss)


def test_optimizer_and_scheduler_factories() -> None:
    sgd = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.99)
    cosine = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=10)
    module = SegmentationModule(model=TINY, optimizer=sgd, scheduler=cosine)
    config = module.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD)
    assert config["optimizer"].defaults["momentum"] == 0.99
    assert isinstance(
        config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR
    )
    assert "optimizer" not in module.hparams and "scheduler" not in module.hparams
    assert isinstance(SegmentationModule(model=TINY).configure_optimizers(), torch.optim.Adam)


def test_checkpoint_round_trip_weights_only(tmp_path) -> None:
    size = shapes.smallest_valid_size(24, depth=2)
    samples = _batches(4, size)
    adam = functools.partial(torch.optim.Adam, lr=1e-2)
    module = SegmentationModule(
        model=TINY, loss={"ce_weight": 1.0, "dice_weight": 1.0}, optimizer=adam,
        normalization={"low": 2.0, "high": 99.0},
    )  # fmt: skip
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "best", monitor="val/dice", mode="max")
    last = ModelCheckpoint(dirpath=tmp_path / "last", filename="last", enable_version_counter=False)
    trainer = _trainer(tmp_path, 2, callbacks=[checkpoint, last])
    trainer.fit(module, DataLoader(samples, batch_size=2), DataLoader(samples, batch_size=2))
    path = checkpoint.best_model_path
    assert path and last.best_model_path == str(tmp_path / "last" / "last.ckpt")

    raw = torch.load(path, weights_only=True)  # only plain values and tensors inside
    assert raw["hyper_parameters"]["model"] == TINY
    assert raw["hyper_parameters"]["normalization"] == {"low": 2.0, "high": 99.0}

    # last.ckpt holds the weights the module ends with; the best may be an earlier epoch's.
    restored = SegmentationModule.load_from_checkpoint(
        last.best_model_path, map_location="cpu", weights_only=True
    )
    assert restored.hparams.model == TINY
    assert restored.hparams.normalization == {"low": 2.0, "high": 99.0}
    module.eval()
    restored.eval()
    image = torch.randn(2, 1, size, size)
    with torch.no_grad():
        assert torch.equal(module(image), restored(image))
    assert {"val/dice", "val/iou", "val/pixel_error", "val/rand_error", "val/vi", "val/loss",
            "train/loss_epoch"} <= set(trainer.callback_metrics)  # fmt: skip


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_overfits_a_tiny_set(tmp_path, spatial_dims: int) -> None:
    # The 3D case is kept small (a 4x4x4 output) so that it stays a fast test.
    size = shapes.smallest_valid_size(28 if spatial_dims == 2 else 20, depth=2)
    model = dict(TINY, spatial_dims=spatial_dims, features=[8, 16])
    samples = _batches(2, size, spatial_dims)
    module = SegmentationModule(
        model=model, loss={"ce_weight": 1.0, "dice_weight": 1.0},
        optimizer=functools.partial(torch.optim.Adam, lr=3e-2),
    )  # fmt: skip
    # Validated once, after the last of the 25 epochs: the figure the assertion reads.
    trainer = _trainer(tmp_path, 25, enable_checkpointing=False, log_every_n_steps=1,
                       check_val_every_n_epoch=25, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, DataLoader(samples, batch_size=2), DataLoader(samples, batch_size=2))
    assert trainer.current_epoch == 25 and "val/dice" in trainer.logged_metrics
    assert trainer.callback_metrics["val/dice"] > 0.9
