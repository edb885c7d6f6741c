"""``SegmentationDataModule``: the Lightning data module built by Hydra from ``conf/data/*.yaml``.

Batches: ``"image"`` float32 ``(N, C, *patch)``, ``"label"`` int64 ``(N, *patch)``
(class indices, ``ignore_index`` marks voxels to ignore), ``"weight"`` float32 ``(N, *patch)``.
Label and weight have the image's spatial size; a valid-mode model crops them to its output.
The settings, their checks, the split and the regions are :class:`TrainingData`'s; this module
adds the datasets and loaders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from unet_seg.data.dataset import Augment, RandomPatchDataset, WindowDataset, init_worker
from unet_seg.data.training_data import TrainingData
from unet_seg.io.files import PathSpec


class SegmentationDataModule(pl.LightningDataModule):
    """Image/label pairs -> random training patches and fixed validation windows.

    Args:
        images, labels: a file, a folder, a glob or a list of these; pairs match by file stem.
        augment: ``augment(sample, rng) -> sample``, or None.
        pin_memory: DataLoader setting (``num_workers``, checked by :class:`TrainingData`, is
            the other; workers persist across epochs when > 0).
        settings: the other keyword arguments of :class:`TrainingData` (split, labels, target,
            patch sizes, ...), all saved as hyperparameters: a checkpoint finds its data again.
    """

    def __init__(
        self,
        images: PathSpec,
        labels: PathSpec,
        augment: Augment | Mapping | None = None,
        pin_memory: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.data = TrainingData(images, labels, **settings)
        self.save_hyperparameters({**self.data.cfg, "pin_memory": pin_memory})
        self.cfg = {**self.data.cfg, "pin_memory": pin_memory}
        self.spatial_dims = self.data.spatial_dims
        self.patch_size, self.val_size = self.data.patch_size, self.data.val_size
        self.augment = None if isinstance(augment, Mapping) and not augment else augment
        self.train_set: RandomPatchDataset | None = None
        self.val_set: WindowDataset | None = None

    @property
    def num_classes(self) -> int:
        """Classes of the training target (:attr:`TrainingData.num_classes`)."""
        return self.data.num_classes

    @property
    def in_channels(self) -> int:
        """Channels of the images (:attr:`TrainingData.in_channels`)."""
        return self.data.in_channels

    @property
    def lazy(self) -> bool | None:
        """Whether patches are read from disk box by box (decided in setup when ``"auto"``)."""
        return self.data.lazy

    def prepare_data(self) -> None:
        """Checks that the inputs exist (keeps no state, as Lightning requires)."""
        self.data.check_inputs_exist()

    def validation_regions(self) -> list:
        """:meth:`TrainingData.validation_regions`."""
        return self.data.validation_regions()

    def setup(self, stage: str | None = None) -> None:
        """Loads the images once, or opens them lazily (``lazy``), and builds the datasets (the
        same for every stage)."""
        if self.train_set is not None:
            return
        c = self.cfg
        train_pairs, val_pairs = self.data.split()
        if self.data.lazy is None:
            unique = {str(p): p for p in [*train_pairs, *val_pairs]}
            self.data.lazy = self.data.choose_lazy(list(unique.values()))
        train_regions = self.data.regions(train_pairs, "train")
        self.data.check_classes(train_regions)
        self.train_set = RandomPatchDataset(
            train_regions,
            self.patch_size,
            c["samples_per_epoch"],
            augment=self.augment,
            foreground_prob=c["foreground_prob"],
            foreground_classes=c["foreground_classes"],
            pad_mode=c["pad_mode"],
        )
        self.val_set = WindowDataset(
            self.data.regions(val_pairs, "val"),
            self.val_size,
            c["val_mode"],
            pad_mode=c["pad_mode"],
        )

    def _loader(self, dataset: Any, shuffle: bool) -> DataLoader:
        workers = int(self.cfg["num_workers"])
        return DataLoader(
            dataset,
            batch_size=self.cfg["batch_size"],
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=self.cfg["pin_memory"],
            persistent_workers=workers > 0,
            worker_init_fn=init_worker if workers > 0 else None,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, shuffle=False)  # items are random already

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, shuffle=False)
