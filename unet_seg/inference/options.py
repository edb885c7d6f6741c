"""How one file is predicted: the options of ``conf/predict.yaml`` as a typed value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from unet_seg.inference.instance_methods import InstanceOptions, resolve
from unet_seg.inference.postprocess import PROBABILITY_DTYPES
from unet_seg.inference.tiling import BLEND_MODES

DEFAULT_TILE = {2: 512, 3: 96}  # output region per window; bigger tiles waste less margin
# A same-padding 3D network has no margin to waste, so its default window is sized by memory:
# first-level features x window voxels. On 2 CPU cores (bench_inference_3d, 2026-12-03) a
# (64, 48, 48) window of a 16-feature net ran 1.8x MONAI's throughput at 0.48x its peak RSS,
# a (64, 80, 80) one 2.1x at 0.65x: oneDNN keeps its speed on small windows, memory does not.
SAME_3D_WINDOW_BUDGET = 16 * 64 * 48 * 48


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
    probability_dtype: str = "uint8"
    progress: bool | None = None
    max_voxels: int | None = None
    instances: InstanceOptions = field(default_factory=InstanceOptions)
    preview_slices: int = 4

    def __post_init__(self) -> None:
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.probability_dtype not in (*PROBABILITY_DTYPES, "float32"):
            raise ValueError(
                f"probability_dtype must be one of {PROBABILITY_DTYPES}, "
                f"got {self.probability_dtype!r}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @classmethod
    def from_config(cls, cfg: Any, tuned: dict | None = None) -> PredictOptions:
        """The options of a ``conf/predict.yaml``-shaped config; ``instances`` settings left
        ``null`` come from ``tuned`` (a checkpoint's ``unet-seg-tune`` result), else defaults."""
        tile = cfg.tile_size
        if tile is not None:
            tile = int(tile) if isinstance(tile, int) else tuple(int(t) for t in tile)
        return cls(
            tile_size=tile,
            overlap=float(cfg.overlap),
            blend=str(cfg.blend),
            batch_size=int(cfg.batch_size),
            slice_axis=int(cfg.slice_axis),
            probability_dtype=str(cfg.probability_dtype),
            progress=cfg.progress,
            max_voxels=int(cfg.max_voxels) if cfg.get("max_voxels") is not None else None,
            instances=resolve(tuned, dict(cfg.instances)),
            preview_slices=int(cfg.get("preview_slices", 4)),
        )

    def tile_for(self, model: Any, shape: Sequence[int]) -> int | Sequence[int]:
        """The tile for ``model`` on a ``(Z, Y, X)`` volume: ``tile_size``, else the default
        (:func:`default_tile`)."""
        return self.tile_size if self.tile_size is not None else default_tile(model, shape)


def default_tile(model: Any, shape: Sequence[int]) -> int | tuple[int, ...]:
    """:data:`DEFAULT_TILE`, except for same-padding 3D networks: a window of about
    :data:`SAME_3D_WINDOW_BUDGET` / first-level features voxels, near a cube, where an axis
    that is not much longer than the cube's side is taken whole (``shape``: ``(Z, Y, X)``).

    >>> from unet_seg.models import UNet
    >>> default_tile(UNet(3, 1, 2, (16, 32, 64), padding="same"), (64, 256, 256))
    (64, 48, 48)
    """
    spatial_dims = int(model.spatial_dims)
    if spatial_dims != 3 or getattr(model, "padding", "valid") != "same":
        return DEFAULT_TILE[spatial_dims]
    features = getattr(model, "features", None) or (16,)
    voxels = SAME_3D_WINDOW_BUDGET / max(int(features[0]), 1)
    sizes = [0, 0, 0]
    for done, axis in enumerate(sorted(range(3), key=lambda a: shape[a])):
        side = voxels ** (1 / (3 - done))
        sizes[axis] = int(shape[axis]) if shape[axis] <= 1.25 * side else max(int(side), 8)
        voxels /= sizes[axis]
    return tuple(sizes)
