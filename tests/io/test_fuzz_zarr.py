"""Property-based tests: zarr v2 and v3 arrays and OME-Zarr 0.4 / 0.5 images written by our own
writers, then damaged: a metadata value replaced by a hostile one (a huge shape, a wrong dtype,
chunks, axes, scale, multiscales) or deleted, a JSON file garbled, a chunk file truncated, with
flipped bytes or deleted. Whatever the damage, reading either works or raises a ``ValueError``
naming the store, peak memory stays bounded by the store's size and what was read (never what a
header claims), and predict leaves no output or temporary behind for a store it cannot use.

A deleted chunk is not damage in zarr: a chunk never written holds the array's ``fill_value``,
so such a store reads (as fill values there) like any sparse store.
The default suite tries a few examples per store; ``-m slow`` tries many more.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.prediction.test_faults import config, leftovers
from tests.prediction.test_predict import TINY_2D, save_checkpoint
from unet_seg.io import limits, open_volume, read_volume
from unet_seg.io.zarr.output import write_zarr
from unet_seg.prediction import driver
from unet_seg.prediction.batch import predict
from unet_seg.prediction.ownership import REGISTER_NAME

MEMORY_BUDGET = 64 << 20  # what the readers may allocate for one read here (see limits)
HOSTILE = [None, 0, -1, 1, 2**31 - 1, 2**63, 1e308, float("nan"), "x", "<c16", "|O", "<U8",
           [], {}, [0, 0, 0], [2**31 - 1] * 3, [2**40, 24, 20], [6, 24], [1, 6, 24, 20],
           {"name": "q", "type": "space"}, True]  # fmt: skip
OUTCOMES: Counter = Counter()  # (store, "read" / "named error"), printed by the slow test
PREDICTED: Counter = Counter()  # (store, "predicted" / "named error") of predict, likewise
STORES = ("zarr_v2", "zarr_v3", "ome_0.4", "ome_0.5")


def _write(kind: str, folder: Path) -> Path:
    data = np.random.default_rng(0).integers(0, 4000, (6, 24, 20)).astype(np.uint16)
    if kind.startswith("zarr"):
        return write_zarr(folder / "x.zarr", data, (3, 16, 16), zarr_format=int(kind[-1]))
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    ome = {"version": kind[-3:], "axes": axes, "scale": (2.0, 0.5, 0.5), "name": "x"}
    return write_zarr(folder / "x.ome.zarr", data, (3, 16, 16), ome=ome)


TEMPLATES = {kind: _write(kind, Path(tempfile.mkdtemp(prefix=f"fuzz-{kind}-"))) for kind in STORES}
METADATA = (".zarray", ".zattrs", ".zgroup", "zarr.json")


def _files(store: Path) -> tuple[list[Path], list[Path]]:
    """``(metadata files, chunk files)`` of ``store``, in a fixed order."""
    files = sorted(p for p in store.rglob("*") if p.is_file())
    meta = [p for p in files if p.name in METADATA]
    return meta, [p for p in files if p.name not in METADATA]


def _nodes(value, at=()):
    """Every ``(path of keys, value)`` inside a JSON value (itself first)."""
    yield at, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()  # fmt: skip
    for key, child in items:
        yield from _nodes(child, (*at, key))


def _replace(doc, where: tuple, value, delete: bool):
    if not where:
        return value
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    return doc


metadata_damage = st.tuples(
    st.just("json"), st.integers(0, 10**6), st.integers(0, 10**6),
    st.sampled_from([*range(len(HOSTILE)), "delete", "garble"]),
)  # fmt: skip
chunk_damage = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("flip"), st.integers(0, 10**6),
              st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                       min_size=1, max_size=6)),
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
)  # fmt: skip
mutations = st.one_of(metadata_damage, chunk_damage)


def damage(store: Path, mutation: tuple) -> None:
    """Apply ``mutation`` to the store in place."""
    meta, chunks = _files(store)
    kind = mutation[0]
    if kind == "json":
        path = meta[mutation[1] % len(meta)]
        if mutation[3] == "garble":
            text = path.read_text()
            path.write_text(text[: mutation[2] % max(len(text), 1)])
            return
        doc = json.loads(path.read_text())
        nodes = list(_nodes(doc))
        where, _ = nodes[mutation[2] % len(nodes)]
        hostile = None if mutation[3] == "delete" else HOSTILE[mutation[3]]
        path.write_text(json.dumps(_replace(doc, where, hostile, mutation[3] == "delete")))
        return
    path = chunks[mutation[1] % len(chunks)]
    data = bytearray(path.read_bytes())
    if kind == "delete":
        path.unlink()
    elif kind == "truncate":
        path.write_bytes(data[: int(mutation[2] * len(data))])
    else:
        for where, value in mutation[2]:
            data[int(where * len(data))] ^= value
        path.write_bytes(bytes(data))


def store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def check_damaged_store(kind: str, mutation: tuple, monkeypatch) -> str:
    """Read the damaged store every way we read files; the outcome, or an AssertionError."""
    monkeypatch.setattr(limits, "memory_budget", lambda: MEMORY_BUDGET)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / TEMPLATES[kind].name
        shutil.copytree(TEMPLATES[kind], store)
        damage(store, mutation)
        size, read = store_bytes(store), 0
        tracemalloc.start()
        try:
            read += read_volume(store, finite=False).array.nbytes
            lazy = open_volume(store)
            read += lazy[...].nbytes
            read += lazy[lazy.shape[0] - 1, 1:5].nbytes
            outcome = "read"
        except (ValueError, FileNotFoundError) as err:
            assert str(err).startswith(f"{store}: "), f"{type(err).__name__} not ours: {err}"
            assert "\n" not in str(err).strip(), f"not one line: {err}"
            outcome = "named error"
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    limit = 4 * max(size, read, 1024) + (32 << 20)
    assert peak <= limit, f"{kind} {mutation}: peak {peak:,} bytes for a {size:,}-byte store"
    OUTCOMES[(kind, outcome)] += 1
    return outcome


FAST = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])  # fmt: skip
THOROUGH = settings(FAST, max_examples=300)


@pytest.mark.parametrize("kind", STORES)
@FAST
@given(mutation=mutations)
def test_damaged_stores_read_or_raise_a_named_error(kind: str, mutation: tuple, monkeypatch):
    check_damaged_store(kind, mutation, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORES)
@THOROUGH
@given(mutation=mutations)
def test_damaged_stores_thoroughly(kind: str, mutation: tuple, monkeypatch) -> None:
    check_damaged_store(kind, mutation, monkeypatch)


def _shape_field(kind: str) -> tuple[str, int]:
    """``(metadata file, node index)`` of the first axis of the array's shape."""
    meta, _ = _files(TEMPLATES[kind])
    for i, path in enumerate(meta):
        nodes = list(_nodes(json.loads(path.read_text())))
        for j, (where, _) in enumerate(nodes):
            if where[-2:] == ("shape", 0):
                return i, j
    raise AssertionError(f"{kind}: no shape field")


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("hostile", [2**31 - 1, 2**63, -1, 0])
def test_a_shape_claiming_a_huge_or_no_array_is_refused_before_allocating(
    kind, hostile, monkeypatch
):
    meta, node = _shape_field(kind)
    outcome = check_damaged_store(kind, ("json", meta, node, HOSTILE.index(hostile)), monkeypatch)
    assert outcome == "named error"


