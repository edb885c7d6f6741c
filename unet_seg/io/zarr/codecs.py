"""A blosc decoder that checks a chunk's header before allocating what it declares.

Blosc (the default compressor of zarr format 2, so of most NGFF 0.4 images) allocates the
decompressed size its 16-byte chunk header declares before it looks at the data: one flipped
bit there makes a 2 KB chunk allocate 1 GB. The header also says how the data are laid out, so
a declared size that the compressed bytes cannot hold is refused first: a copied (uncompressed)
chunk holds its bytes plus the header, a compressed one has a 4-byte offset per block.
"""

from __future__ import annotations

import struct

from numcodecs.blosc import Blosc

from unet_seg.io.limits import memory_budget

_HEADER = 16
_MEMCPYED = 0x02  # blosc flag: the data are stored uncompressed after the header


class CheckedBlosc(Blosc):
    """:class:`numcodecs.blosc.Blosc` whose ``decode`` refuses impossible headers."""

    def decode(self, buf, out=None):
        data = memoryview(buf).cast("B")
        if len(data) < _HEADER:
            raise ValueError(f"a blosc chunk of {len(data)} bytes has no header")
        nbytes, blocksize, cbytes = struct.unpack_from("<III", data, 4)
        if data[2] & _MEMCPYED:
            fits = nbytes + _HEADER == cbytes
        else:
            fits = nbytes <= max(blocksize, 1) * max((cbytes - _HEADER) // 4, 1)
        if cbytes > len(data) or not fits or nbytes > memory_budget():
            raise ValueError(
                f"corrupt blosc chunk: its header declares {nbytes:,} bytes in {cbytes:,} "
                f"compressed bytes (the chunk holds {len(data):,})"
            )
        return super().decode(buf, out)


def install() -> None:
    """Use :class:`CheckedBlosc` for zarr format 2 (numcodecs' registry) and 3 (zarr's codec)."""
    import numcodecs
    import zarr.codecs.blosc

    numcodecs.register_codec(CheckedBlosc, codec_id=Blosc.codec_id)
    zarr.codecs.blosc.Blosc = CheckedBlosc  # BloscCodec builds its decoder from this name
