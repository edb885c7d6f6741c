"""One run at a time per output: live locks refuse, stale ones are taken over, other hosts'
need steal_locks; through predict, where a second run into one folder meets them."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from tests.prediction.test_predict import TINY_2D, config, save_checkpoint, stack
from unet_seg.io import Volume, write_volume
from unet_seg.io.output_lock import OutputLockedError, lock_path, output_locks
from unet_seg.prediction.batch import predict


def write_lock(target, host, pid) -> None:
    lock_path(target).parent.mkdir(parents=True, exist_ok=True)
    lock_path(target).write_text(json.dumps({"host": host, "pid": pid}))
    old = os.stat(lock_path(target)).st_mtime - 60
    os.utime(lock_path(target), (old, old))


def test_a_lock_is_held_while_the_block_runs_and_removed_after(tmp_path):
    target = tmp_path / "out" / "x_labels.tif"
    with output_locks([target, target]):  # the same output twice: one lock
        owner = json.loads(lock_path(target).read_text())
        assert owner == {"host": socket.gethostname(), "pid": os.getpid()}
    assert not lock_path(target).exists()
    with pytest.raises(RuntimeError), output_locks([target]):
        raise RuntimeError("the work failed")
    assert not lock_path(target).exists()  # released on any exit


def test_live_locks_refuse_stale_ones_are_taken_over(tmp_path, caplog):
    target = tmp_path / "x_labels.tif"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(target, socket.gethostname(), other.pid)
        with pytest.raises(OutputLockedError, match=rf"x_labels\.tif: .*pid {other.pid} on this"):
            with output_locks([target]):
                pass
    finally:
        other.kill(), other.wait()
    with caplog.at_level(logging.WARNING), output_locks([target]):  # its run is gone now
        assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
    assert f"pid {other.pid}" in caplog.text and "taking over" in caplog.text
    write_lock(target, "elsewhere", 1234)  # whether it lives cannot be told from here
    with pytest.raises(OutputLockedError, match=r"host elsewhere \(pid 1234\).*steal_locks=true"):
        with output_locks([target]):
            pass
    with output_locks([target], steal=True):
        pass
    assert not lock_path(target).exists()


def test_a_second_predict_into_a_locked_output_fails_that_input_only(tmp_path, rng):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", TINY_2D, seed=0)
    for name in ("a", "b"):
        write_volume(tmp_path / "in" / f"{name}.tif", Volume(stack(rng, (2, 37, 45))))
    out = tmp_path / "out"
    write_lock(out / "a_labels.tif", "node7", 4242)  # a run on another host writes a's labels
    summary = predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt))
    status = {e["input"].rsplit("/", 1)[-1]: e for e in summary["files"]}
    assert status["b.tif"]["status"] == "ok" and status["a.tif"]["status"] == "failed"
    assert "node7 (pid 4242)" in status["a.tif"]["error"]
    assert not (out / "a_labels.tif").exists() and lock_path(out / "a_labels.tif").exists()
    assert not lock_path(out / "b_labels.tif").exists()
    again = predict(config(input=tmp_path / "in", output_dir=out, checkpoint=ckpt,
                           steal_locks=True))  # fmt: skip
    assert again["failed"] == 0 and (out / "a_labels.tif").is_file()
    assert not any(p.name.endswith(".lock") for p in out.iterdir())
