"""Property-based tests of the bioimage.io package reader: random ``rdf.yaml`` descriptions
(missing, extra and mistyped keys, long strings, nested junk, weight sources that leave the
package or are devices), random zip structures (odd and traversing entry names, duplicates,
other compressions, deflate bombs, headers that lie about the size, non-zip bytes) and folder
packages. Whatever the package, loading it either gives a working network or raises a
``ValueError``/``FileNotFoundError`` naming the package, within a time guard and with peak
allocation bounded (:data:`PEAK_LIMIT`, far below what a bomb inflates to).

The default suite tries a few examples; ``-m slow`` tries many more.
"""

from __future__ import annotations

import bz2
import copy
import functools
import hashlib
import io
import os
import signal
import struct
import tempfile
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unet_seg.models.checkpoint import load_model_and_tuning, training_target
from unet_seg.models.unet import UNet

PEAK_LIMIT = 64 << 20  # a bomb inflates to 256 MiB; the reader must not get near it
BOMB_BYTES = 256 << 20
TIME_GUARD_S = 60  # one example takes well under a second; past this it hangs
WEIGHTS = "weights_state_dict.pt"
KWARGS = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [2, 4]}
OUTCOMES: Counter = Counter()
VALID = ("edited", [], WEIGHTS)  # the description as written, the weights in place


@functools.cache
def _weights() -> bytes:
    torch.manual_seed(0)
    out = io.BytesIO()
    torch.save(UNet(**KWARGS).state_dict(), out)
    return out.getvalue()


def _rdf() -> dict[str, Any]:
    """A description :func:`load_package` accepts (what ``unet-seg-export`` writes, trimmed)."""
    return {
        "format_version": "0.5.3",
        "type": "model",
        "name": "fuzz",
        "config": {"unet_seg": {"normalization": {"low": 1.0, "high": 99.8},
                                "target": "classes"}},
        "weights": {"pytorch_state_dict": {
            "source": WEIGHTS,
            "sha256": hashlib.sha256(_weights()).hexdigest(),
            "architecture": {"callable": "UNet", "kwargs": dict(KWARGS)},
        }},
    }  # fmt: skip


@functools.cache
def _bomb() -> tuple[bytes, int]:
    """``(raw deflate stream, CRC-32)`` of :data:`BOMB_BYTES` zero bytes (~256 kB): one MiB
    deflated after a full flush (which forgets the history) is the same block every time."""
    packer, chunk = zlib.compressobj(9, zlib.DEFLATED, -15), bytes(1 << 20)
    block = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)
    assert packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH) == block
    crc = 0
    for _ in range(BOMB_BYTES >> 20):
        crc = zlib.crc32(chunk, crc)
    return block * (BOMB_BYTES >> 20) + packer.flush(), crc


def _member(name: str, data: bytes | None, method: str) -> tuple:
    """``(name, method id, stored bytes, CRC-32, size)``; ``data`` None: the bomb."""
    if data is None:
        stream, crc = _bomb()
        return name, 8, stream, crc, BOMB_BYTES
    crc = zlib.crc32(data)
    if method == "stored":
        return name, 0, data, crc, len(data)
    if method == "bzip2":
        return name, 12, bz2.compress(data), crc, len(data)
    if method == "unknown":  # a method no reader has
        return name, 77, data, crc, len(data)
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return name, 8, packer.compress(data) + packer.flush(), crc, len(data)


