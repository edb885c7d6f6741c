"""The one I/O layer: every file the project reads or writes goes through here.

- :mod:`~unet_seg.io.volume`: :class:`Volume` (array + geometry) and data checks;
- :mod:`~unet_seg.io.volumes`: :func:`read_volume`, :func:`open_volume` (lazy), :func:`write_volume`
  for any supported format, dispatched by suffix to the format modules :mod:`~unet_seg.io.nifti`,
  :mod:`~unet_seg.io.tiff`, :mod:`~unet_seg.io.png`;
- :mod:`~unet_seg.io.slabs`: :class:`~unet_seg.io.slabs.SlabWriter`, outputs written slab by slab;
- :mod:`~unet_seg.io.files`: finding inputs (a file, a folder, a glob) and naming outputs;
- :mod:`~unet_seg.io.atomic`: write to a temporary name, rename when complete;
- :mod:`~unet_seg.io.channel_files`: nnU-Net's one file per channel read as one image;
- :mod:`~unet_seg.io.output_lock`: one run at a time per output;
- :mod:`unet_seg.io.zarr`: zarr and OME-Zarr stores (reading, block-wise outputs, NGFF metadata,
  conversion).
"""

from unet_seg.io.files import SUPPORTED_SUFFIXES
from unet_seg.io.lazy import LazyVolume
from unet_seg.io.volume import Volume, check_finite, check_pair
from unet_seg.io.volumes import open_volume, read_volume, write_volume

__all__ = [
    "SUPPORTED_SUFFIXES",
    "LazyVolume",
    "Volume",
    "check_finite",
    "check_pair",
    "open_volume",
    "read_volume",
    "write_volume",
]
