"""Faults while writing zarr / OME-Zarr outputs block by block (predict) and converting
(``unet-seg-convert``): a full disk, an unwritable folder, SIGTERM and ``kill -9`` mid-write.

A full disk or a damaged input is a named error for that file, its partial stores are removed
(they would keep the disk full for the rest of the batch) and the batch goes on. An interruption
keeps the partial stores: they are resumable, so a rerun computes only the missing blocks and
gives what an uninterrupted run gives, and leaves no temporary behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr.storage._local as zarr_local

from tests.cli.test_errors import run_script
from tests.prediction.test_faults import config, leftovers, small_tmpfs  # noqa: F401  (a fixture)
from tests.prediction.test_predict import TINY_2D, save_checkpoint
from unet_seg.cli import convert as convert_cli
from unet_seg.io import Volume, open_volume, write_volume
from unet_seg.io.sweep import sweep_stale_temporaries
from unet_seg.io.zarr.output import write_zarr
from unet_seg.prediction.batch import predict
from unet_seg.prediction.ownership import REGISTER_NAME

ZARR_V2_METADATA = {".zarray", ".zattrs", ".zgroup", ".zmetadata"}


def hidden(folder: Path) -> list[str]:
    """Every hidden name under ``folder`` (our temporaries, partial stores) and zarr's own
    temporaries, but not zarr v2's metadata files (``.zarray``...)."""
    names = {*folder.rglob(".*"), *folder.rglob("*.partial")}
    # Hydra's record of the run's config; the register of the outputs predict wrote.
    kept = ZARR_V2_METADATA | {".hydra", REGISTER_NAME}
    return sorted(str(p.relative_to(folder)) for p in names if p.name not in kept)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", TINY_2D)


def image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(np.uint16)


def ome(kind: str) -> dict | None:
    if kind == "zarr":
        return None
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "yx"]
    return {"version": kind[-3:], "axes": axes, "scale": (0.5, 0.5), "name": "x"}


def two_inputs(folder: Path, kind: str) -> tuple[Path, Path]:
    """``big`` (probabilities of 2 MB as float32) and ``small`` zarr inputs of ``kind``."""
    suffix = ".zarr" if kind == "zarr" else ".ome.zarr"
    big = write_zarr(folder / f"big{suffix}", image((512, 512)), (128, 128), ome=ome(kind))
    small = write_zarr(folder / f"small{suffix}", image((40, 48), 1), (40, 48), ome=ome(kind))
    return big, small


def outcome(summary: dict) -> dict[str, dict]:
    return {Path(e["input"]).name.split(".")[0]: e for e in summary["files"]}


@pytest.mark.parametrize("kind", ["zarr", "ome_0.4", "ome_0.5"])
def test_full_disk_is_a_named_error_and_the_batch_goes_on(tmp_path, ckpt, kind, monkeypatch):
    big, _ = two_inputs(tmp_path / "in", kind)
    real = zarr_local._put

    def full_for_big(path, value, exclusive=False):  # room for the small file only
        if "big_probs" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, value, exclusive)

    monkeypatch.setattr(zarr_local, "_put", full_for_big)
    out = tmp_path / "out"
    summary = predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt,
                             tile_size=64, probability_dtype="float32",
                             **{"outputs.probabilities": "true"}))  # fmt: skip
    status = outcome(summary)
    assert status["small"]["status"] == "ok" and status["big"]["status"] == "failed"
    probs = out / f"big_probs{big.name[3:]}"
    assert status["big"]["error"] == (
        f"OutputWriteError: {probs}: cannot write the output: no space left on the device"
    )
    assert json.loads((out / "predict_summary.json").read_text())["failed"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            REGISTER_NAME,
            "predict_summary.json",
            f"small_labels{big.name[3:]}",
            f"small_probs{big.name[3:]}",
        ]
    )  # neither big's labels (written fine) nor any partial store stays
    assert hidden(out) == []


def test_full_tmpfs(tmp_path, ckpt, small_tmpfs):  # noqa: F811  (the fixture)
    # A real full disk: 2 MB of float32 probabilities do not fit in 1 MiB, the small ones do.
    two_inputs(tmp_path / "in", "ome_0.5")
    summary = predict(config(input=tmp_path / "in", output_dir=small_tmpfs, checkpoint=ckpt,
                             tile_size=64, probability_dtype="float32",
                             **{"outputs.probabilities": "true"}))  # fmt: skip
    status = outcome(summary)
    assert status["big"]["status"] == "failed"
    # Which of big's two stores meets the full disk first depends on the order its blocks are
    # written in (threads), not on what is tested: that the file fails, named, and nothing stays.
    assert re.search(r"big_(probs|labels)\.ome\.zarr: cannot write the output: no space left",
                     status["big"]["error"])  # fmt: skip
    assert status["small"]["status"] == "ok"
    assert (small_tmpfs / "predict_summary.json").is_file() and hidden(small_tmpfs) == []


def test_convert_to_a_full_tmpfs_is_one_line(tmp_path, small_tmpfs, monkeypatch, capsys):  # noqa: F811
    write_volume(tmp_path / "big.tif", Volume(image((16, 256, 256))))  # 2 MB of noise
    target = small_tmpfs / "big.ome.zarr"
    code, lines = run_script_convert([f"input={tmp_path / 'big.tif'}", f"output={target}"],
                                     monkeypatch, capsys)  # fmt: skip
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"unet-seg-convert: {target}: cannot write the output: no space")
    assert not target.exists()  # the partial store stays hidden, to resume when there is room
    assert "rerun to resume" in lines[0]


