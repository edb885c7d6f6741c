"""The warning when a planned experiment trains on another device than it was planned for."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from tests.planning.conftest import fingerprint, object_grid, write_dataset
from tests.planning.test_experiment_file import compose_planned
from unet_seg.planning.experiment_file import write_experiment
from unet_seg.planning.fingerprint import fingerprint_data
from unet_seg.planning.machine import Budget, Machine
from unet_seg.planning.plan import make_plan
from unet_seg.training.planned_device import device_warning, warn_if_planned_elsewhere

GIB = 2**30
GPU_PLAN = {"device": "cuda", "memory_gib": 62.4}  # 80 % of an 80 GB card (78 GiB)


def fake_card(monkeypatch, total_gib: float) -> None:
    props = SimpleNamespace(total_memory=int(total_gib * GIB))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)


def test_a_plan_records_its_device_for_training():
    plan = make_plan(fingerprint(), Machine("cuda", int(62.4 * GIB), 1e12, 16), Budget(900))
    assert plan.settings()["planned_for.device"] == "cuda"
    assert plan.settings()["planned_for.memory_gib"] == 62.4


@pytest.mark.parametrize(
    ("planned", "device", "total_gib", "expected"),
    [
        (GPU_PLAN, "cpu", None, "planned for cuda with 62.4 GiB, but trains on cpu"),
        ({"device": "cpu", "memory_gib": 4}, "cuda", 80, "planned for cpu with 4 GiB, but"),
        (GPU_PLAN, "cuda", 24, "this GPU offers 19.2 GiB (80% of 24.0 GiB)"),
        (GPU_PLAN, "cuda", 80, None),  # the card it was planned on
        (GPU_PLAN, "cuda", 60, None),  # 48 GiB usable: above 3/4 of 62.4, the estimate's slack
        ({"device": "cpu", "memory_gib": 4}, "cpu", None, None),
        (None, "cuda", 24, None),  # not a planned experiment, or a run from before plans
        ({"device": None}, "cpu", None, None),
    ],
)
def test_the_warning_names_both_devices(planned, device, total_gib, expected):
    total = None if total_gib is None else int(total_gib * GIB)
    message = device_warning(planned, device, total)
    if expected is None:
        assert message is None
    else:
        assert expected in message and "re-plan here" in message


def test_training_on_a_smaller_card_logs_one_warning(monkeypatch, caplog):
    fake_card(monkeypatch, 16)
    with caplog.at_level(logging.WARNING, logger="unet_seg.training.planned_device"):
        warn_if_planned_elsewhere(GPU_PLAN, torch.device("cuda", 0))
        warn_if_planned_elsewhere(GPU_PLAN, torch.device("cpu"))
    planned = "this experiment was planned for cuda with 62.4 GiB, but "
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        planned + "this GPU offers 12.8 GiB (80% of 16.0 GiB)",
        planned + "trains on cpu",
    ]


def test_the_experiment_file_carries_the_device(tmp_path):
    images, labels = write_dataset(tmp_path / "cells", [object_grid((64, 96), (10, 12), 4)] * 3,
                                   (0.5, 0.5))  # fmt: skip
    gpu = Machine("cuda", int(62.4 * GIB), 1e12, 16)
    plan = make_plan(fingerprint_data(str(images), str(labels)), gpu, Budget(900))
    write_experiment(plan, tmp_path / "plans", "cells")
    cfg = compose_planned(tmp_path / "plans", "cells", tmp_path)
    assert dict(cfg.planned_for) == GPU_PLAN


@pytest.mark.slow  # Lightning starts and trains one step: several seconds
def test_a_gpu_plan_trained_on_the_cpu_warns(tmp_path, caplog):
    from unet_seg.training.train import train

    images, labels = write_dataset(tmp_path / "cells", [object_grid((64, 96), (10, 12), 4)] * 3,
                                   (0.5, 0.5))  # fmt: skip
    gpu = Machine("cuda", int(62.4 * GIB), 1e12, 16)
    plan = make_plan(fingerprint_data(str(images), str(labels)), gpu, Budget(900))
    write_experiment(plan, tmp_path / "plans", "cells")
    cfg = compose_planned(tmp_path / "plans", "cells", tmp_path, "debug=fast_dev_run",
                          "trainer.enable_progress_bar=false", "data.num_workers=0",
                          "trainer.accelerator=cpu")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="unet_seg.training.planned_device"):
        train(cfg)
    (record,) = [r for r in caplog.records if r.name == "unet_seg.training.planned_device"]
    assert "planned for cuda with 62.4 GiB, but trains on cpu" in record.getMessage()
