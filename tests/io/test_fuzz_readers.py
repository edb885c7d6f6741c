"""Property-based tests: real TIFF, NIfTI and PNG files, truncated, with flipped bytes or with
header fields set to extreme values. Whatever the damage, reading either works or raises a
``ValueError``/``FileNotFoundError`` naming the file, with peak memory bounded by the file's size
(never what a corrupt header claims), and predict leaves no output or temporary behind.

The default suite tries a few examples per format; ``-m slow`` tries many more.
"""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from unet_seg.io import open_volume, read_volume
from unet_seg.io.limits import DEFLATE_MAX_RATIO

EXTREMES = [0, 1, 255, 2**15 - 1, 2**16 - 1, 2**31 - 1, 2**32 - 1]
OUTCOMES: Counter = Counter()  # "read" / "named error" per format, printed by the slow test


def _tiff(**options) -> bytes:
    data = np.random.default_rng(0).integers(0, 4000, (6, 24, 20)).astype(np.uint16)
    out = io.BytesIO()
    tifffile.imwrite(out, data, **options)
    return out.getvalue()


def _nifti() -> bytes:
    data = np.random.default_rng(1).normal(size=(12, 10, 6)).astype(np.float32)
    return nib.Nifti1Image(data, np.eye(4)).to_bytes()


def _png(mode: str) -> bytes:
    rng = np.random.default_rng(2)
    shape = {"L": (20, 24), "RGB": (20, 24, 3), "LA": (20, 24, 2)}[mode]
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape).astype(np.uint8), mode).save(out, "PNG")
    return out.getvalue()


def _tiff_fields(data: bytes) -> list[tuple[int, int, str]]:
    """``(offset, size, byte order)`` of the size-related tags of every page."""
    fields = []
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        order = tif.byteorder
        for page in tif.pages:
            if not hasattr(page, "tags"):
                continue  # a frame of an ImageJ stack: its tags are the first page's
            for name in ("ImageWidth", "ImageLength", "BitsPerSample", "StripOffsets",
                         "StripByteCounts", "RowsPerStrip", "SamplesPerPixel"):  # fmt: skip
                tag = page.tags.get(name)
                size = {1: 1, 3: 2, 4: 4}.get(int(tag.dtype)) if tag is not None else None
                if size and tag.count == 1:  # BYTE, SHORT, LONG
                    fields.append((tag.valueoffset, size, order))
    return fields


# name -> (suffix, bytes, header fields, may expand by deflate's ratio)
SAMPLES = {
    "tiff_raw": (".tif", _tiff(), None, False),
    "tiff_imagej": (".tif", _tiff(imagej=True), None, False),
    "tiff_zlib": (".tif", _tiff(compression="zlib"), None, True),
    "nii": (".nii", _nifti(), None, False),
    "nii_gz": (".nii.gz", _nifti(), None, True),
    "png_grey": (".png", _png("L"), None, True),
    "png_rgb": (".png", _png("RGB"), None, True),
    "png_grey_alpha": (".png", _png("LA"), None, True),
}
# NIfTI-1: dim[1..3] (int16 at 42, 44, 46), datatype (70), bitpix (72), vox_offset (float, 108).
NIFTI_FIELDS = [(42, 2, "<"), (44, 2, "<"), (46, 2, "<"), (70, 2, "<"), (72, 2, "<")]
PNG_FIELDS = [(16, 4, ">"), (20, 4, ">"), (24, 1, ">"), (25, 1, ">")]  # IHDR width, height, ...


def fields(name: str, data: bytes) -> list[tuple[int, int, str]]:
    if name.startswith("tiff"):
        return _tiff_fields(data)
    return NIFTI_FIELDS if name.startswith("nii") else PNG_FIELDS


def _set_field(data: bytearray, offset: int, size: int, order: str, value: int) -> None:
    fmt = {1: "B", 2: "H", 4: "I"}[size]
    data[offset : offset + size] = struct.pack(order + fmt, value % (1 << (8 * size)))


def _fix_png_crc(data: bytearray) -> None:
    """Recompute IHDR's CRC, so that the damaged header is read as a valid one."""
    length = struct.unpack(">I", data[8:12])[0]
    data[16 + length : 20 + length] = struct.pack(">I", zlib.crc32(bytes(data[12 : 16 + length])))


