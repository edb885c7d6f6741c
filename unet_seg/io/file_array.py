"""A raw C-order array inside an open file, read and written with ``pread``/``pwrite``.

Why not a memory map: a write through a map that the disk refuses (an I/O error, a quota, a
network filesystem gone away) is a ``SIGBUS`` that kills the process with no message; the same
write through ``pwrite`` is an ``OSError`` the caller turns into a named error for that file.
Written data also go to the page cache rather than into the process, so the resident memory of
a long prediction does not grow with the output.

A box is written as its contiguous runs: the innermost axes it covers whole, joined with the
one partial axis before them, so a box of whole planes is one call per plane group.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np


class FileArray:
    """The array ``shape``/``dtype`` stored raw (C order) at byte ``offset`` of the open ``fd``.

    Indexing takes ints, slices (a step only when reading) and ``Ellipsis``, like numpy's basic
    indexing; reads return new arrays, writes broadcast ``data`` to the box. The file must
    already be large enough (reserved by the caller); regions never written read as zeros.
    """

    def __init__(self, fd: int, offset: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.fd, self.offset = fd, int(offset)
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        # bytes between consecutive indices of each axis
        self._strides = [
            math.prod(self.shape[i + 1 :]) * self.dtype.itemsize for i in range(self.ndim)
        ]

    def __getitem__(self, index: Any) -> np.ndarray:
        ranges, squeeze = self._ranges(index)
        bounding = [range(r.start, r.stop) for r in ranges]  # steps applied after the read
        out = np.empty([len(r) for r in bounding], self.dtype)
        flat = memoryview(out.reshape(-1)).cast("B")
        itemsize = self.dtype.itemsize
        for position, offset, length in self._runs(bounding):
            _pread_into(self.fd, flat[position * itemsize : (position + length) * itemsize], offset)
        picks = tuple(
            0 if s else slice(None, None, r.step) for r, s in zip(ranges, squeeze, strict=True)
        )
        result = out[(*picks, Ellipsis)]  # the Ellipsis keeps an all-int index a 0-d array
        return result if result.flags.c_contiguous else result.copy()

    def __setitem__(self, index: Any, data: Any) -> None:
        ranges, squeeze = self._ranges(index)
        if any(r.step != 1 for r in ranges):
            raise ValueError("FileArray writes need step-1 slices")
        box = [len(r) for r in ranges]
        indexed = [n for n, s in zip(box, squeeze, strict=True) if not s]  # numpy's result shape
        values = np.broadcast_to(np.asarray(data, dtype=self.dtype), indexed).reshape(box)
        flat = memoryview(np.ascontiguousarray(values).reshape(-1)).cast("B")
        itemsize = self.dtype.itemsize
        for position, offset, length in self._runs(ranges):
            _pwrite_all(self.fd, flat[position * itemsize : (position + length) * itemsize], offset)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[...]
        return whole if dtype is None else whole.astype(dtype)

    def _ranges(self, index: Any) -> tuple[list[range], list[bool]]:
        """Per axis the index range, and whether an int index drops that axis."""
        items = list(index) if isinstance(index, tuple) else [index]
        if items.count(Ellipsis) > 1:
            raise IndexError("an index can only have a single ellipsis")
        if Ellipsis in items:
            at = items.index(Ellipsis)
            items[at : at + 1] = [slice(None)] * (self.ndim - len(items) + 1)
        if len(items) > self.ndim:
            raise IndexError(f"too many indices for an array of shape {self.shape}")
        items += [slice(None)] * (self.ndim - len(items))
        ranges, squeeze = [], []
        for item, size in zip(items, self.shape, strict=True):
            if isinstance(item, slice):
                r = range(*item.indices(size))
                if r.step < 1:
                    raise IndexError("FileArray takes only positive slice steps")
                ranges.append(r)
                squeeze.append(False)
                continue
            i = int(item)  # numpy ints, Python ints; anything else raises TypeError
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for an axis of size {size}")
            i %= size
            ranges.append(range(i, i + 1))
            squeeze.append(True)
        return ranges, squeeze

    def _runs(self, ranges: list[range]) -> Iterator[tuple[int, int, int]]:
        """``(position, byte offset, length)`` of each contiguous run of the step-1 box
        ``ranges``; ``position`` and ``length`` count items of the box's C-order buffer."""
        if any(len(r) == 0 for r in ranges):
            return
        whole = self.ndim
        while whole > 0 and len(ranges[whole - 1]) == self.shape[whole - 1]:
            whole -= 1  # the axes from ``whole`` on are covered whole
        partial = max(whole - 1, 0)  # joined with them into one run
        length = math.prod(len(r) for r in ranges[partial:])
        base = self.offset + sum(r.start * st for r, st in zip(ranges, self._strides, strict=True))
        offsets = np.full((), base, np.int64)
        for r, stride in zip(ranges[:partial], self._strides, strict=False):  # C order, outer first
            offsets = offsets[..., None] + np.arange(len(r), dtype=np.int64) * stride
        for position, offset in enumerate(offsets.reshape(-1).tolist()):
            yield position * length, offset, length


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _pread_into(fd: int, out: memoryview, offset: int) -> None:
    while len(out):
        done = os.preadv(fd, [out], offset)
        if done == 0:  # past the end of the file: never written, zeros
            out[:] = bytes(len(out))
            return
        out, offset = out[done:], offset + done