def run_script_convert(args, monkeypatch, capsys) -> tuple[int, list[str]]:
    monkeypatch.setattr(sys, "argv", ["unet-seg-convert", *args])
    with pytest.raises(SystemExit) as exit_info:
        convert_cli.main()
    return exit_info.value.code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    "option,message",
    [("chunks=[a,8,8]", "chunks must be a whole number >= 1, got 'a'"),
     ("chunks=64", r"chunks must be a list, a size per axis \(\[Z,Y,X\]\), got 64")],
)  # fmt: skip
def test_convert_names_a_bad_chunks_option(tmp_path, monkeypatch, capsys, option, message):
    write_volume(tmp_path / "s.tif", np.zeros((2, 8, 8), np.uint8))
    args = [f"input={tmp_path / 's.tif'}", f"output={tmp_path / 's.ome.zarr'}", option]
    code, lines = run_script_convert(args, monkeypatch, capsys)
    assert code != 0 and len(lines) == 1 and re.search(message, lines[0])
    assert not (tmp_path / "s.ome.zarr").exists()


def test_unwritable_output_folder(tmp_path, ckpt, readonly_dir, monkeypatch, capsys):
    two_inputs(tmp_path / "in", "ome_0.5")
    args = [f"input={tmp_path / 'in'}", f"checkpoint={ckpt}", f"output_dir={readonly_dir}",
            "progress=false"]  # fmt: skip
    code, lines = run_script("predict", args, monkeypatch, capsys)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"unet-seg-predict: {readonly_dir}")
    assert lines[0].endswith(("Read-only file system", "Permission denied")), lines
    target = readonly_dir / "x.ome.zarr"
    code, lines = run_script_convert([f"input={tmp_path / 'in' / 'small.ome.zarr'}",
                                      f"output={target}"], monkeypatch, capsys)  # fmt: skip
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"unet-seg-convert: {target}: cannot write the output")
    assert list(readonly_dir.iterdir()) == []


def test_sweep_removes_zarr_temporaries_a_killed_run_left(tmp_path):
    store = tmp_path / ".x_labels.zarr.unet-seg-partial"
    (store / "c" / "0").mkdir(parents=True)
    (store / "c" / "0" / "1").write_bytes(b"chunk")
    stale = [store / "c" / "0" / f"2.{'ab' * 16}.partial",  # zarr's own half-written chunk
             tmp_path / ".unet-seg-old-0123abcd-y.ome.zarr"]  # an output moved aside  # fmt: skip
    stale[0].write_bytes(b"half")
    (stale[1] / "0").mkdir(parents=True)
    (stale[1] / "zarr.json").write_text("{}")
    old = time.time() - 3600
    for path in [*stale, store / "c" / "0" / "1"]:
        os.utime(path, (old, old))
    removed = sweep_stale_temporaries([tmp_path / "x_labels.zarr"], started=time.time() - 60)
    assert sorted(removed) == sorted(stale)
    assert (store / "c" / "0" / "1").read_bytes() == b"chunk"  # the resumable store stays
    assert not stale[1].exists()


def store_files(store: Path) -> list[Path]:
    return sorted(p.relative_to(store) for p in store.rglob("*"))


def _run_cli(folder: Path, out: str, ckpt: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "unet_seg.cli.predict", f"input={folder / 'in'}",
               f"output_dir={folder / out}", f"checkpoint={ckpt}", "progress=false",
               "tile_size=64", "block_size=[1,64,64]", "outputs.probabilities=true",
               "probability_dtype=float16"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_mid_write_then_rerun_equals_an_uninterrupted_run(tmp_path, ckpt, sig):
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    meta = {"version": "0.5", "axes": axes, "scale": (1.0, 0.5, 0.5), "name": "big"}
    write_zarr(tmp_path / "in" / "big.ome.zarr", image((16, 256, 256)), (1, 64, 64), ome=meta)
    reference = _run_cli(tmp_path, "ref", ckpt)
    assert reference.wait(timeout=600) == 0, reference.communicate()[1]
    process = _run_cli(tmp_path, "out", ckpt)
    records = tmp_path / "out" / ".big_labels.ome.zarr.partial" / ".unet_seg_blocks"
    deadline = time.time() + 300
    while len(list(records.glob("0*.json"))) < 20:  # some blocks written, most not
        assert process.poll() is None and time.time() < deadline, "never saw a block written"
        time.sleep(0.01)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    if sig == signal.SIGTERM:  # handled like Ctrl-C: the summary says so
        assert process.returncode == 130 and stderr.strip().endswith("interrupted"), stderr
        assert json.loads((tmp_path / "out" / "predict_summary.json").read_text())["interrupted"]
    assert not (tmp_path / "out" / "big_labels.ome.zarr").exists()
    assert records.is_dir()  # the partial store stays, to resume
    # A block is done when every output recorded it; the probabilities record theirs last.
    probs = tmp_path / "out" / ".big_probs.ome.zarr.partial" / ".unet_seg_blocks"
    recorded = len(list(probs.glob("0*.json")))
    rerun = _run_cli(tmp_path, "out", ckpt)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    blocks = json.loads((tmp_path / "out" / "predict_summary.json").read_text())["files"][0]
    assert blocks["blocks"]["skipped"] == recorded >= 19 and blocks["blocks"]["failed"] == 0
    assert hidden(tmp_path / "out") == [] and leftovers(tmp_path / "out") == []
    for name in ("big_labels.ome.zarr", "big_probs.ome.zarr"):
        got, want = open_volume(tmp_path / "out" / name), open_volume(tmp_path / "ref" / name)
        assert got.shape == want.shape and got.spacing == want.spacing
        np.testing.assert_array_equal(got[...], want[...])
        assert store_files(tmp_path / "out" / name) == store_files(tmp_path / "ref" / name)
