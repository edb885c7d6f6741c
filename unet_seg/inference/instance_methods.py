"""Instance post-processing methods and their parameters, shared by predict and the tuning.

- ``cc``: connected components of the class map's ``foreground_class`` voxels;
- ``distance``: the same, touching objects split by a watershed on the distance transform
  (seeds at least ``min_distance`` voxels apart);
- ``seeded``: a watershed from the interior cores over the foreground probability
  (:mod:`unet_seg.inference.seeded`), for boundary-aware networks (``data.target=boundary``).

Every method drops objects smaller than ``min_size`` voxels. Parameters are plain dicts (they are
stored in checkpoints, which load with ``weights_only=True``): :data:`DEFAULTS` completed by the
tuned values of a checkpoint and then by the user's explicit settings (:func:`resolve`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unet_seg.inference.postprocess import instance_labels
from unet_seg.inference.seeded import foreground_and_interior, seeded_watershed

METHODS = ("cc", "distance", "seeded")
# Which parameters each method reads (the class roles are shared).
METHOD_PARAMS = {
    "cc": ("min_size",),
    "distance": ("min_distance", "min_size"),
    "seeded": ("foreground_threshold", "seed_threshold", "min_size"),
}
CLASS_ROLES = ("foreground_class", "background_class", "interior_class")
DEFAULTS: dict[str, Any] = {
    "method": "distance",  # what predict did before the seeded watershed existed
    "foreground_class": 1,  # cc / distance: the class whose voxels form objects
    "background_class": 0,  # seeded: foreground probability = 1 - p[background_class]
    "interior_class": 1,  # seeded: seeds from p[interior_class]
    "min_size": 10,  # voxels; smaller objects are noise
    "min_distance": 5,  # voxels between two object centres for them to be split
    "foreground_threshold": 0.5,
    "seed_threshold": 0.5,
}


def resolve(
    tuned: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters for one run: :data:`DEFAULTS`, then a checkpoint's tuned ``{"method", "roles",
    "methods": {method: params}}`` (the chosen method's values), then ``overrides`` (entries that
    are ``None`` are left to the others). Tuned values of the method actually used apply even if
    the user picked another method than the tuned best."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    params = dict(DEFAULTS)
    if tuned:
        params.update(tuned.get("roles", {}))
        params["method"] = tuned.get("method", params["method"])
    method = overrides.get("method", params["method"])
    if method not in METHODS:
        raise ValueError(f"instances.method must be one of {METHODS}, got {method!r}")
    if tuned:
        params.update(tuned.get("methods", {}).get(method, {}))
    params.update(overrides)
    params["method"] = method
    return params


def segment(
    probs: np.ndarray, params: Mapping[str, Any], spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Object ids int32 ``(*spatial)`` from class probabilities ``(K, *spatial)`` by
    ``params["method"]``; ``spacing`` (voxel size) makes the distance watershed anisotropic."""
    method = params["method"]
    if method == "seeded":
        return seeded_from(*foreground_and_interior(
            probs, int(params["background_class"]), int(params["interior_class"])
        ), params)  # fmt: skip
    return from_class_map(probs.argmax(axis=0), params, spacing)


def from_class_map(
    labels: np.ndarray, params: Mapping[str, Any], spacing: Sequence[float] | None = None
) -> np.ndarray:
    """``cc`` or ``distance`` instances of a class map ``(*spatial)``."""
    if params["method"] not in ("cc", "distance"):
        raise ValueError(f"method {params['method']!r} needs probabilities, not a class map")
    return instance_labels(
        labels == int(params["foreground_class"]), params["method"] == "distance",
        int(params["min_distance"]), int(params["min_size"]), spacing,
    )  # fmt: skip


def seeded_from(
    foreground: np.ndarray, interior: np.ndarray, params: Mapping[str, Any]
) -> np.ndarray:
    """``seeded`` instances from foreground and interior probabilities ``(*spatial)``."""
    return seeded_watershed(
        foreground, interior, float(params["foreground_threshold"]),
        float(params["seed_threshold"]), int(params["min_size"]),
    )  # fmt: skip
