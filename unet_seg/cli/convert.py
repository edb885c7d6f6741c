"""``unet-seg-convert``: TIFF stacks, NIfTI volumes, folders of 2D slices -> OME-Zarr
(``conf/convert.yaml``), in bounded memory, with a pyramid and the source's spacing.

Examples::

    unet-seg-convert input=stack.tif output=stack.ome.zarr
    unet-seg-convert input=slices/ output=stack.ome.zarr 'chunks=[32,512,512]'
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from unet_seg.cli.launch import launch

NAME = "unet-seg-convert"


def run(cfg: DictConfig) -> None:
    from unet_seg.cli.errors import reported_errors
    from unet_seg.config import whole
    from unet_seg.errors import UsageError
    from unet_seg.io.zarr.convert import convert_to_ome_zarr  # heavy imports only for work

    with reported_errors(NAME, cfg):
        target = Path(cfg.output)
        if target.exists() and not cfg.overwrite:
            raise UsageError(f"{target} exists (overwrite=true to replace it)")
        chunks = cfg.chunks
        if chunks is not None:
            if isinstance(chunks, (int, float, str)):
                raise UsageError(f"chunks must be a list, a size per axis ([Z,Y,X]), got {chunks}")
            chunks = [whole("chunks", c, 1) for c in chunks]
        path = convert_to_ome_zarr(
            cfg.input, target, chunks, str(cfg.ngff_version), cfg.get("progress")
        )
    print(f"{NAME}: {cfg.input} -> {path}")


def main() -> None:
    """The ``unet-seg-convert`` console script."""
    launch("convert", NAME, run)


if __name__ == "__main__":
    main()
