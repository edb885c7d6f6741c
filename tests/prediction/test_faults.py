"""Faults during prediction: a full disk, an interruption (Ctrl-C, SIGTERM, kill -9), stale
temporaries, colliding outputs, colour and NaN inputs. Nothing is lost, nothing half-written stays,
and the rest of the batch goes on."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings

from tests.io.test_fuzz_readers import mutate, mutations
from tests.prediction.test_predict import TINY_2D, save_checkpoint
from tests.prediction.test_predict import config as predict_config
from unet_seg import normalization
from unet_seg.errors import UsageError
from unet_seg.inference.inputs import check_channel_option
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.io import slabs as slabs_module
from unet_seg.io.sweep import TEMPORARY_NAMES, sweep_stale_temporaries
from unet_seg.prediction.batch import predict
from unet_seg.prediction.ownership import REGISTER_NAME


def config(**overrides):
    """predict's config without previews: these tests count the outputs a fault leaves."""
    cfg = predict_config(**overrides)
    cfg.outputs.preview = False
    return cfg


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", TINY_2D)


def stack(shape=(3, 40, 48), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(np.uint16)


def leftovers(folder: Path) -> list[str]:
    """Our temporaries anywhere under ``folder``."""
    return sorted(p.name for p in folder.rglob(".*") if TEMPORARY_NAMES.match(p.name))


def failing_for(output_name: str, real, error: OSError):
    """``real`` (an ``os`` call taking a file descriptor first) raising ``error`` for the open
    files whose path contains ``output_name``."""

    def call(fd, *args):
        if output_name in os.readlink(f"/proc/self/fd/{fd}"):
            raise error
        return real(fd, *args)

    return call


def test_full_disk_is_a_named_error_and_the_batch_goes_on(tmp_path, ckpt, monkeypatch):
    write_volume(tmp_path / "in" / "big.tif", Volume(stack((4, 64, 64))))
    write_volume(tmp_path / "in" / "small.tif", Volume(stack(seed=1)))
    full = OSError(errno.ENOSPC, "No space left on device")  # room for the small file only
    monkeypatch.setattr(os, "posix_fallocate", failing_for("big_labels", os.posix_fallocate, full))
    out = tmp_path / "out"
    summary = predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt))
    status = {Path(e["input"]).name: e for e in summary["files"]}
    assert status["small.tif"]["status"] == "ok" and status["big.tif"]["status"] == "failed"
    assert status["big.tif"]["error"] == (
        f"OutputWriteError: {out / 'big_labels.tif'}: cannot write the output: "
        "no space left on the device"
    )
    assert json.loads((out / "predict_summary.json").read_text())["failed"] == 1
    assert sorted(p.name for p in out.iterdir()) == [
        REGISTER_NAME,
        "predict_summary.json",
        "small_labels.tif",
    ]
    assert leftovers(out) == []


def test_an_io_error_while_writing_is_a_named_error_not_a_crash(tmp_path, ckpt, monkeypatch):
    # Outputs are written with pwrite, not through a memory map: a refused write (a failing
    # disk, a vanished network share) used to be a SIGBUS that killed the whole batch.
    write_volume(tmp_path / "in" / "bad.tif", Volume(stack((4, 64, 64))))
    write_volume(tmp_path / "in" / "good.tif", Volume(stack(seed=1)))
    eio = OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "pwrite", failing_for("bad_labels", os.pwrite, eio))
    out = tmp_path / "out"
    summary = predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt))
    status = {Path(e["input"]).name: e for e in summary["files"]}
    assert status["bad.tif"]["status"] == "failed" and status["good.tif"]["status"] == "ok"
    assert status["bad.tif"]["error"] == (
        f"OutputWriteError: {out / 'bad_labels.tif'}: cannot write the output: Input/output error"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        REGISTER_NAME,
        "good_labels.tif",
        "predict_summary.json",
    ]
    assert leftovers(out) == []


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 1 MiB tmpfs (root and a working ``mount`` only), unmounted afterwards."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_tmpfs(tmp_path, ckpt, small_tmpfs):
    # A real full disk: the 1.6 MB label map does not fit in 1 MiB, the small one does.
    write_volume(tmp_path / "in" / "big.tif", Volume(stack((25, 256, 256))))
    write_volume(tmp_path / "in" / "small.tif", Volume(stack(seed=1)))
    summary = predict(config(input=tmp_path / "in", output_dir=small_tmpfs, checkpoint=ckpt))
    status = {Path(e["input"]).name: e for e in summary["files"]}
    assert status["big.tif"]["status"] == "failed"
    assert "big_labels.tif: cannot write the output: no space left" in status["big.tif"]["error"]
    assert status["small.tif"]["status"] == "ok"
    assert (small_tmpfs / "predict_summary.json").is_file() and leftovers(small_tmpfs) == []


