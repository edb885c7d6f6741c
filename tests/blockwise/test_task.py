"""A Dask worker gets its own GPU, by the number in its name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unet_seg.blockwise import task


@pytest.mark.parametrize(
    ("name", "number"),
    [(3, 3), ("3", 3), ("SLURMCluster-12-3", 3), ("tcp://10.0.0.5:4012", 4012)],
)
def test_worker_number_is_the_last_integer_of_its_name(name, number) -> None:
    assert task._worker_number(name) == number


def test_worker_without_digits_gets_a_stable_number() -> None:
    assert task._worker_number("gpu-worker") == task._worker_number("gpu-worker")
    assert task._worker_number("ab") == ord("a") + ord("b")


def fake_cuda(monkeypatch, gpus: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)


@pytest.mark.parametrize(("name", "device"), [(0, "cuda:0"), (1, "cuda:1"), (2, "cuda:0"),
                                              ("SLURMCluster-4-1", "cuda:1")])  # fmt: skip
def test_each_worker_is_pinned_to_its_own_gpu(monkeypatch, name, device) -> None:
    fake_cuda(monkeypatch, 2)
    monkeypatch.setattr(task, "_current_worker", lambda: SimpleNamespace(name=name))
    assert task._worker_device("auto") == device


def test_explicit_device_and_in_process_runs_are_not_pinned(monkeypatch) -> None:
    fake_cuda(monkeypatch, 2)
    monkeypatch.setattr(task, "_current_worker", lambda: SimpleNamespace(name=1))
    assert task._worker_device("cuda:0") == "cuda:0"
    assert task._worker_device("cpu") == "cpu"
    monkeypatch.setattr(task, "_current_worker", lambda: None)
    assert task._worker_device("auto") == "auto"