@pytest.mark.parametrize("kind", ["zarr_v2", "ome_0.4"])  # blosc-compressed (format 2)
def test_a_blosc_header_claiming_a_huge_chunk_is_refused_before_allocating(kind, monkeypatch):
    # The top byte of the declared size (bytes 4-7): a 1.5 KB chunk would allocate ~1 GB.
    size = _files(TEMPLATES[kind])[1][0].stat().st_size
    where = (7 + 0.5) / size
    assert check_damaged_store(kind, ("flip", 0, [(where, 0x3F)]), monkeypatch) == "named error"


def test_max_voxels_is_checked_on_the_header(tmp_path) -> None:
    store = shutil.copytree(TEMPLATES["ome_0.5"], tmp_path / "x.ome.zarr")
    with pytest.raises(ValueError, match=r"x\.ome\.zarr: \(6, 24, 20\) is 2,880 voxels, more"):
        open_volume(store, max_voxels=1000)


def test_a_deleted_chunk_reads_as_the_fill_value(tmp_path) -> None:
    store = shutil.copytree(TEMPLATES["zarr_v3"], tmp_path / "x.zarr")
    whole = read_volume(store).array
    _, chunks = _files(store)
    chunks[0].unlink()  # the chunk at the origin: (0:3, 0:16, 0:16)
    damaged = read_volume(store).array
    assert damaged[:3, :16, :16].max() == 0
    damaged[:3, :16, :16] = whole[:3, :16, :16]
    np.testing.assert_array_equal(damaged, whole)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", TINY_2D)