def test_interrupt_cleans_up_and_writes_the_summary(tmp_path, ckpt, monkeypatch):
    for name in ("a", "b"):
        write_volume(tmp_path / "in" / f"{name}.tif", Volume(stack((6, 40, 48))))
    out = tmp_path / "out"
    real_write, calls = slabs_module.SlabWriter.write_box, []

    def interrupted_write(self, *args, **kwargs):  # Ctrl-C (or SIGTERM) in the middle of a.tif
        calls.append(1)
        if len(calls) == 2:  # a.tif's second block of three
            raise KeyboardInterrupt
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(slabs_module.SlabWriter, "write_box", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt, batch_size=1,
                       block_size="[2,40,48]"))  # fmt: skip
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["interrupted"] and [e["status"] for e in summary["files"]] == ["interrupted"]
    assert not (out / "a_labels.tif").exists() and leftovers(out) == []
    monkeypatch.setattr(slabs_module.SlabWriter, "write_box", real_write)
    assert predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt))["ok"] == 2


def test_sweep_removes_only_our_stale_unlocked_temporaries(tmp_path):
    names = {".unet-seg-tmp-ab12cd34-x.json": "stale",
             ".x_labels.tif.unet-seg-partial-0123abcd": "stale",
             ".x_labels.nii.gz.unet-seg-partial-0123abcd.raw": "stale",
             ".x.tif.unet-seg-labels-89abcdef.tif": "stale",
             ".locked.tif.unet-seg-partial-fedcba98": "locked",
             ".fresh.tif.unet-seg-partial-00000000": "fresh",
             # Another program's hidden temporaries, in the names older versions used:
             ".tmp-ab12cd34-x.json": "theirs", ".x_labels.tif.partial-0123abcd": "theirs",
             ".x.tif.labels-89abcdef.tif": "theirs",
             ".hidden-user-file": "theirs", "x_labels.tif": "theirs"}  # fmt: skip
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()  # a subfolder predict writes nothing into is not looked at
    (tmp_path / "sub" / ".unet-seg-tmp-ab12cd34-y.json").write_bytes(b"y")
    old = time.time() - 3600
    for path in [*(tmp_path / n for n, k in names.items() if k != "fresh"),
                 tmp_path / "sub" / ".unet-seg-tmp-ab12cd34-y.json"]:  # fmt: skip
        os.utime(path, (old, old))
    holder = os.open(tmp_path / ".locked.tif.unet-seg-partial-fedcba98", os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a live writer
    try:
        removed = sweep_stale_temporaries([tmp_path / "x_labels.tif"], started=time.time() - 60)
    finally:
        os.close(holder)
    assert sorted(p.name for p in removed) == sorted(n for n, k in names.items() if k == "stale")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(n for n, k in names.items() if k != "stale"), "sub"]
    )
    assert (tmp_path / "sub" / ".unet-seg-tmp-ab12cd34-y.json").exists()


@pytest.mark.parametrize(
    "names", [("a/x.tif", "b/x.tif"), ("x.tif", "x.TIF"), ("x.png", "x.tif")]
)  # fmt: skip
def test_colliding_outputs(tmp_path, ckpt, names):
    for name in names:
        write_volume(tmp_path / "in" / name, Volume(stack((40, 48)).astype(np.uint8)))
    inputs = [str(tmp_path / "in" / n) for n in names]
    cfg = config(input=f"[{','.join(inputs)}]", output_dir=tmp_path / "out", checkpoint=ckpt,
                 **{"outputs.probabilities": "true"})  # fmt: skip
    if names[0].startswith("a/"):  # different folders: mirrored under output_dir
        assert predict(cfg)["ok"] == 2
        assert (tmp_path / "out" / "a" / "x_labels.tif").is_file()
        assert (tmp_path / "out" / "b" / "x_labels.tif").is_file()
        return
    with pytest.raises(UsageError, match="would both write") as info:
        predict(cfg)
    assert all(i in str(info.value) for i in inputs)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*_labels*"))


