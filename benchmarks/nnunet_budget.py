"""nnU-Net v2 at a wall-clock budget, for ``bench_accuracy.py``: its own fingerprint, plan and
preprocessing (not timed), a subclass of its default trainer that stops at the budget, and its
default inference (sliding window, Gaussian weights, mirroring), on the CPU.

``nnUNetTrainerBudget`` is nnU-Net's ``nnUNetTrainer`` with three changes: epochs of
:data:`ITERATIONS` training and :data:`VAL_ITERATIONS` validation steps (nnU-Net: 250 and 50),
so that the stop lands within one step of the budget; training stops when the clock, started
after nnU-Net's set-up (network, data loaders, unpacking), passes the budget, the validation of
each epoch counting against it; and its poly learning-rate schedule (``lr0 (1 - t)^0.9``) runs
over the fraction ``t`` of the budget used instead of over 1,000 epochs. The class is
constructed here directly, never looked up by name, so nothing is added to nnU-Net's package;
the predictor gets the trained network in memory (``manual_initialization``), as nnU-Net's own
final validation does.

nnU-Net reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` when it is first
imported: :func:`scratch` sets them (to a temporary folder unless they are set already) before
this module imports it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

INSTALL = (
    ".venv/bin/python -m pip install -c .ci/constraints.txt -e '.[peers]' && "
    ".venv/bin/python -m pip uninstall -y torchvision"  # its PyPI wheel fails with the CPU torch
)
ITERATIONS = 10  # training steps per epoch: one epoch overshoots the budget by at most one step
VAL_ITERATIONS = 2  # validation batches per epoch (nnU-Net's pseudo Dice, its EMA picks "best")


def scratch() -> Path:
    """nnU-Net's three folders under one scratch folder (``nnUNet_raw``'s parent when set);
    data augmentation in one background process (``nnUNet_n_proc_DA``, unless set), as ours
    uses one loader worker on 2 cores."""
    root = os.environ.get("nnUNet_raw")
    base = Path(root).parent if root else Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    for name, folder in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                         ("nnUNet_results", "results")):  # fmt: skip
        os.environ.setdefault(name, str(base / folder))
        Path(os.environ[name]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    return base


def available() -> bool:
    """Whether ``nnunetv2`` can be imported (the ``peers`` extra)."""
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        return False
    return True


def poly_lr(initial_lr: float, fraction: float, exponent: float = 0.9) -> float:
    """nnU-Net's poly schedule at ``fraction`` (0..1) of the training: ``lr0 (1 - t)^0.9``."""
    return initial_lr * (1.0 - min(max(fraction, 0.0), 1.0)) ** exponent


class BudgetPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """Poly schedule over the fraction of the budget ``clock()`` says is used; the epoch
    number nnU-Net passes to ``step`` is ignored."""

    def __init__(self, optimizer, initial_lr: float, clock: Callable[[], float]) -> None:
        self.initial_lr, self.clock = initial_lr, clock
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [poly_lr(self.initial_lr, self.clock()) for _ in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def budget_trainer(seconds: float):
    """``nnUNetTrainer`` subclass (see the module docstring) that trains ``seconds``."""
    scratch()
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerBudget(nnUNetTrainer):
        budget_seconds = float(seconds)

        def __init__(self, plans, configuration, fold, dataset_json, device=None) -> None:
            super().__init__(plans, configuration, fold, dataset_json,
                             device if device is not None else torch.device("cpu"))  # fmt: skip
            self.num_iterations_per_epoch = ITERATIONS
            self.num_val_iterations_per_epoch = VAL_ITERATIONS
            self.num_epochs = 10**6  # the clock ends the training, never the epoch count
            self.started: float | None = None
            self.steps, self.train_seconds = 0, 0.0

        def used(self) -> float:
            """Fraction of the budget used (0 before the clock starts)."""
            if self.started is None:
                return 0.0
            return min(1.0, (time.perf_counter() - self.started) / self.budget_seconds)

        def configure_optimizers(self):
            optimizer, _ = super().configure_optimizers()
            return optimizer, BudgetPolyLR(optimizer, self.initial_lr, self.used)

        def train_step(self, batch: dict) -> dict:
            self.lr_scheduler.step()  # anneal within the epoch too: epochs are few and long
            self.steps += 1
            return super().train_step(batch)

        def run_training(self) -> None:
            self.on_train_start()
            self.started = time.perf_counter()
            while self.used() < 1.0:
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = []
                for _ in range(self.num_iterations_per_epoch):
                    outputs.append(self.train_step(next(self.dataloader_train)))
                    if self.used() >= 1.0:
                        break
                self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val = [self.validation_step(next(self.dataloader_val))
                           for _ in range(self.num_val_iterations_per_epoch)]  # fmt: skip
                    self.on_validation_epoch_end(val)
                self.on_epoch_end()
            self.train_seconds = time.perf_counter() - self.started
            self.on_train_end()

    return nnUNetTrainerBudget


def prepare(
    images: Path, labels: Path, train: Sequence[str], val: Sequence[str], dataset_id: int,
    name: str, spatial_dims: int, gpu_memory_gb: float | None = None,
) -> tuple[str, Path]:  # fmt: skip
    """Raw dataset, fingerprint, plan and preprocessing of one configuration (``2d`` or
    ``3d_fullres``), and the split (``splits_final.json``: one fold, ``train``/``val``);
    returns ``(configuration, preprocessed dataset folder)``. ``gpu_memory_gb``: nnU-Net's own
    GPU-memory target for its plan (its default: 8 GB)."""
    base = scratch()
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    from unet_seg.data.to_nnunet import to_nnunet

    folder = f"Dataset{dataset_id:03d}_{name}"
    to_nnunet(images, labels, base / "raw" / folder)
    configuration = "2d" if spatial_dims == 2 else "3d_fullres"
    extract_fingerprints([dataset_id], num_processes=2, check_dataset_integrity=True)
    plan_experiments([dataset_id], gpu_memory_target_in_gb=gpu_memory_gb)
    preprocess([dataset_id], configurations=(configuration,), num_processes=(2,))
    preprocessed = base / "preprocessed" / folder
    split = [{"train": list(train), "val": list(val)}]
    (preprocessed / "splits_final.json").write_text(json.dumps(split, indent=1))
    return configuration, preprocessed


def train(preprocessed: Path, configuration: str, seconds: float):
    """Train fold 0 of the prepared dataset for ``seconds``; returns the trainer."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    trainer_class = budget_trainer(seconds)
    plans = load_json(str(preprocessed / "nnUNetPlans.json"))
    plans["continue_training"] = False  # what its get_trainer_from_args sets for a new run
    dataset_json = load_json(str(preprocessed / "dataset.json"))
    trainer = trainer_class(plans, configuration, 0, dataset_json, torch.device("cpu"))
    trainer.run_training()
    return trainer


def predict(trainer, images: Sequence[np.ndarray], spacing: Sequence[float], workdir: Path):
    """nnU-Net's default inference of the trained ``trainer`` on raw ``(*spatial)`` images, read
    back through its own reader from files like the training data's; returns class maps."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from unet_seg.io import Volume, write_volume

    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)  # fmt: skip
    predictor.manual_initialization(
        trainer.network, trainer.plans_manager, trainer.configuration_manager,
        [trainer.network.state_dict()], trainer.dataset_json, type(trainer).__name__,
        trainer.inference_allowed_mirroring_axes,
    )  # fmt: skip
    reader = trainer.plans_manager.image_reader_writer_class()
    ending = trainer.dataset_json["file_ending"]
    workdir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, image in enumerate(images):
        path = workdir / f"test_{i:03d}_0000{ending}"
        write_volume(path, Volume(image, spacing=tuple(spacing)))
        data, properties = reader.read_images([str(path)])
        seg = predictor.predict_single_npy_array(data, properties)
        out.append(np.asarray(seg).reshape(image.shape))
    return out
