"""Tensor-sized allocations come from malloc's heap again where Dask's nanny pinned the trim
threshold (``MALLOC_TRIM_THRESHOLD_``), which sends every one over 128 KiB to its own mmap."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unet_seg.blockwise import allocator

glibc = allocator._glibc()
needs_mallinfo2 = pytest.mark.skipif(
    glibc is None or not hasattr(glibc, "mallinfo2"), reason="needs glibc >= 2.33 (mallinfo2)"
)
pytestmark = needs_mallinfo2


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]  # fmt: skip


def mmapped_while_holding(nbytes: int) -> int:
    """How many chunks malloc holds as separate mmaps while ``nbytes`` are allocated."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblks
    pointer = libc.malloc(nbytes)
    try:
        return libc.mallinfo2().hblks - before
    finally:
        libc.free(pointer)


def in_fresh_process(code: str, trim_threshold: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    if trim_threshold is not None:
        env["MALLOC_TRIM_THRESHOLD_"] = trim_threshold
    prelude = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    prelude += "from test_allocator import mmapped_while_holding as held; "
    prelude += "from unet_seg.blockwise.allocator import reuse_freed_memory; "
    done = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.split()


def test_a_pinned_trim_threshold_mmaps_each_tensor_until_thresholds_are_raised() -> None:
    eight_mb = 8 * 2**20
    code = f"print(held({eight_mb}), reuse_freed_memory(), held({eight_mb}), reuse_freed_memory())"
    before, set_now, after, set_again = in_fresh_process(code, "65536")
    assert (before, set_now, after, set_again) == ("1", "True", "0", "False")


def test_without_the_variable_malloc_is_left_as_it_is() -> None:
    # glibc's dynamic threshold: the second 8 MB block reuses the first one's freed memory
    code = f"print(reuse_freed_memory(), held({8 * 2**20}), held({8 * 2**20}))"
    assert in_fresh_process(code, None) == ["False", "1", "0"]


def test_blocks_above_the_thresholds_still_go_to_mmap() -> None:
    code = f"reuse_freed_memory(); print(held({2 * allocator.MMAP_THRESHOLD}))"
    code = "from unet_seg.blockwise import allocator; " + code
    assert in_fresh_process(code, "65536") == ["1"]
