"""Output files (TIFF, NIfTI, PNG) as the outputs of a block-wise prediction.

Blocks write the output region they own into memory-mapped files
(:class:`~unet_seg.io.slabs.SlabWriter`: a hidden partial name, the disk reserved before any
work, renamed when complete, removed on an error or an interrupt), through the protocol the
block runner uses for zarr stores (:class:`~unet_seg.io.zarr_output.ZarrOutput`): ``open``,
``write(box, data)``, ``read(box)``, ``record(index, info)``. Files are written in this process
only, and a file that is not complete is never resumed, so ``open`` finds no recorded block.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unet_seg.io.slabs import SlabWriter

Box = Sequence[slice]  # a box in the file's spatial axis order


class FileOutput:
    """One :class:`SlabWriter` ``(*lead, *spatial)`` written block by block; the block records
    (``info`` of :func:`~unet_seg.inference.blockwise.run_block`) are kept in :attr:`infos`."""

    ome = None  # not an OME-Zarr image: no pyramid, no labels/ group

    def __init__(self, writer: SlabWriter) -> None:
        self.writer, self.path, self.shape = writer, writer.path, writer.shape
        self.infos: dict[int, dict] = {}

    def open(self) -> set[int]:
        """The blocks already written: none (a partial file is never resumed)."""
        return set()

    def write(self, box: Box, data: np.ndarray) -> None:
        self.writer.write_box(tuple(box), data.astype(self.writer.dtype, copy=False))

    def read(self, box: Box) -> np.ndarray:
        return self.writer.read_box(tuple(box))

    def record(self, index: int, info: dict) -> None:
        self.infos[index] = info

    def records_of(self) -> dict[int, dict]:
        return dict(self.infos)

    def abort(self) -> None:
        """Drop the partial file (a failed input leaves nothing)."""
        self.writer.abort()
