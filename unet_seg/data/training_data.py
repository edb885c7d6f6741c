"""The training data without Lightning: settings checked, files split, regions read.

:class:`TrainingData` is what :class:`~unet_seg.data.datamodule.SegmentationDataModule` batches
and what ``unet-seg-tune`` reads a checkpoint's validation images with (loading the tuner
then loads no Lightning). Regions: ``image`` float32 ``(C, *spatial)``, ``label`` int
``(*spatial)`` (class indices, ``ignore_index`` marks voxels to ignore).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.config import plain, whole
from unet_seg.data.boundary import BOUNDARY_CLASSES, TARGETS, derive_target
from unet_seg.data.dataset import PatchSource
from unet_seg.data.folds import FoldSpec, slab_regions, split_pairs
from unet_seg.data.labels import OBJECTS, check_label_map, check_training_classes
from unet_seg.data.lazy_regions import TargetRule, open_regions
from unet_seg.data.pairs import pair_files, pair_name
from unet_seg.data.patches import PAD_MODES, check_patch_size
from unet_seg.data.regions import Region, build_regions
from unet_seg.data.weightmap import add_weight_maps
from unet_seg.errors import UsageError
from unet_seg.io import open_volume
from unet_seg.io.files import PathSpec, files_by_key, find_files

log = logging.getLogger(__name__)

# Images above this many voxels together (512 MiB as float32) are read patch by patch by default.
LAZY_VOXELS = 2**27


class TrainingData:
    """The training data settings, checked, and what they describe: the split into training and
    validation files and the regions (images with their targets) read from them.

    Args:
        images, labels: a file, a folder, a glob or a list of these; pairs match by file stem.
        spatial_dims: 2 or 3; 2 on 3D stacks trains on their slices.
        num_classes: after ``label_map`` labels must be in ``[0, num_classes)`` or ``ignore_index``.
        patch_size: training patch, ``spatial_dims`` entries (an int means all axes).
        batch_size: patches per batch (training and validation).
        samples_per_epoch: random training patches per epoch.
        val_images, val_labels: separate validation files; otherwise split off the training files:
        val_names: stems of the files to validate on (split by file), or
        val_slices: ``[start, stop)`` z-slices of every volume to validate on (split by slice), or
        val_fraction: the last ``ceil(fraction * n)`` files validate (default split).
        val_mode: ``"grid"`` windows covering each validation image, or ``"whole"``: one window
            per image, centred, cropped/mirror-padded to ``val_size``.
        val_size: validation window size (default ``patch_size``).
        label_map: stored label value -> class index, e.g. ISBI ``{255: 0, 0: 1}``; or
            ``"objects"``: the labels are object ids (Cellpose/StarDist masks), every id class
            1 and the ids the instances (unless ``instances`` names other files).
        ignore_index: label value the loss ignores; allowed in the labels.
        instances: instance label files (like ``labels``) for the weight map's object distances
            and the boundary target's objects.
        target: ``"classes"`` trains on the label classes; ``"boundary"`` on background (0),
            object interior (1) and object boundary (2) derived from the instances, or from the
            connected components of ``object_class`` (``unet_seg.data.boundary``); training
            then gives the model 3 classes (:attr:`num_classes`).
        boundary_width: boundary thickness in voxels of the finest axis (spacing-aware).
        object_class: the class whose objects a boundary target outlines (0 for ISBI cells).
        weight_map: ``unet_weight_map`` keyword arguments (``{w0: 10, sigma: 5}``), or None (ones).
        foreground_prob: probability of centring a training patch on a foreground voxel.
        foreground_classes: classes that count as foreground (default: every class > 0).
        normalization: ``{low, high}`` percentiles (must match the module's).
        pad_mode: ``numpy.pad`` mode beyond image borders (``reflect`` = overlap-tile mirroring).
        num_workers: the loaders' worker processes (checked here, used by the data module).
        lazy: read patches from disk box by box (:mod:`unet_seg.data.lazy_regions`) instead of
            loading whole images: ``True``, ``False``, or ``"auto"``: lazy when the images hold
            more than ``LAZY_VOXELS`` voxels together.
        cv: ``{folds, fold, seed, test_names}``: cross-validation folds replace the validation
            split (:mod:`unet_seg.data.folds`); None: the split above.
    """

    def __init__(
        self,
        images: PathSpec,
        labels: PathSpec,
        spatial_dims: int = 2,
        num_classes: int = 2,
        patch_size: int | Sequence[int] = 188,
        batch_size: int = 4,
        samples_per_epoch: int = 64,
        val_images: PathSpec | None = None,
        val_labels: PathSpec | None = None,
        val_names: Sequence[str] | None = None,
        val_slices: Sequence[int] | None = None,
        val_fraction: float = 0.2,
        val_mode: str = "grid",
        val_size: int | Sequence[int] | None = None,
        label_map: Mapping[Any, int] | str | None = None,
        ignore_index: int | None = -1,
        instances: PathSpec | None = None,
        target: str = "classes",
        boundary_width: float = 1.0,
        object_class: int = 1,
        weight_map: Mapping[str, Any] | None = None,
        foreground_prob: float = 0.0,
        foreground_classes: Sequence[int] | None = None,
        normalization: Mapping[str, float] | None = None,
        pad_mode: str = "reflect",
        num_workers: int = 0,
        lazy: bool | str = "auto",
        cv: Mapping[str, Any] | None = None,
    ) -> None:
        settings = {k: v for k, v in locals().items() if k != "self"}  # the arguments, first
        self.spatial_dims = spatial_dims
        self.patch_size = check_patch_size(patch_size, spatial_dims)
        self.val_size = check_patch_size(val_size or self.patch_size, spatial_dims)
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if sum(x is not None for x in (val_images, val_names, val_slices)) > 1:
            raise ValueError("choose one of val_images, val_names and val_slices")
        if (val_images is None) != (val_labels is None):
            raise ValueError("val_images and val_labels go together")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if lazy not in (True, False, "auto"):
            raise ValueError(f"lazy must be true, false or auto, got {lazy!r}")
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                   ("samples_per_epoch", samples_per_epoch, 1)):  # fmt: skip
            whole(name, value, least)
        if not isinstance(boundary_width, int | float) or not 0 < boundary_width < math.inf:
            raise ValueError(f"boundary_width must be a number > 0 (voxels of the finest axis), "
                             f"got {boundary_width!r}")  # fmt: skip
        if not 0 <= object_class < num_classes:
            raise ValueError(f"object_class must be one of the classes 0..{num_classes - 1}, "
                             f"got {object_class}")  # fmt: skip
        check_label_map(label_map)
        if label_map == OBJECTS and object_class != 1:
            raise ValueError(f"label_map={OBJECTS} makes the objects class 1, but object_class "
                             f"is {object_class}")  # fmt: skip
        self.folds = None if cv is None else FoldSpec.from_config(cv)
        if self.folds is not None and val_images is not None:
            raise UsageError("cv.folds splits data.images into folds; set data.val_images=null "
                             "(cv.test_names keeps a test split out of every fold)")  # fmt: skip
        if self.folds is not None and (val_names is not None or val_slices is not None):
            log.info("cv.folds=%d replaces the data's val_names / val_slices", self.folds.folds)
        self.slabs = False  # fewer cases than folds: split() found it, regions() cuts slabs
        self.cfg = {k: plain(v) for k, v in settings.items()}
        if cv is None:
            del self.cfg["cv"]  # hyperparameters as they were before folds
        self.lazy: bool | None = None if lazy == "auto" else bool(lazy)

    @property
    def num_classes(self) -> int:
        """Classes of the training target, which the model must output: the label classes, or
        background / interior / boundary for ``target="boundary"``."""
        if self.cfg["target"] == "boundary":
            return BOUNDARY_CLASSES
        return int(self.cfg["num_classes"])

    @property
    def in_channels(self) -> int:
        """Channels of the images, from the file headers: the number of channel files, or the
        leading axis when the image has one axis more than its label. Every image, validation
        files included, must have the first one's: ``ValueError`` naming the first that has not
        (a folder mixing grey and colour images would otherwise fail in the first validation,
        naming no file)."""
        pairs = pair_files(self.cfg["images"], self.cfg["labels"])
        if self.cfg["val_images"] is not None:
            pairs += pair_files(self.cfg["val_images"], self.cfg["val_labels"])

        def file_of(image: Path | tuple[Path, ...]) -> Path:
            return image if isinstance(image, Path) else image[0]

        channels = _channels(*pairs[0])
        for image, label in pairs[1:]:
            found = _channels(image, label)
            if found != channels:
                raise ValueError(
                    f"{file_of(image)}: {found} channel(s), but {file_of(pairs[0][0])} has "
                    f"{channels}: every image must have the same channels (grey and colour "
                    "images mixed? convert them to one kind)"
                )
        return channels

    def check_inputs_exist(self) -> None:
        """``FileNotFoundError`` naming the first input that does not exist."""
        for key in ("images", "labels", "val_images", "val_labels", "instances"):
            if self.cfg[key] is not None:
                find_files(self.cfg[key])

    def split(self) -> tuple[list, list]:
        """(train pairs, val pairs) of ``(image, label)`` paths."""
        c = self.cfg
        pairs = pair_files(c["images"], c["labels"])
        if self.folds is not None:
            train, val, self.slabs = split_pairs(pairs, self.folds)
            return train, val
        if c["val_images"] is not None:
            return pairs, pair_files(c["val_images"], c["val_labels"])
        if c["val_slices"] is not None:
            return pairs, pairs
        if c["val_names"] is not None:
            names = set(c["val_names"])
            missing = names - {pair_name(*p) for p in pairs}
            if missing:
                raise ValueError(
                    f"val_names {sorted(missing)} are not among the files {c['images']}"
                )
            return [p for p in pairs if pair_name(*p) not in names], [
                p for p in pairs if pair_name(*p) in names
            ]
        n_val = int(-(-c["val_fraction"] * len(pairs) // 1))
        if not 0 < n_val < len(pairs):
            raise ValueError(
                f"{c['images']}: cannot hold out {c['val_fraction']:.0%} of {len(pairs)} file(s) "
                "for validation; set val_slices, val_names or val_images"
            )
        return pairs[:-n_val], pairs[-n_val:]

    def regions(self, pairs: list, role: str, derive: bool = True) -> list[PatchSource]:
        c = self.cfg
        instances = None
        if c["instances"] is not None:
            by_stem = files_by_key(find_files(c["instances"]))
            instances = [by_stem.get(pair_name(*pair)) for pair in pairs]
        elif c["label_map"] == OBJECTS:  # the object ids are the instances
            instances = [label for _, label in pairs]
        val_slices = None if self.folds is not None else c["val_slices"]  # folds split instead
        if self.slabs and self.lazy:
            raise UsageError(f"cv.folds={self.folds.folds} with fewer cases cuts the images into "
                             "slabs, which needs them in memory: set data.lazy=false")  # fmt: skip
        if derive and self.lazy:
            rule = TargetRule(
                c["target"],
                c["object_class"],
                c["boundary_width"],
                c["ignore_index"],
                c["weight_map"],
            )
            lazy = open_regions(
                pairs,
                self.spatial_dims,
                c["num_classes"],
                role,
                rule,
                val_slices=val_slices,
                instances=instances,
                label_map=c["label_map"],
                normalization=c["normalization"],
            )
            for region in lazy:  # checks every label now, and before workers copy the regions
                region.scanned(c["foreground_classes"])
                region.close()
            return list(lazy)
        regions = build_regions(
            pairs,
            self.spatial_dims,
            c["num_classes"],
            role,
            val_slices=val_slices,
            instances=instances,
            label_map=c["label_map"],
            ignore_index=c["ignore_index"],
            normalization=c["normalization"],
        )
        for region in regions if derive else ():
            region.label = derive_target(
                region.label, c["target"], region.instances, c["object_class"],
                c["boundary_width"], region.spacing, c["ignore_index"],
            )  # fmt: skip
        if derive:
            add_weight_maps(regions, c["weight_map"])
        if self.slabs:  # after the targets and weights, which see the whole image
            return slab_regions(regions, self.folds, role)
        return list(regions)

    def choose_lazy(self, pairs: list) -> bool:
        """``lazy`` as set, or for ``"auto"`` whether the images exceed ``LAZY_VOXELS``."""
        if self.cfg["lazy"] != "auto":
            return bool(self.cfg["lazy"])
        voxels = 0
        for image, _ in pairs:
            for path in (image,) if isinstance(image, Path) else image:
                voxels += math.prod(open_volume(path).shape)  # headers only
        return voxels > LAZY_VOXELS

    def validation_regions(self) -> list[Region]:
        """The whole validation images with their class labels and instances (no boundary
        target, no weight map), in memory: what post-processing is tuned on."""
        return self.regions(self.split()[1], "val", derive=False)  # type: ignore[return-value]

    def check_classes(self, regions: list[PatchSource]) -> None:
        """``ValueError`` when the training targets hold fewer than two classes; a warning
        naming the classes they lack."""
        c = self.cfg
        counts = np.zeros(0, np.int64)
        for region in regions:
            if isinstance(region, Region):
                labelled = region.label >= 0
                if c["ignore_index"] is not None:
                    labelled &= region.label != c["ignore_index"]
                found = np.bincount(region.label[labelled].ravel())
            else:  # lazy: the counts of the label scan _regions made
                found = region.scanned(c["foreground_classes"]).counts.copy()
                if c["ignore_index"] is not None and 0 <= c["ignore_index"] < len(found):
                    found[c["ignore_index"]] = 0
            counts = np.pad(counts, (0, max(len(found) - len(counts), 0)))
            counts[: len(found)] += found
        absent = check_training_classes(counts, self.num_classes, str(c["labels"]))
        if absent:
            log.warning("%s: no training voxel is class %s; the network will not learn %s",
                        c["labels"], absent, "it" if len(absent) == 1 else "them")  # fmt: skip


def _channels(image: Path | tuple[Path, ...], label: Path) -> int:
    """Channels of one pair's image, from the headers (see :attr:`TrainingData.in_channels`)."""
    if not isinstance(image, Path):
        return len(image)
    shape = open_volume(image).shape
    return int(shape[0]) if len(shape) == len(open_volume(label).shape) + 1 else 1
