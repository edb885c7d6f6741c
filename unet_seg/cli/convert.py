"""``unet-seg-convert``: TIFF stacks, NIfTI volumes, folders of 2D slices -> OME-Zarr
(``conf/convert.yaml``), in bounded memory, with a pyramid and the source's spacing.

Examples::

    unet-seg-convert input=stack.tif output=stack.ome.zarr
    unet-seg-convert input=slices/ output=stack.ome.zarr 'chunks=[32,512,512]'
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from unet_seg.config import config_dir
from unet_seg.io.convert import convert_to_ome_zarr


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="convert")
def main(cfg: DictConfig) -> None:
    target = Path(cfg.output)
    if target.exists() and not cfg.overwrite:
        raise SystemExit(f"unet-seg-convert: {target} exists (overwrite=true to replace it)")
    chunks = None if cfg.chunks is None else [int(c) for c in cfg.chunks]
    try:
        path = convert_to_ome_zarr(cfg.input, target, chunks, str(cfg.ngff_version))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"unet-seg-convert: {err}") from None
    print(f"unet-seg-convert: {cfg.input} -> {path}")


if __name__ == "__main__":
    main()