def _zip_bytes(members: list[tuple], lie: set[str] = frozenset()) -> bytes:
    """A zip of ``members`` written by hand: any names (duplicates, ``..``), any method, and for
    names in ``lie`` a declared size of 200 bytes whatever the member inflates to."""
    out, central = io.BytesIO(), []
    for name, method, stored, crc, size in members:
        encoded, offset = name.encode("utf-8", "surrogatepass"), out.tell()
        size = 200 if name in lie else size
        fields = struct.pack("<HHHHHIIIHH", 20, 0x800, method, 0, 0x21, crc, len(stored), size,
                             len(encoded), 0)  # fmt: skip
        out.write(b"PK\x03\x04" + fields + encoded + stored)
        central.append(b"PK\x01\x02" + struct.pack("<H", 20) + fields
                       + struct.pack("<HHHII", 0, 0, 0, 0, offset) + encoded)  # fmt: skip
    start = out.tell()
    out.write(b"".join(central))
    out.write(b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(central), len(central),
                                            out.tell() - start, start, 0))  # fmt: skip
    return out.getvalue()


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.integers(1_000, 100_000).map(lambda n: "a/." * n),  # huge strings
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
sources = st.just(WEIGHTS) | st.sampled_from([
    WEIGHTS, f"../{WEIGHTS}", f"a/../../{WEIGHTS}", f"/tmp/{WEIGHTS}", "/dev/zero",
    "/proc/self/mem", "", ".", "..", "missing.pt", f"{WEIGHTS}/", "rdf.yaml", "dir/", "link",
]) | junk  # fmt: skip
# Where in the description a value goes: a path of keys from the top.
PLACES = [(), ("config",), ("config", "unet_seg"), ("config", "unet_seg", "normalization"),
          ("config", "unet_seg", "instance_postprocessing"), ("weights",),
          ("weights", "pytorch_state_dict"), ("weights", "pytorch_state_dict", "architecture"),
          ("weights", "pytorch_state_dict", "architecture", "kwargs"),
          ("weights", "pytorch_state_dict", "architecture", "kwargs", "features"),
          ("weights", "pytorch_state_dict", "sha256"),
          ("weights", "pytorch_state_dict", "source")]  # fmt: skip
edits = st.lists(
    st.tuples(st.sampled_from(["set", "delete", "add"]), st.sampled_from(PLACES),
              st.text(max_size=8), junk),
    max_size=3,
)  # fmt: skip
descriptions = st.one_of(
    st.tuples(st.just("edited"), edits, sources),
    st.tuples(st.just("yaml"), st.sampled_from([
        "", "[1, 2", ": :", "a: &a [*a]", "- 1\n- 2\n", "!!python/object:os.system {}",
        "weights: {pytorch_state_dict: {source: *x}}", "\x00\xff\xfe", "a: " + "[" * 5000,
    ]), st.none()),
)  # fmt: skip
ENTRY_NAMES = ["rdf.yaml", "bioimageio.yaml", WEIGHTS, "../rdf.yaml", "/rdf.yaml", "dir/",
               "dir/rdf.yaml", "a/../rdf.yaml", "rdf.yaml/", "link", ""]  # fmt: skip
extras = st.lists(
    st.tuples(st.sampled_from(ENTRY_NAMES) | st.text(max_size=12),
              st.binary(max_size=64) | st.sampled_from([b"bomb"])),
    max_size=4,
)  # fmt: skip
containers = st.one_of(
    st.tuples(st.just("zip"), st.sampled_from(
        ["stored", "deflated", "bzip2", "unknown", "rdf-bomb", "weights-bomb", "weights-lie",
         "rdf-lie"]), st.booleans()),
    st.tuples(st.just("folder"), st.sampled_from(["plain", "link-out", "link-dev", "fifo"]),
              st.booleans()),
    st.tuples(st.just("bytes"), st.binary(max_size=200), st.booleans()),
    st.tuples(st.just("truncated"), st.floats(0.0, 1.0, exclude_max=True), st.booleans()),
)  # fmt: skip