def test_colour_image_is_predicted_on_its_luminance(tmp_path, ckpt):
    rgb = np.random.default_rng(3).integers(0, 255, (40, 48, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    grey = rgb.astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], np.float32)
    tifffile.imwrite(tmp_path / "grey.tif", grey.astype(np.float32))
    summary = predict(config(input=f"[{tmp_path / 'rgb.tif'},{tmp_path / 'grey.tif'}]",
                             output_dir=tmp_path / "out", checkpoint=ckpt))  # fmt: skip
    assert summary["ok"] == 2
    labels = read_volume(tmp_path / "out" / "rgb_labels.tif").array
    assert labels.shape == (40, 48)  # one grey label map, not 3 slices or a colour image
    np.testing.assert_array_equal(labels, read_volume(tmp_path / "out" / "grey_labels.tif").array)


def test_separate_channels_are_refused_for_a_one_channel_model(tmp_path, ckpt):
    tifffile.imwrite(tmp_path / "two.tif", stack((4, 2, 40, 48)), imagej=True,
                     metadata={"axes": "ZCYX"})  # fmt: skip
    summary = predict(config(input=tmp_path / "two.tif", output_dir=tmp_path / "out",
                             checkpoint=ckpt))  # fmt: skip
    assert "2 separate channels" in summary["files"][0]["error"]
    assert "channel=0..1" in summary["files"][0]["error"]  # the way out


def test_channel_picks_one_channel_as_if_saved_alone(tmp_path, ckpt):
    # 5 slices: tifffile writes a plain 3- or 4-page stack as planar RGB(A)
    two = np.stack([stack((5, 40, 48), seed=1), stack((5, 40, 48), seed=2)], axis=1)  # ZCYX
    tifffile.imwrite(tmp_path / "two.tif", two, imagej=True, metadata={"axes": "ZCYX"})
    for c in (0, 1):
        tifffile.imwrite(tmp_path / f"alone{c}.tif", two[:, c])
    out = tmp_path / "out"
    for c in (0, 1):
        summary = predict(config(input=tmp_path / "two.tif", output_dir=out / f"c{c}",
                                 checkpoint=ckpt, channel=c))  # fmt: skip
        assert summary["ok"] == 1, summary
    alone = predict(config(input=str(tmp_path / "alone*.tif"), output_dir=out / "alone",
                           checkpoint=ckpt))  # fmt: skip
    assert alone["ok"] == 2
    picked = [read_volume(out / f"c{c}" / "two_labels.tif").array for c in (0, 1)]
    assert picked[0].shape == (5, 40, 48)
    assert not np.array_equal(picked[0], picked[1])  # the channels give different maps
    for c in (0, 1):
        np.testing.assert_array_equal(
            picked[c], read_volume(out / "alone" / f"alone{c}_labels.tif").array
        )


def test_channel_picks_a_time_point_of_a_4d_nifti(tmp_path, ckpt):
    series = np.stack([stack((5, 40, 48), seed=s) for s in (1, 2)])  # (t, z, y, x)
    nib.save(nib.Nifti1Image(series.T.copy(), np.eye(4)), tmp_path / "series.nii.gz")
    nib.save(nib.Nifti1Image(series[1].T.copy(), np.eye(4)), tmp_path / "alone.nii.gz")
    out = tmp_path / "out"
    summary = predict(config(input=tmp_path / "series.nii.gz", output_dir=out, checkpoint=ckpt))
    assert "2 separate channels" in summary["files"][0]["error"]
    assert "channel=0..1" in summary["files"][0]["error"]
    for name, pick in (("series", {"channel": 1}), ("alone", {})):
        summary = predict(config(input=tmp_path / f"{name}.nii.gz", output_dir=out,
                                 checkpoint=ckpt, **pick))  # fmt: skip
        assert summary["ok"] == 1, summary
    picked = read_volume(out / "series_labels.nii.gz").array
    assert picked.shape == (5, 40, 48)
    np.testing.assert_array_equal(picked, read_volume(out / "alone_labels.nii.gz").array)


