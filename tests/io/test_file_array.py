"""FileArray (unet_seg.io.file_array) reads and writes like a numpy array over the same bytes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unet_seg.io.file_array import FileArray


@st.composite
def shapes_and_indices(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))

    def index(steps: bool):
        items = []
        for size in shape:
            if draw(st.booleans()):
                items.append(draw(st.integers(-size, size - 1)))
            else:
                lo = draw(st.integers(0, size - 1))
                hi = draw(st.integers(lo, size))
                items.append(slice(lo, hi, draw(st.integers(1, 3)) if steps else None))
        return tuple(items)

    writes = [index(steps=False) for _ in range(draw(st.integers(1, 4)))]
    reads = [index(steps=True) for _ in range(draw(st.integers(1, 4)))]
    return shape, writes, reads


@pytest.fixture
def backing(tmp_path):
    """``(shape, dtype, offset) -> FileArray`` over a file with 13 marker bytes before the data."""
    fds = []

    def make(shape, dtype, offset=13):
        path = tmp_path / "array.bin"
        path.write_bytes(b"\x07" * offset)
        os.truncate(path, offset + int(np.prod(shape)) * np.dtype(dtype).itemsize)
        fds.append(os.open(path, os.O_RDWR))
        return FileArray(fds[-1], offset, shape, dtype)

    yield make
    for fd in fds:
        os.close(fd)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=shapes_and_indices(), dtype=st.sampled_from(["uint8", "float32", "uint32"]))
def test_writes_and_reads_equal_numpy_on_the_same_indices(tmp_path, case, dtype):
    shape, writes, reads = case
    path = tmp_path / f"a-{os.getpid()}.bin"
    path.write_bytes(b"\x07" * 5)
    os.truncate(path, 5 + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    fd = os.open(path, os.O_RDWR)
    try:
        array, expected = FileArray(fd, 5, shape, dtype), np.zeros(shape, dtype)
        rng = np.random.default_rng(len(writes))
        for index in writes:
            values = rng.integers(1, 200, expected[index].shape).astype(dtype)
            array[index] = values
            expected[index] = values
        np.testing.assert_array_equal(np.asarray(array), expected)
        for index in reads:
            got = array[index]
            assert got.shape == expected[index].shape and got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected[index])
    finally:
        os.close(fd)
    assert path.read_bytes()[:5] == b"\x07" * 5  # the header before the data is untouched


def test_a_scalar_broadcasts_over_the_box_and_unwritten_data_read_as_zeros(backing):
    array = backing((3, 4, 5), np.uint16)
    array[1, 1:3] = 9
    expected = np.zeros((3, 4, 5), np.uint16)
    expected[1, 1:3] = 9
    np.testing.assert_array_equal(array[...], expected)


def test_a_box_of_whole_planes_is_one_write_per_leading_index(backing, monkeypatch):
    array, calls = backing((2, 8, 6, 5), np.float32), []
    real = os.pwrite
    monkeypatch.setattr(
        os, "pwrite", lambda fd, data, off: calls.append(off) or real(fd, data, off)
    )
    array[:, 2:5] = np.ones((2, 3, 6, 5), np.float32)
    assert calls == [13 + 2 * 30 * 4, 13 + (8 + 2) * 30 * 4]


def test_bad_indices_are_errors(backing):
    array = backing((3, 4), np.uint8)
    with pytest.raises(IndexError, match="out of bounds"):
        array[3]
    with pytest.raises(IndexError, match="too many indices"):
        array[0, 0, 0]
    with pytest.raises(ValueError, match="step-1"):
        array[::2] = 1
