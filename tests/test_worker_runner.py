"""A Dask worker's runner: its threads take turns on the network, and each worker gets its GPU."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from unet_seg.inference import blockwise
from unet_seg.inference.runner import ModelRunner


class SlowCounter(nn.Module):
    """Returns its input; records how many calls ran at once and torch's threads in each."""

    spatial_dims = 2

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.most_inside = 0
        self.threads_seen: list[int] = []
        self.guard = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.guard:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.threads_seen.append(torch.get_num_threads())
        time.sleep(0.05)
        with self.guard:
            self.inside -= 1
        return x


def call_from_threads(runner: ModelRunner, count: int) -> list[np.ndarray]:
    start = threading.Barrier(count)
    batches = [np.full((1, 1, 1, 4, 4), i, np.float32) for i in range(count)]
    results: list[np.ndarray | None] = [None] * count

    def work(i: int) -> None:
        start.wait()
        results[i] = runner(batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_shared_runner_with_threads_runs_one_batch_at_a_time_on_that_many_threads() -> None:
    model = SlowCounter()
    before = torch.get_num_threads()
    try:
        runner = ModelRunner(model, "cpu", softmax=False, channels_last=False, threads=1)
        results = call_from_threads(runner, 4)
    finally:
        torch.set_num_threads(before)
    assert model.most_inside == 1
    assert model.threads_seen == [1, 1, 1, 1]
    for i, out in enumerate(results):  # each caller got its own batch back
        np.testing.assert_array_equal(out, np.full((1, 1, 1, 4, 4), i, np.float32))


def test_runner_without_threads_lets_callers_overlap() -> None:
    """The control for the test above: the lock, not the model, serialises the calls."""
    model = SlowCounter()
    call_from_threads(ModelRunner(model, "cpu", softmax=False, channels_last=False), 4)
    assert model.most_inside > 1


def test_runner_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        ModelRunner(SlowCounter(), "cpu", threads=0)


@pytest.mark.parametrize(
    ("name", "number"),
    [(3, 3), ("3", 3), ("SLURMCluster-12-3", 3), ("tcp://10.0.0.5:4012", 4012)],
)
def test_worker_number_is_the_last_integer_of_its_name(name, number) -> None:
    assert blockwise._worker_number(name) == number


def test_worker_without_digits_gets_a_stable_number() -> None:
    assert blockwise._worker_number("gpu-worker") == blockwise._worker_number("gpu-worker")
    assert blockwise._worker_number("ab") == ord("a") + ord("b")


def fake_cuda(monkeypatch, gpus: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)


@pytest.mark.parametrize(("name", "device"), [(0, "cuda:0"), (1, "cuda:1"), (2, "cuda:0"),
                                              ("SLURMCluster-4-1", "cuda:1")])  # fmt: skip
def test_each_worker_is_pinned_to_its_own_gpu(monkeypatch, name, device) -> None:
    fake_cuda(monkeypatch, 2)
    monkeypatch.setattr(blockwise, "_current_worker", lambda: SimpleNamespace(name=name))
    assert blockwise._worker_device("auto") == device


def test_explicit_device_and_in_process_runs_are_not_pinned(monkeypatch) -> None:
    fake_cuda(monkeypatch, 2)
    monkeypatch.setattr(blockwise, "_current_worker", lambda: SimpleNamespace(name=1))
    assert blockwise._worker_device("cuda:0") == "cuda:0"
    assert blockwise._worker_device("cpu") == "cpu"
    monkeypatch.setattr(blockwise, "_current_worker", lambda: None)
    assert blockwise._worker_device("auto") == "auto"


def test_in_process_runner_keeps_torch_threads() -> None:
    assert blockwise._worker_threads() is None