def test_channel_errors_name_the_file_and_the_problem(tmp_path, ckpt):
    tifffile.imwrite(tmp_path / "two.tif", stack((4, 2, 40, 48)), imagej=True,
                     metadata={"axes": "ZCYX"})  # fmt: skip
    tifffile.imwrite(tmp_path / "grey.tif", stack((5, 40, 48)))
    out = tmp_path / "out"
    summary = predict(config(input=tmp_path / "two.tif", output_dir=out, checkpoint=ckpt,
                             channel=2))  # fmt: skip
    assert summary["files"][0]["error"].endswith(
        "two.tif: channel=2, but the file has channels 0..1 (shape (2, 4, 40, 48))"
    )
    summary = predict(config(input=tmp_path / "grey.tif", output_dir=out, checkpoint=ckpt,
                             channel=0))  # fmt: skip
    assert "grey.tif: no channel axis" in summary["files"][0]["error"]
    assert leftovers(out) == [] and not list(out.glob("*_labels.tif"))
    with pytest.raises(ValueError, match="channel must be >= 0"):
        predict(config(input=tmp_path / "two.tif", output_dir=out, checkpoint=ckpt, channel=-1))


def test_channel_is_refused_for_a_model_of_several_channels() -> None:
    two = SimpleNamespace(in_channels=2, spatial_dims=2)
    with pytest.raises(ValueError, match="this model takes 2 channels"):
        check_channel_option(0, two)
    check_channel_option(None, two)  # unset: the model reads all channels
    check_channel_option(1, SimpleNamespace(in_channels=1, spatial_dims=2))


def test_nan_anywhere_is_found(tmp_path, ckpt, monkeypatch):
    monkeypatch.setattr(normalization, "_PERCENTILE_SAMPLES", 2000)  # a sparse sample
    volume = np.random.default_rng(4).random((40, 40, 40), dtype=np.float32)
    volume[37, 1, 2] = np.nan  # a slice the percentile sample skips
    write_volume(tmp_path / "nan.tif", Volume(volume))
    summary = predict(config(input=tmp_path / "nan.tif", output_dir=tmp_path / "out",
                             checkpoint=ckpt))  # fmt: skip
    assert "1 NaN/Inf values in the image data in rows" in summary["files"][0]["error"]
    assert not (tmp_path / "out" / "nan_labels.tif").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("norm", [{"low": 99.0, "high": 1.0}, {"low": float("nan"), "high": 99}])
def test_nonsense_normalisation_in_the_checkpoint(tmp_path, norm):
    ckpt = save_checkpoint(tmp_path / "bad.ckpt", TINY_2D)
    import torch

    content = torch.load(ckpt, weights_only=True)
    content["hyper_parameters"]["normalization"] = norm
    torch.save(content, ckpt)
    write_volume(tmp_path / "a.tif", Volume(stack()))
    with pytest.raises(ValueError, match=r"bad\.ckpt: the normalisation stored in the checkpoint"):
        predict(config(input=tmp_path / "a.tif", output_dir=tmp_path / "out", checkpoint=ckpt))


@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(mutation=mutations)
def test_a_damaged_input_leaves_no_output(tmp_path_factory, ckpt, mutation):
    folder = tmp_path_factory.mktemp("damaged")
    (folder / "in").mkdir()
    (folder / "in" / "x.tif").write_bytes(mutate("tiff_raw", mutation))
    summary = predict(config(input=folder / "in", output_dir=folder / "out", checkpoint=ckpt,
                             **{"outputs.probabilities": "true"}))  # fmt: skip
    entry = summary["files"][0]
    written = sorted(
        p.name
        for p in (folder / "out").iterdir()
        if p.name not in ("predict_summary.json", REGISTER_NAME)
    )
    if entry["status"] == "failed":
        assert str(folder / "in" / "x.tif") in entry["error"] and written == []
    else:
        assert written == ["x_labels.tif", "x_probs.tif"]
    assert leftovers(folder) == []


