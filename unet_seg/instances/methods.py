"""Instance post-processing methods and their options, shared by predict and the tuning.

- ``cc``: connected components of the class map's ``foreground_class`` voxels;
- ``distance``: the same, touching objects split by a watershed on the distance transform
  (seeds at least ``min_distance`` voxels apart);
- ``seeded``: a watershed from the interior cores over the foreground probability
  (:mod:`unet_seg.instances.seeded`), for boundary-aware networks (``data.target=boundary``).

Every method drops objects smaller than ``min_size`` voxels. The options of a run are the
defaults of :class:`InstanceOptions`, completed by the values a checkpoint was tuned to
(``unet-seg-tune``) and then by the user's explicit settings (:func:`resolve`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from unet_seg.config import real, whole
from unet_seg.errors import UsageError
from unet_seg.instances.seeded import foreground_and_interior, seeded_watershed
from unet_seg.instances.watershed import instance_labels
from unet_seg.models.bioimageio_package import is_bioimageio_package
from unet_seg.models.checkpoint import load_model_and_tuning, read_checkpoint
from unet_seg.models.exported import TUNED_KEY, is_exported

log = logging.getLogger(__name__)

METHODS = ("cc", "distance", "seeded")
# TUNED_KEY: where unet-seg-tune stores its result in a checkpoint (and exports carry it)
# The options each method reads, besides the class roles (what the tuning searches).
METHOD_PARAMS = {
    "cc": ("min_size",),
    "distance": ("min_distance", "min_size"),
    "seeded": ("foreground_threshold", "seed_threshold", "min_size"),
}


@dataclass(frozen=True)
class InstanceOptions:
    """How instances are made from a prediction.

    ``foreground_class``: the class whose voxels are objects (``cc``, ``distance``);
    ``background_class`` / ``interior_class``: ``seeded`` floods ``1 - p[background_class]`` from
    seeds of ``p[interior_class]``; ``anisotropic``: distances in physical units, from the
    input's voxel spacing; ``halo``: see :mod:`unet_seg.blockwise.flood`.
    """

    method: str = "distance"  # what predict did before the seeded watershed existed
    foreground_class: int = 1
    background_class: int = 0
    interior_class: int = 1
    min_size: int = 10  # voxels; smaller objects are noise
    min_distance: int = 5  # voxels between two object centres for them to be split
    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    anisotropic: bool = True
    # zarr inputs (block-wise): voxels a block's watershed reads around its region; 0: automatic
    halo: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"instances.method must be one of {METHODS}, got {self.method!r}")
        if self.halo < 0:
            raise UsageError(f"instances.halo must be >= 0 voxels (0: automatic), got {self.halo}")
        if self.min_size < 0:
            raise UsageError(f"instances.min_size must be >= 0 voxels, got {self.min_size}")
        if self.min_distance < 1:
            raise UsageError(f"instances.min_distance must be >= 1 voxel, got {self.min_distance}")
        for name in ("foreground_threshold", "seed_threshold"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"instances.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def needs_probabilities(self) -> bool:
        """``seeded`` works on probabilities; the others on the label map."""
        return self.method == "seeded"

    def check_classes(self, num_classes: int) -> None:
        """Raise UsageError where a class this method reads is not one of the model's
        ``num_classes`` (``cc`` of a class no voxel has would be silently empty)."""
        names = ("background_class", "interior_class") if self.needs_probabilities else (
            "foreground_class",)  # fmt: skip
        for name in names:
            value = getattr(self, name)
            if not 0 <= value < num_classes:
                raise UsageError(f"instances.{name}={value}, but the model predicts classes "
                                 f"0..{num_classes - 1}")  # fmt: skip


def stored_tuning(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The tuned post-processing stored in a checkpoint by ``unet-seg-tune``, or None; for an
    exported ``.onnx`` / ``.pt`` network, what its export carried over."""
    if is_exported(checkpoint) or is_bioimageio_package(checkpoint):
        return load_model_and_tuning(checkpoint)[2]
    return read_checkpoint(checkpoint).get(TUNED_KEY)


def warn_if_tuned_otherwise(tuned: Mapping[str, Any], tta: bool) -> bool:
    """Warn (and return True) when the stored tuning was made with the other TTA setting than
    this run's ``tta``: TTA smooths the probabilities, so the thresholds chosen on one kind may
    not fit the other. A tuning stored before it recorded its TTA says nothing."""
    if "tta" not in tuned or bool(tuned["tta"]) == tta:
        return False
    log.warning("the instance post-processing was tuned with tta=%s, this run predicts with "
                "tta=%s: run unet-seg-tune tta=%s for thresholds that fit these probabilities",
                str(bool(tuned["tta"])).lower(), str(tta).lower(), str(tta).lower())  # fmt: skip
    return True


_TYPES = {f.name: f.type for f in fields(InstanceOptions)}
_CASTS = {"str": str, "int": int, "float": float, "bool": bool}


def resolve(
    tuned: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> InstanceOptions:
    """The options of one run: the defaults, then a checkpoint's tuned ``{"method", "roles",
    "methods": {method: values}}`` (for the method used, even if the user picked another than
    the tuned best), then ``overrides`` whose values are not ``None``."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(_TYPES)
    if unknown:
        raise UsageError(f"unknown instance options {sorted(unknown)}; known: {sorted(_TYPES)}")
    values = asdict(InstanceOptions())
    tuned = tuned or {}
    values.update(tuned.get("roles", {}))
    method = overrides.get("method", tuned.get("method", values["method"]))
    values.update(tuned.get("methods", {}).get(method, {}))
    values.update(overrides)
    values["method"] = method
    return InstanceOptions(**{k: _cast(k, v) for k, v in values.items()})


def _cast(name: str, value: Any) -> Any:
    """``value`` of ``instances.<name>`` as the option's type (UsageError naming it if not)."""
    kind = _TYPES[name]
    if kind == "int":
        return whole(f"instances.{name}", value)
    if kind == "float":
        return real(f"instances.{name}", value)
    return _CASTS[kind](value)


def segment(
    probs: np.ndarray, options: InstanceOptions, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Object ids int32 ``(*spatial)`` from class probabilities ``(K, *spatial)``; ``spacing``
    (voxel size) makes the distance watershed anisotropic when ``options.anisotropic``."""
    if options.needs_probabilities:
        fg, interior = foreground_and_interior(
            probs, options.background_class, options.interior_class
        )
        return seeded_from(fg, interior, options)
    return from_class_map(probs.argmax(axis=0), options, spacing)


def from_class_map(
    labels: np.ndarray, options: InstanceOptions, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """``cc`` or ``distance`` instances of a class map ``(*spatial)``."""
    if options.needs_probabilities:
        raise ValueError(f"method {options.method!r} needs probabilities, not a class map")
    return instance_labels(
        labels == options.foreground_class, options.method == "distance", options.min_distance,
        options.min_size, spacing if options.anisotropic else None,
    )  # fmt: skip


def seeded_from(foreground: np.ndarray, interior: np.ndarray, options: InstanceOptions):
    """``seeded`` instances (int32) from foreground and interior probabilities ``(*spatial)``."""
    return seeded_watershed(
        foreground, interior, options.foreground_threshold, options.seed_threshold,
        options.min_size,
    )  # fmt: skip
