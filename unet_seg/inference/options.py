"""How one file is predicted: the options of ``conf/predict.yaml`` as a typed value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from unet_seg.config import real, whole
from unet_seg.errors import UsageError
from unet_seg.inference.postprocess import PROBABILITY_DTYPES
from unet_seg.inference.tiling import BLEND_MODES
from unet_seg.instances.methods import InstanceOptions, resolve

DEFAULT_TILE = {2: 512, 3: 96}  # output region per window; bigger tiles waste less margin
# A same-padding 3D network has no margin to waste, so its default window is sized by memory:
# first-level features x window voxels. On 2 CPU cores (bench_inference_3d, 2026-12-03) a
# (64, 48, 48) window of a 16-feature net ran 1.8x MONAI's throughput at 0.48x its peak RSS,
# a (64, 80, 80) one 2.1x at 0.65x: oneDNN keeps its speed on small windows, memory does not.
SAME_3D_WINDOW_BUDGET = 16 * 64 * 48 * 48
# Wider nets: the window grows with the square root of the first-level features (MONAI's memory
# grows with the width too, and a fixed part does not), its sides on a multiple of 16 (oneDNN
# ran (64, 57, 57) at half the speed of (64, 64, 64)). Features (32, 64, 128) on 2 cores
# (2026-12-07): (64, 64, 64) ran 0.63-0.92 of the float32 matmul peak at 0.47x MONAI's peak RSS,
# where (64, 34, 34) (budget / features) ran 0.39.
WINDOW_SIDE_STEP = 16


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
    channel: int | None = None
    probability_dtype: str = "uint8"
    progress: bool | None = None
    max_voxels: int | None = None
    instances: InstanceOptions = field(default_factory=InstanceOptions)
    preview_slices: int = 4

    def __post_init__(self) -> None:
        """UsageError (a ValueError) naming the option that cannot work."""
        if self.blend not in BLEND_MODES:
            raise UsageError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.probability_dtype not in (*PROBABILITY_DTYPES, "float32"):
            raise UsageError(
                f"probability_dtype must be one of {PROBABILITY_DTYPES}, "
                f"got {self.probability_dtype!r}"
            )
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.channel is not None and self.channel < 0:
            raise UsageError(f"channel must be >= 0 (or null: all channels), got {self.channel}")
        if not 0 <= self.overlap < 1:
            raise UsageError(f"overlap must be in [0, 1), got {self.overlap}")
        tile_option(self.tile_size)  # the one check of the sizes, shared with unet-seg-tune

    @classmethod
    def from_config(cls, cfg: Any, tuned: dict | None = None) -> PredictOptions:
        """The options of a ``conf/predict.yaml``-shaped config; ``instances`` settings left
        ``null`` come from ``tuned`` (a checkpoint's ``unet-seg-tune`` result), else defaults.

        Raises:
            UsageError: a number option is not a number (the message names it).
        """
        tile = tile_option(cfg.tile_size)
        channel, max_voxels = cfg.get("channel"), cfg.get("max_voxels")
        return cls(
            tile_size=tile,
            overlap=real("overlap", cfg.overlap),
            blend=str(cfg.blend),
            batch_size=whole("batch_size", cfg.batch_size),
            slice_axis=whole("slice_axis", cfg.slice_axis),
            channel=None if channel is None else whole("channel", channel),
            probability_dtype=str(cfg.probability_dtype),
            progress=cfg.progress,
            max_voxels=None if max_voxels is None else whole("max_voxels", max_voxels),
            instances=resolve(tuned, dict(cfg.instances)),
            preview_slices=whole("preview_slices", cfg.get("preview_slices", 4)),
        )

    def tile_for(self, model: Any, shape: Sequence[int]) -> int | Sequence[int]:
        """The tile for ``model`` on a ``(Z, Y, X)`` volume: ``tile_size``, else the default
        (:func:`default_tile`)."""
        return self.tile_size if self.tile_size is not None else default_tile(model, shape)


def tile_option(value: Any) -> int | tuple[int, ...] | None:
    """The ``tile_size`` option as given (None: the default tile), one whole number or one per
    axis; ``UsageError`` naming it where a size is not a whole number >= 1."""
    if value is None:
        return None
    if isinstance(value, (int, float, str)):
        return whole("tile_size", value, 1)
    return tuple(whole("tile_size", t, 1) for t in value)


def default_tile(model: Any, shape: Sequence[int]) -> int | tuple[int, ...]:
    """:data:`DEFAULT_TILE`, except for same-padding 3D networks: a window of about
    :data:`SAME_3D_WINDOW_BUDGET` / ``features`` voxels up to 16 first-level features and
    ``SAME_3D_WINDOW_BUDGET / 16 * sqrt(features / 16)`` for wider nets, near a cube with sides
    on a multiple of :data:`WINDOW_SIDE_STEP`, where an axis that is not much longer than the
    cube's side is taken whole (``shape``: ``(Z, Y, X)``).

    >>> from unet_seg.models import UNet
    >>> default_tile(UNet(3, 1, 2, (16, 32, 64), padding="same"), (64, 256, 256))
    (64, 48, 48)
    >>> default_tile(UNet(3, 1, 2, (32, 64, 128), padding="same"), (64, 256, 256))
    (64, 64, 64)
    """
    spatial_dims = int(model.spatial_dims)
    if spatial_dims != 3 or getattr(model, "padding", "valid") != "same":
        return DEFAULT_TILE[spatial_dims]
    features = getattr(model, "features", None) or (16,)
    width = max(int(features[0]), 1)
    # Up to 16 features, features x voxels is the budget; wider, the voxels grow as sqrt(width).
    voxels = SAME_3D_WINDOW_BUDGET / 16 * max(16 / width, (width / 16) ** 0.5)
    sizes = [0, 0, 0]
    for done, axis in enumerate(sorted(range(3), key=lambda a: shape[a])):
        side = voxels ** (1 / (3 - done))
        if shape[axis] <= 1.25 * side:  # taken whole
            sizes[axis] = int(shape[axis])
            voxels /= sizes[axis]
        else:  # the rest share what is left, each side rounded to the step at the end
            sizes[axis] = max(round(side / WINDOW_SIDE_STEP) * WINDOW_SIDE_STEP, 8)
            voxels /= side
    return tuple(sizes)