def _run_cli(tmp_path: Path, ckpt: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "unet_seg.cli.predict", f"input={tmp_path / 'in'}",
               f"output_dir={tmp_path / 'out'}", f"checkpoint={ckpt}", "progress=false",
               "batch_size=1", "outputs.probabilities=true",
               "probability_dtype=float16"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_mid_write_then_rerun(tmp_path, ckpt, sig):
    write_volume(tmp_path / "in" / "big.tif", Volume(stack((300, 128, 128))))
    process = _run_cli(tmp_path, ckpt)
    deadline = time.time() + 300
    while not leftovers(tmp_path / "out") if (tmp_path / "out").exists() else True:
        assert process.poll() is None and time.time() < deadline, "never saw a partial write"
        time.sleep(0.01)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    if sig == signal.SIGTERM:  # handled like Ctrl-C: cleaned up, summary written
        assert process.returncode == 130 and stderr.strip().endswith("interrupted"), stderr
        assert leftovers(tmp_path / "out") == []
        assert json.loads((tmp_path / "out" / "predict_summary.json").read_text())["interrupted"]
    else:  # nothing can run on kill -9: the partial stays until the next run sweeps it
        assert leftovers(tmp_path / "out") != []
    assert not (tmp_path / "out" / "big_labels.tif").exists()
    rerun = _run_cli(tmp_path, ckpt)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert leftovers(tmp_path / "out") == []
    assert read_volume(tmp_path / "out" / "big_labels.tif").array.shape == (300, 128, 128)


def test_a_swallowed_sigterm_still_stops_at_the_next_file(tmp_path, ckpt):
    """Python drops an exception raised by a signal handler inside a weakref or GC callback;
    the stop request it set is acted on before the next file (and the next block)."""
    from unet_seg.blockwise.engine import InProcess
    from unet_seg.interrupts import clear_stop_request, request_stop

    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / "in" / f"{name}.tif", stack())
    out = tmp_path / "out"
    request_stop()
    try:
        with pytest.raises(KeyboardInterrupt):
            predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt))
        with pytest.raises(KeyboardInterrupt):
            list(InProcess().map(lambda job, index: index, None, range(3)))
    finally:
        clear_stop_request()
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["interrupted"] and [f["status"] for f in summary["files"]] == ["interrupted"]
    assert sorted(p.name for p in out.iterdir()) == ["predict_summary.json"]  # nothing begun
    assert list(InProcess().map(lambda job, index: index, None, range(3))) == [
        (0, 0),
        (1, 1),
        (2, 2),
    ]


def test_outputs_of_another_checkpoint_or_setting_are_predicted_again(tmp_path, ckpt, caplog):
    other = save_checkpoint(tmp_path / "other.ckpt", TINY_2D, seed=7)
    tifffile.imwrite(tmp_path / "s.tif", stack((3, 40, 48), seed=3))
    out = tmp_path / "out"

    def run(checkpoint, **extra):
        summary = predict(config(input=tmp_path / "s.tif", output_dir=out, checkpoint=checkpoint,
                                 **extra))  # fmt: skip
        return summary["files"][0]["status"], read_volume(out / "s_labels.tif").array

    first = run(ckpt)
    assert first[0] == "ok" and run(ckpt)[0] == "skipped"  # an interrupted batch resumes
    with caplog.at_level(logging.WARNING, logger="unet_seg.prediction.batch"):
        status, labels = run(other)
    assert status == "ok" and "made with another checkpoint or other settings" in caplog.text
    assert not np.array_equal(labels, first[1])  # the other network's labels, not the stale ones
    assert run(other)[0] == "skipped"
    assert run(other, tta=True)[0] == "ok" and run(other, tta=True, batch_size=1)[0] == "skipped"
    assert run(ckpt)[1].tolist() == first[1].tolist()  # back to the first: its labels again
    (out / "predict_summary.json").unlink()  # no record of what made them: predicted again
    assert run(ckpt)[0] == "ok"
