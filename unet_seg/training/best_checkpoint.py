"""A ``ModelCheckpoint`` that keeps its best score when a run resumes into a new folder.

Every run writes into its own ``runs/<experiment>/<time>/checkpoints``; Lightning restores the
best score of a resumed checkpoint only when the folder is the same, so a resumed run would forget
it and call its first (maybe worse) epoch the best. This callback copies the previous best file
into the new folder and restores the score, so the new run only keeps a model that beats it. The
previous run's files are never touched.
"""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class ResumableModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) whose best score survives ``ckpt_path=`` resumes."""

    @property
    def state_key(self) -> str:
        # The parent's key (class name included), so checkpoints written by a plain
        # ModelCheckpoint restore into this one and the other way round.
        return "ModelCheckpoint" + super().state_key[len(type(self).__qualname__) :]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._carried: tuple[Path, float] | None = None
        previous = state_dict.get("dirpath", self.dirpath)
        with warnings.catch_warnings():
            # Lightning's "dirpath has changed ... won't be reloaded": here it is, below.
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        if previous == self.dirpath or self.save_top_k != 1:
            return  # same folder: Lightning restored everything; top-k > 1: no single best
        score = state_dict.get("best_model_score")
        best = Path(state_dict.get("best_model_path") or "")
        if score is None or not best.is_file() or math.isnan(float(score)):
            return
        self._carried = (best, float(score))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        carried = getattr(self, "_carried", None)
        if carried is None or self.dirpath is None:
            return
        best, score = carried
        copy = Path(self.dirpath) / best.name
        if trainer.is_global_zero:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best, copy)
        trainer.strategy.barrier("resumable_checkpoint")
        current = torch.tensor(score)
        self.best_k_models = {str(copy): current}
        self.best_model_path = self.kth_best_model_path = str(copy)
        self.best_model_score = self.kth_value = current
        self._carried = None
        log.info(
            "resumed with the best %s %.4f of %s (copied to %s)", self.monitor, score, best, copy
        )
