"""An interrupted training run (SIGTERM from a scheduler, Ctrl-C) stops as interrupted, keeps its
state to resume from and publishes nothing; the resumed run continues from that step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tests.test_configs import compose_train
from tests.training.test_train import NARROW, QUICK
from unet_seg.training import train as train_module
from unet_seg.training.train import train

SHORT = ["experiment=sample_2d", "augment=none", "data.samples_per_epoch=8",
         "data.val_names=[nuclei_08]", "logger=csv", "callbacks.overlays=null",
         *NARROW, *QUICK]  # fmt: skip


class SignalAt(pl.Callback):
    """Sends ``signum`` to this process after training batch ``step`` (counted from 1)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_training_keeps_its_state_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    def with_signal(group):  # the run's own callbacks plus the one that interrupts it
        built = instantiate_group(group)
        return [*built, SignalAt(3, signum)] if group and "on_interrupt" in group else built

    instantiate_group = train_module.instantiate_group
    monkeypatch.setattr(train_module, "instantiate_group", with_signal)
    previous = signal.getsignal(signal.SIGTERM)
    cfg = compose_train(tmp_path, *SHORT, "trainer.max_epochs=3")  # 2 steps per epoch
    with pytest.raises(KeyboardInterrupt):  # the CLI turns it into "interrupted", exit 130
        train(cfg)
    assert signal.getsignal(signal.SIGTERM) is previous  # Lightning put the handler back
    saved = tmp_path / "out" / "checkpoints" / "interrupted.ckpt"
    state = torch.load(saved, weights_only=True)
    assert state["global_step"] == 3  # mid-epoch 2: not the last epoch's end
    assert not (tmp_path / "runs" / "sample_2d" / "model.ckpt").exists()
    assert not (tmp_path / "out" / "metrics.json").exists()

    monkeypatch.setattr(train_module, "instantiate_group", instantiate_group)
    resumed = compose_train(tmp_path, *SHORT, "trainer.max_epochs=3", f"ckpt_path={saved}",
                            f"output_dir={tmp_path / 'resumed'}")  # fmt: skip
    train(resumed)
    summary = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert summary["epochs"] == 3 and summary["global_step"] == 6
    assert (tmp_path / "runs" / "sample_2d" / "model.ckpt").is_file()


def test_data_loader_workers_leave_stop_signals_to_the_main_process() -> None:
    """A worker ignores SIGTERM and SIGINT (a signal to the process group reaches it too)."""
    code = (
        "import os, signal\n"
        "from unet_seg.data.dataset import init_worker\n"
        "init_worker(0)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print('alive')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "alive", done.stderr


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_training_as_interrupted(tmp_path: Path) -> None:
    """SLURM preemption and ``kill -- -PGID`` signal every process of the job, data-loader
    workers included: the run still exits 130 with ``interrupted.ckpt``, one line, no traceback."""
    script = Path(sys.executable).parent / "unet-seg-train"
    out = tmp_path / "run"
    command = [str(script), "experiment=sample_2d", "data.num_workers=1", "trainer.max_epochs=50",
               "logger=csv", "trainer.enable_progress_bar=false", "callbacks.overlays=null",
               f"output_dir={out}", f"paths.runs_dir={tmp_path / 'runs'}"]  # fmt: skip
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((out / "checkpoints").glob("epoch*.ckpt")):  # workers are up: epoch 1 runs
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "unet-seg-train: interrupted"
    assert "Traceback" not in err and "DataLoader worker" not in err
    assert (out / "checkpoints" / "interrupted.ckpt").is_file()
