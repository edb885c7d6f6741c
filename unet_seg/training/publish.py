"""Publishing a run's best checkpoint to ``runs/<experiment>/model.ckpt`` (predict's default)
only when it beats the model already there, and never from a debug run.

The published file is the best checkpoint plus a ``"publication"`` entry
``{"monitor", "mode", "score", "source"}``, so the next run can compare against it after loading it
with ``weights_only=True``. Files published before this entry existed are scored from the state of
their ``ModelCheckpoint`` callback, which Lightning stores in every checkpoint.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import PassThroughProfiler

from unet_seg.models.checkpoint import read_checkpoint, write_checkpoint

log = logging.getLogger(__name__)
PUBLICATION_KEY = "publication"


def debug_reason(trainer: pl.Trainer) -> str | None:
    """Why ``trainer`` runs a debug configuration (``conf/debug``), or ``None`` for a real run.

    A debug run trains or validates on a part of the data, so its score is not comparable with a
    full run's and its model must not replace the published one.
    """
    if trainer.fast_dev_run:
        return "fast_dev_run"
    if trainer.overfit_batches:
        return f"overfit_batches={trainer.overfit_batches}"
    for name in ("limit_train_batches", "limit_val_batches"):
        value = getattr(trainer, name)
        # An int counts batches (1 is one batch); only the float 1.0 means all of them.
        if value is not None and (isinstance(value, int) or value < 1.0):
            return f"{name}={value}"
    if not isinstance(trainer.profiler, PassThroughProfiler):
        return "a profiler"
    return None


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    score = float(value.item() if isinstance(value, torch.Tensor) else value)
    return None if math.isnan(score) else score


def checkpoint_score(checkpoint: dict[str, Any], monitor: str) -> float | None:
    """The ``monitor`` score a loaded checkpoint was saved with, or ``None`` if it has none."""
    publication = checkpoint.get(PUBLICATION_KEY)
    if isinstance(publication, dict) and publication.get("monitor") == monitor:
        return _as_float(publication.get("score"))
    # A top-k ModelCheckpoint sets current_score to the score of the file it is about to write.
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict):
            if state.get("monitor") == monitor:
                return _as_float(state.get("current_score"))
    return None


def is_better(score: float, than: float, mode: str) -> bool:
    """``score`` strictly better than ``than`` for a ``"max"`` or ``"min"`` metric."""
    return score > than if mode == "max" else score < than


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Two runs finishing together compare and replace one after the other."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def publish_if_better(
    best: str | os.PathLike, score: float | None, target: str | os.PathLike, monitor: str, mode: str
) -> bool:
    """Write ``best`` (scored ``score`` on ``monitor``) to ``target`` when ``target`` does not exist
    or scored worse; returns whether it was published. An unreadable or unscored ``target`` is
    kept (it may be someone's model) and the reason is logged."""
    target = Path(target)
    score = _as_float(score)
    if score is None:
        log.warning("not publishing %s: it has no %s score", best, monitor)
        return False
    with _folder_lock(target.parent):
        return _publish_locked(Path(best), score, target, monitor, mode)


def _publish_locked(best: Path, score: float, target: Path, monitor: str, mode: str) -> bool:
    if target.exists():
        try:
            published = checkpoint_score(read_checkpoint(target), monitor)
        except ValueError as err:
            log.warning("not publishing %s over %s, which is kept: %s", best, target, err)
            return False
        if published is None:
            log.warning(
                "not publishing %s: %s has no %s score to compare with; move it away to publish",
                best, target, monitor,
            )  # fmt: skip
            return False
        if not is_better(score, published, mode):
            log.info(
                "not publishing %s (%s %.4f): %s scored %.4f",
                best,
                monitor,
                score,
                target,
                published,
            )
            return False
    checkpoint = read_checkpoint(best)
    checkpoint[PUBLICATION_KEY] = {
        "monitor": monitor, "mode": mode, "score": score, "source": str(Path(best).resolve()),
    }  # fmt: skip
    write_checkpoint(checkpoint, target)
    log.info("best checkpoint %s (%s %.4f) published to %s", best, monitor, score, target)
    return True