def check_predict_on_damaged_store(kind: str, mutation: tuple, folder: Path, ckpt: Path) -> None:
    store = folder / "in" / TEMPLATES[kind].name
    shutil.copytree(TEMPLATES[kind], store)
    damage(store, mutation)
    out = folder / "out"
    summary = predict(config(input=store, output_dir=out, checkpoint=ckpt, tile_size=16,
                             **{"outputs.probabilities": "true"}))  # fmt: skip
    entry = summary["files"][0]
    written = sorted(
        p.name for p in out.iterdir() if p.name not in ("predict_summary.json", REGISTER_NAME)
    )
    if entry["status"] == "failed":
        named = tuple(f"{error}: {store}: " for error in ("ValueError", "BlockFailures"))
        assert entry["error"].startswith(named), entry["error"]
        assert written == [], written  # no output, no partial store
        PREDICTED[(kind, "named error")] += 1
    else:
        stem = store.name.split(".")[0]
        suffix = store.name[len(stem) :]
        assert written == [f"{stem}_labels{suffix}", f"{stem}_probs{suffix}"], written
        labels = open_volume(out / written[0])
        assert labels.shape[-2:] == open_volume(store).shape[-2:]
        PREDICTED[(kind, "predicted")] += 1
    assert leftovers(folder) == []


@pytest.mark.parametrize("kind", STORES)
@settings(max_examples=4, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(mutation=mutations)
def test_predict_on_a_damaged_store_leaves_no_output(tmp_path_factory, ckpt, kind, mutation):
    check_predict_on_damaged_store(kind, mutation, tmp_path_factory.mktemp("damaged"), ckpt)


@pytest.mark.parametrize("kind", STORES)
def test_a_corrupt_chunk_found_by_a_block_removes_the_partial_outputs(
    tmp_path, ckpt, kind, monkeypatch
):
    # In a big store the percentile sample skips most chunks: a block is the first to read it.
    monkeypatch.setattr(driver, "percentile_range", lambda volume, low, high: (0.0, 4000.0))
    mutation = ("flip", 3, [(0.0, 0xFF), (0.5, 0x55)])
    check_predict_on_damaged_store(kind, mutation, tmp_path, ckpt)
    error = json.loads((tmp_path / "out" / "predict_summary.json").read_text())["files"][0]
    assert "cannot read region" in error["error"] and "corrupt or truncated?" in error["error"]


def test_predict_refuses_a_header_claiming_a_huge_volume(tmp_path, ckpt):
    meta, node = _shape_field("ome_0.5")
    store = tmp_path / "in" / "x.ome.zarr"
    shutil.copytree(TEMPLATES["ome_0.5"], store)
    damage(store, ("json", meta, node, HOSTILE.index(2**31 - 1)))
    summary = predict(config(input=store, output_dir=tmp_path / "out", checkpoint=ckpt))
    assert summary["files"][0]["error"] == (
        f"ValueError: {store}: (2147483647, 24, 20) is 1,030,792,150,560 voxels, more than "
        "max_voxels=20,000,000,000; raise max_voxels to process it"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        REGISTER_NAME,
        "predict_summary.json",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORES)
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(mutation=mutations)
def test_predict_on_damaged_stores_thoroughly(tmp_path_factory, ckpt, kind, mutation):
    check_predict_on_damaged_store(kind, mutation, tmp_path_factory.mktemp("damaged"), ckpt)


def test_template_stores_are_what_they_claim() -> None:
    # The damage starts from real stores of each kind: v2 has .zarray, v3 zarr.json, OME groups.
    names = {kind: sorted(p.name for p in _files(TEMPLATES[kind])[0]) for kind in STORES}
    assert names["zarr_v2"] == [".zarray", ".zattrs"]
    assert names["zarr_v3"] == ["zarr.json"]
    assert set(names["ome_0.4"]) == {".zarray", ".zattrs", ".zgroup"}
    assert names["ome_0.5"] == ["zarr.json", "zarr.json"]
    assert math.prod(open_volume(TEMPLATES["ome_0.4"]).shape) == 6 * 24 * 20


@pytest.mark.slow
def test_report_outcomes(capsys) -> None:
    # Runs last in file order, after the thorough tests: benchmarks/RESULTS.md's figures come
    # from here.
    for what, counts in (("read", OUTCOMES), ("predicted", PREDICTED)):
        tried = sum(counts.values())
        named = sum(v for (_, outcome), v in counts.items() if outcome == "named error")
        per_store = dict(sorted(counts.items()))
        with capsys.disabled():
            print(f"\ndamaged stores {what}: {tried}, worked: {tried - named}, named "
                  f"errors: {named}, other errors: 0; per store: {per_store}")  # fmt: skip
