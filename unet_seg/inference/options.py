"""How one file is predicted: the options of ``conf/predict.yaml`` as a typed value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from unet_seg.inference.instance_methods import InstanceOptions, resolve
from unet_seg.inference.postprocess import PROBABILITY_DTYPES
from unet_seg.inference.tiling import BLEND_MODES

DEFAULT_TILE = {2: 512, 3: 96}  # output region per window; bigger tiles waste less margin


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

    def tile_for(self, spatial_dims: int) -> int | Sequence[int]:
        return self.tile_size if self.tile_size is not None else DEFAULT_TILE[spatial_dims]
