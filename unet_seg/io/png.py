"""PNG through imageio: 2D only (grey, or RGB/RGBA/grey+alpha moved to a leading channel axis,
its kind in ``metadata["channels"]``), spacing 1.

PNGs are small, so "opening lazily" reads the whole image into memory, after checking that the
size its header declares can come out of the file (a deflate stream expands at most ~1032x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unet_seg.io.colour import channel_kind
from unet_seg.io.lazy import InMemoryVolume
from unet_seg.io.limits import check_deflated, check_stored
from unet_seg.io.volume import Volume

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png_chunks(path: Path) -> None:
    """``ValueError`` if a chunk declares more bytes than the file holds after it.

    Readers allocate a chunk's declared length before reading it, so one damaged length field
    in a 500-byte file asks for up to 4 GB. Only the 8-byte chunk headers are read.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            return  # not a PNG: the reader names the problem
        position = 8
        while position + 8 <= size:
            f.seek(position)
            header = f.read(8)
            length = int.from_bytes(header[:4], "big")
            kind = header[4:].decode("latin-1")
            check_stored(path, length + 4, size - position - 8, f"PNG chunk {kind!r} and its CRC")
            if kind == "IEND":
                return
            position += 12 + length


def check_png_header(path: Path) -> None:
    """``ValueError`` if a chunk's length runs past the end of the file, or the width x height x
    bands in the header cannot fit the file."""
    from PIL import Image

    check_png_chunks(path)

    with Image.open(path) as image:
        width, height = image.size
        bands = len(image.getbands())
        depth = 2 if image.mode.startswith("I;16") or image.mode in ("I", "F") else 1
    check_deflated(path, width * height * bands * depth, path.stat().st_size)


def read_png(path: Path) -> Volume:
    import imageio.v3 as iio

    check_png_header(path)
    array = np.asarray(iio.imread(path))
    meta = {}
    if array.ndim == 3:  # (y, x, RGB[A] / grey+alpha) -> (C, y, x)
        array = np.moveaxis(array, -1, 0)
        meta["channels"] = channel_kind(array.shape[0], rgb=array.shape[0] in (3, 4))
        meta["axes"] = "CYX"
    return Volume(array, spacing=(1.0, 1.0), metadata=meta, path=path)


def open_png(path: Path) -> InMemoryVolume:
    return InMemoryVolume(read_png(path))


def write_png(tmp: Path, volume: Volume) -> None:
    import imageio.v3 as iio

    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3):
        raise ValueError(f"PNG holds 2D uint8/uint16 images, got {array.dtype} {array.shape}")
    if array.ndim == 3:
        if array.dtype != np.uint8:
            raise ValueError(f"PNG colour images are written as uint8 only, got {array.dtype}")
        array = np.moveaxis(array, 0, -1)
    iio.imwrite(tmp, array, extension=".png")
