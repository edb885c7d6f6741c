"""Lazy access to a volume on disk: read only the region that is indexed.

:class:`LazyVolume` holds what every format knows without reading the data (shape, dtype,
geometry) and turns an index into a read of that region; each format module subclasses it with
its own ``_read``. Indices are in the project's ``(z, y, x)`` order. Int/slice indices are read
lazily; fancy indices read the whole volume first. Open handles are not pickled, so instances
can go to dataloader workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.io.volume import Volume


def normalize_index(index: Any, ndim: int) -> tuple | None:
    """``index`` as one int/slice per axis, or None if it uses anything else (arrays, None)."""
    index = index if isinstance(index, tuple) else (index,)
    if sum(i is Ellipsis for i in index) > 1:
        raise IndexError("an index can only have a single ellipsis")
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1 :]
    if len(index) > ndim:
        raise IndexError(f"too many indices for a volume with {ndim} dimensions")
    index = index + (slice(None),) * (ndim - len(index))
    if all(isinstance(i, slice | int | np.integer) for i in index):
        return index
    return None


class LazyVolume:
    """A volume on disk that reads only what is indexed (``lazy[z0:z1]`` reads a slab).

    Attributes:
        path: the file.
        shape, dtype: of the array as :func:`unet_seg.io.read_volume` would return it.
        spacing, affine, metadata: as in :class:`unet_seg.io.Volume`.
        reads_whole: the first read loads the whole array and keeps it (PNG, a compressed TIFF
            that is not a stack of pages): what a reader of regions must count as held.
    """

    reads_whole = False

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        dtype: np.dtype,
        spacing: tuple[float, ...],
        affine: np.ndarray,
        metadata: dict[str, Any],
    ) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.spacing = tuple(float(s) for s in spacing)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.metadata = metadata
        self._handle: Any = None  # an open file or memmap, per process

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None  # memmaps and open files stay in the process that opened them
        return state

    def close(self) -> None:
        """Release the open file or memmap (reopened on the next read)."""
        close = getattr(self._handle, "close", None)
        if close is not None and not isinstance(self._handle, np.ndarray):
            close()
        self._handle = None

    def __enter__(self) -> LazyVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, index: Any) -> np.ndarray:
        simple = normalize_index(index, self.ndim)
        if simple is None:
            return self[...][index]
        try:
            return self._read(simple)
        except Exception as err:
            if isinstance(err, ValueError) and str(self.path) in str(err):
                raise  # our readers' errors already name the file and the problem
            where = "" if index is Ellipsis else f" region {index!r}"
            raise ValueError(
                f"{self.path}: cannot read{where}, corrupt or truncated? ({err})"
            ) from err

    def _read(self, index: tuple) -> np.ndarray:
        """The region of one int/slice per axis (``(z, y, x)`` order)."""
        raise NotImplementedError


class InMemoryVolume(LazyVolume):
    """A volume held in memory behind the lazy interface (small formats such as PNG)."""

    reads_whole = True

    def __init__(self, volume: Volume) -> None:
        array = volume.array
        super().__init__(
            volume.path, array.shape, array.dtype, volume.spacing, volume.affine, volume.metadata
        )
        self._array = array

    def _read(self, index: tuple) -> np.ndarray:
        return np.array(self._array[index])