mutations = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0, exclude_max=True)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True),
                                                  st.integers(1, 255)), min_size=1, max_size=6)),
    st.tuples(st.just("field"), st.integers(0, 10**6), st.sampled_from(EXTREMES)),
)  # fmt: skip


def mutate(name: str, mutation: tuple) -> bytes:
    suffix, original, _, _ = SAMPLES[name]
    gz = suffix == ".nii.gz"
    data = bytearray(original)  # for .nii.gz the damage is done before compression
    kind = mutation[0]
    if kind == "truncate":
        data = data[: int(mutation[1] * len(data))]
    elif kind == "flip":
        for where, value in mutation[1]:
            data[int(where * len(data))] ^= value
    else:
        choices = fields(name, bytes(data))
        offset, size, order = choices[mutation[1] % len(choices)]
        _set_field(data, offset, size, order, mutation[2])
        if suffix == ".png":
            _fix_png_crc(data)
    return gzip.compress(bytes(data)) if gz else bytes(data)


def check_damaged_file(name: str, mutation: tuple) -> str:
    """Read the damaged file every way we read files; the outcome, or an AssertionError."""
    suffix, _, _, deflated = SAMPLES[name]
    data = mutate(name, mutation)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"damaged{suffix}"
        path.write_bytes(data)
        tracemalloc.start()
        try:
            read_volume(path, finite=False)
            lazy = open_volume(path)
            lazy[...]
            if lazy.ndim >= 3:
                lazy[lazy.shape[0] - 1]
            outcome = "read"
        except (ValueError, FileNotFoundError) as err:
            assert str(path) in str(err), f"{type(err).__name__} without the file name: {err}"
            outcome = "named error"
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    ratio = DEFLATE_MAX_RATIO if deflated else 1
    limit = 4 * ratio * max(len(data), 1024) + (32 << 20)
    assert peak <= limit, f"{name} {mutation}: peak {peak:,} bytes for a {len(data):,}-byte file"
    OUTCOMES[(name, outcome)] += 1
    return outcome


FAST = settings(max_examples=12, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
THOROUGH = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@pytest.mark.parametrize("name", sorted(SAMPLES))
@FAST
@given(mutation=mutations)
def test_damaged_files_read_or_raise_a_named_error(name: str, mutation: tuple) -> None:
    check_damaged_file(name, mutation)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SAMPLES))
@THOROUGH
@given(mutation=mutations)
def test_damaged_files_thoroughly(name: str, mutation: tuple) -> None:
    check_damaged_file(name, mutation)


@pytest.mark.slow
def test_report_outcomes(capsys) -> None:
    # Runs after the thorough test in file order: benchmarks/RESULTS.md's figures come from
    # this line.
    tried = sum(OUTCOMES.values())
    named = sum(v for (_, outcome), v in OUTCOMES.items() if outcome == "named error")
    with capsys.disabled():
        print(f"\ndamaged files tried: {tried}, read: {tried - named}, named errors: {named}, "
              f"other errors: 0; per format: {dict(sorted(OUTCOMES.items()))}")  # fmt: skip


def test_a_header_claiming_a_huge_image_is_refused_before_allocating(tmp_path: Path) -> None:
    cases = {"tiff_raw": ("field", 0, 2**31 - 1), "nii": ("field", 0, 2**15 - 1),
             "png_grey": ("field", 0, 2**31 - 1)}  # fmt: skip
    for name, mutation in cases.items():
        assert check_damaged_file(name, mutation) == "named error", name


@pytest.mark.parametrize("value", [3, 0x80, 0xFF])
def test_a_png_chunk_longer_than_the_file_is_refused_before_allocating(value: int) -> None:
    # Byte 33 of the sample is the high byte of the IDAT chunk's length (found by the thorough
    # run): a 568-byte file then declares a chunk of up to 4 GB, which PIL allocated.
    data = mutate("png_grey", ("flip", [(33 / len(SAMPLES["png_grey"][1]), value)]))
    assert data[37:41] == b"IDAT"
    assert check_damaged_file("png_grey", ("flip", [(33 / len(data), value)])) == "named error"
