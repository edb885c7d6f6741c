"""An interrupted training run (SIGTERM from a scheduler, Ctrl-C) stops as interrupted, keeps its
state to resume from and publishes nothing; the resumed run continues from that step."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tests.test_configs import compose_train
from tests.training.test_train import QUICK
from unet_seg.training import train as train_module
from unet_seg.training.train import train

SHORT = ["experiment=sample_2d", "augment=none", "data.samples_per_epoch=8",
         "data.val_names=[nuclei_08]", "logger=csv", "callbacks.overlays=null", *QUICK]  # fmt: skip


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
