"""Publishing the best checkpoint: only when better than the published one, never from debug
runs; checkpoints (also hostile ones) load with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from unet_seg.models.checkpoint import load_model, read_checkpoint
from unet_seg.training.best_checkpoint import ResumableModelCheckpoint
from unet_seg.training.publish import (
    checkpoint_score,
    debug_reason,
    publish_if_better,
)

MONITOR = "val/dice"


def fake_checkpoint(path: Path, score: float, monitor: str = MONITOR) -> Path:
    """A checkpoint as Lightning writes it: the callback state holds the score of the file."""
    state = {"monitor": monitor, "best_model_score": torch.tensor(score),
             "current_score": torch.tensor(score)}  # fmt: skip
    key = f"ModelCheckpoint{{'monitor': {monitor!r}, 'mode': 'max'}}"
    torch.save({"state_dict": {"w": torch.ones(2) * score}, "callbacks": {key: state}}, path)
    return path


def test_publishes_when_nothing_is_there(tmp_path: Path) -> None:
    best = fake_checkpoint(tmp_path / "best.ckpt", 0.7)
    target = tmp_path / "runs" / "model.ckpt"
    assert publish_if_better(best, 0.7, target, MONITOR, "max")
    published = read_checkpoint(target)
    assert published["publication"] == {
        "monitor": MONITOR, "mode": "max", "score": pytest.approx(0.7), "source": str(best),
    }  # fmt: skip
    assert checkpoint_score(published, MONITOR) == pytest.approx(0.7)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.ckpt"]  # no temporaries


@pytest.mark.parametrize(("old", "new", "replaced"), [(0.9, 0.8, False), (0.8, 0.8, False),
                                                      (0.8, 0.9, True)])  # fmt: skip
def test_replaces_only_a_worse_model(
    tmp_path: Path, old: float, new: float, replaced: bool
) -> None:
    target = fake_checkpoint(tmp_path / "model.ckpt", old)  # published before "publication"
    best = fake_checkpoint(tmp_path / "best.ckpt", new)
    assert publish_if_better(best, new, target, MONITOR, "max") is replaced
    assert checkpoint_score(read_checkpoint(target), MONITOR) == pytest.approx(
        new if replaced else old
    )


def test_min_mode_and_other_monitor(tmp_path: Path) -> None:
    target = fake_checkpoint(tmp_path / "model.ckpt", 0.5, monitor="val/loss")
    best = fake_checkpoint(tmp_path / "best.ckpt", 0.4, monitor="val/loss")
    assert publish_if_better(best, 0.4, target, "val/loss", "min")
    # A model scored on another metric cannot be compared: it is kept.
    other = fake_checkpoint(tmp_path / "other.ckpt", 0.99)
    assert not publish_if_better(other, 0.99, target, MONITOR, "max")
    assert checkpoint_score(read_checkpoint(target), "val/loss") == pytest.approx(0.4)


def test_keeps_an_unreadable_published_file(tmp_path: Path) -> None:
    target = tmp_path / "model.ckpt"
    target.write_bytes(b"not a checkpoint")
    best = fake_checkpoint(tmp_path / "best.ckpt", 0.9)
    assert not publish_if_better(best, 0.9, target, MONITOR, "max")
    assert target.read_bytes() == b"not a checkpoint"
    assert not publish_if_better(best, float("nan"), tmp_path / "new.ckpt", MONITOR, "max")
    assert not (tmp_path / "new.ckpt").exists()


@pytest.mark.parametrize(
    ("options", "reason"),
    [({}, None), ({"fast_dev_run": True}, "fast_dev_run"), ({"overfit_batches": 1}, "overfit"),
     ({"limit_train_batches": 3}, "limit_train_batches=3"),
     ({"limit_train_batches": 1}, "limit_train_batches=1"), ({"limit_val_batches": 1.0}, None),
     ({"limit_val_batches": 0.5}, "limit_val_batches=0.5"), ({"profiler": "simple"}, "profiler")],
)  # fmt: skip
def test_debug_runs_are_recognised(tmp_path: Path, options: dict, reason: str | None) -> None:
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path, **options)
    found = debug_reason(trainer)
    assert found is None if reason is None else reason in found


def test_callback_state_key_matches_lightnings() -> None:
    # Checkpoints of a plain ModelCheckpoint restore into ours (resume of older runs).
    ours = ResumableModelCheckpoint(monitor=MONITOR, mode="max")
    theirs = pl.callbacks.ModelCheckpoint(monitor=MONITOR, mode="max")
    assert ours.state_key == theirs.state_key


class Hostile:
    """Unpickling this runs ``touch <marker>``: what a booby-trapped checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_checkpoint_runs_no_code(tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "payload": Hostile(marker)}, hostile)
    # The variable makes torch's *default* unsafe (torch reads it at each load); our explicit
    # weights_only=True must still refuse, with an error naming the file.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    for load in (read_checkpoint, load_model):
        with pytest.raises(ValueError, match=str(hostile)):
            load(hostile)
    assert not marker.exists()
    with pytest.warns(UserWarning, match="forcing weights_only=False"):
        torch.load(hostile)  # the control: torch's default does run it under this variable
    assert marker.exists()