def _describe(description: tuple) -> bytes:
    kind, edits_or_text, source = description
    if kind == "yaml":
        return edits_or_text.encode("utf-8", "surrogatepass")
    rdf = _rdf()
    rdf["weights"]["pytorch_state_dict"]["source"] = copy.deepcopy(source)
    for action, place, key, value in edits_or_text:
        node: Any = rdf
        for part in place[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        last = place[-1] if place else None
        if action == "set" and last is not None:
            node[last] = value
        elif action == "delete" and last is not None:
            node.pop(last, None)
        elif isinstance(node.get(last) if last else node, dict):
            (node[last] if last else node)[key] = value
    return yaml.dump(rdf, Dumper=yaml.CSafeDumper, allow_unicode=True).encode()


def _zip(rdf: bytes, how: str, extra: list, weights_first: bool) -> bytes:
    method = how if how in ("stored", "bzip2", "unknown") else "deflated"
    bombed = how.split("-")[0] if how.endswith(("-bomb", "-lie")) else None
    members = [_member("rdf.yaml", None if bombed == "rdf" else rdf, method),
               _member(WEIGHTS, None if bombed == "weights" else _weights(), method)]  # fmt: skip
    members = members[::-1] if weights_first else members
    members += [_member(name, None if data == b"bomb" else data, method) for name, data in extra]
    lie = {"rdf.yaml" if bombed == "rdf" else WEIGHTS} if how.endswith("-lie") else set()
    return _zip_bytes(members, lie)


def _folder(root: Path, rdf: bytes, how: str, extra: list) -> Path:
    """A folder package: the description, the weights (or a link out of the folder, a link to
    a device, a FIFO in their place) and the extra entries whose names are plain."""
    path = root / "fuzz_package"
    path.mkdir()
    (path / "rdf.yaml").write_bytes(rdf)
    weights = path / WEIGHTS
    if how == "plain":
        weights.write_bytes(_weights())
    elif how == "link-out":
        (root / WEIGHTS).write_bytes(_weights())
        weights.symlink_to(root / WEIGHTS)
    elif how == "link-dev":
        weights.symlink_to("/dev/zero")
    else:
        os.mkfifo(weights)
    (path / "link").symlink_to("/dev/zero")
    (path / "dir").mkdir()
    for name, data in extra:
        plain = 0 < len(name.encode("utf-8", "surrogatepass")) < 200
        if plain and "/" not in name and name not in (".", "..") and "\x00" not in name:
            target = path / name
            if not target.exists() and not target.is_symlink():
                target.write_bytes(b"" if data == b"bomb" else data)
    return path


def _package(root: Path, description: tuple, container: tuple, extra: list) -> Path:
    """The package on disk: ``<root>/fuzz.bioimageio.zip`` or a folder."""
    kind, how, flag = container
    rdf = _describe(description)
    if kind == "folder":
        return _folder(root, rdf, how, extra)
    path = root / "fuzz.bioimageio.zip"
    if kind == "bytes":
        path.write_bytes(how)
        return path
    data = _zip(rdf, "deflated" if kind == "truncated" else how, extra, flag)
    path.write_bytes(data[: int(how * len(data))] if kind == "truncated" else data)
    return path


class Hang(Exception):
    """Raised by the time guard: an example ran past :data:`TIME_GUARD_S`."""


def _hang(signum, frame):
    raise Hang(f"no answer after {TIME_GUARD_S} s")


def _assert_valid(model: Any, normalization: Any, tuning: Any) -> None:
    """What predict needs of a loaded package: the package's network with its weights, usable
    percentiles, tuning that is a mapping or None."""
    from unet_seg.normalization import percentiles

    assert isinstance(model, UNet) and not model.training
    expected = torch.load(io.BytesIO(_weights()), weights_only=True)
    state = model.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert isinstance(normalization, dict)
    low, high = percentiles(normalization)
    assert 0 <= low < high <= 100
    assert tuning is None or isinstance(tuning, dict)


@functools.cache
def _warm_up() -> None:
    """Load a valid package once outside the time guard: PyTorch's first load imports modules
    lazily (seconds on a busy machine), and an import the guard interrupts stays broken."""
    with tempfile.TemporaryDirectory() as folder:
        load_model_and_tuning(_package(Path(folder), VALID, ("zip", "deflated", False), []))


def _named(read, path: Path) -> Any:
    """``read(path)``, or None where it raised a one-line ``ValueError``/``FileNotFoundError``
    naming the package (anything else fails the test)."""
    try:
        return read(path)
    except (ValueError, FileNotFoundError) as err:
        assert str(path) in str(err), f"{type(err).__name__} without the package: {err}"
        assert "\n" not in str(err).strip(), f"not one line: {err}"
        return None


def check_package(description: tuple, container: tuple, extra: list) -> str:
    """Load the package every way predict does; the outcome, or an AssertionError."""
    _warm_up()
    with tempfile.TemporaryDirectory() as folder:
        path = _package(Path(folder), description, container, extra)
        previous = signal.signal(signal.SIGALRM, _hang)
        signal.alarm(TIME_GUARD_S)
        tracemalloc.start()
        try:
            # predict asks what the network learnt (the description only), then loads it
            target = _named(training_target, path)
            loaded = _named(load_model_and_tuning, path)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    assert target is None or isinstance(target, str)
    outcome = "named error" if loaded is None else "model"
    if loaded is not None:
        _assert_valid(*loaded)
    assert peak <= PEAK_LIMIT, f"peak {peak:,} bytes for {container[:2]}"
    OUTCOMES[(container[0], outcome)] += 1
    return outcome


FAST = settings(max_examples=8, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
THOROUGH = settings(max_examples=400, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@FAST
@given(description=descriptions, container=containers, extra=extras)
def test_a_package_loads_or_raises_an_error_naming_it(description, container, extra) -> None:
    check_package(description, container, extra)


@pytest.mark.slow
@THOROUGH
@given(description=descriptions, container=containers, extra=extras)
def test_packages_thoroughly(description, container, extra) -> None:
    check_package(description, container, extra)


@pytest.mark.slow
def test_report_outcomes(capsys) -> None:
    # Runs after the thorough test in file order.
    with capsys.disabled():
        print(f"\npackages tried: {sum(OUTCOMES.values())}, {dict(sorted(OUTCOMES.items()))}")


@pytest.mark.parametrize(
    "container", [("zip", "deflated", False), ("zip", "stored", True), ("folder", "plain", False)]
)
def test_the_untouched_package_loads(container) -> None:
    assert check_package(VALID, container, []) == "model"


@pytest.mark.parametrize("how", ["rdf-bomb", "weights-bomb", "rdf-lie", "weights-lie"])
def test_a_deflate_bomb_is_refused_without_inflating_it(how) -> None:
    """256 MiB deflated to ~256 kB, declared as such or as 200 bytes: refused naming the
    package and the entry, with peak allocation far below what it inflates to."""
    with tempfile.TemporaryDirectory() as folder:
        path = _package(Path(folder), VALID, ("zip", how, False), [])
        assert path.stat().st_size < 1 << 20
        entry = "rdf.yaml" if how.startswith("rdf") else WEIGHTS
        tracemalloc.start()
        try:
            with pytest.raises(ValueError) as caught:
                load_model_and_tuning(path)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert str(path) in str(caught.value) and entry in str(caught.value), caught.value
    assert peak <= PEAK_LIMIT, f"peak {peak:,} bytes"


@pytest.mark.parametrize(
    "source", [f"../{WEIGHTS}", f"a/../../{WEIGHTS}", "/dev/zero", "/proc/self/mem", "link"]
)
@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_a_weights_source_outside_the_package_is_refused_naming_it(source, kind) -> None:
    with tempfile.TemporaryDirectory() as folder:
        container = (kind, "plain" if kind == "folder" else "deflated", False)
        path = _package(Path(folder), ("edited", [], source), container, [])
        with pytest.raises(ValueError) as caught:
            load_model_and_tuning(path)
    assert str(path) in str(caught.value) and source in str(caught.value), caught.value


@pytest.mark.parametrize("how", ["zip", "weights-lie", "folder"])
def test_the_bound_of_a_big_described_network_is_not_allocated(how) -> None:
    """No architecture: the paper's U-Net is described (its weights may take ~140 MB), the file
    holds a tiny one, or a bomb declaring 200 bytes. Found by the fuzz test: weights were read
    with ``read(bound)``, which allocates the bound first (a folder's) or inflates up to it (a
    zip member whose header lies)."""
    edit = [("set", ("weights", "pytorch_state_dict", "architecture"), "", None)]
    container = ("folder", "plain", False) if how == "folder" else ("zip", how, False)
    assert check_package(("edited", edit, WEIGHTS), container, []) == "named error"
