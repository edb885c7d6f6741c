"""``device=``: what exists is used, what does not is a usage error saying why."""

from __future__ import annotations

import pytest
import torch

from unet_seg.errors import UsageError
from unet_seg.inference.runner import resolve_device


def test_auto_and_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "xla", "", "cuda:x"])
def test_unknown_device_names_the_choices(name):
    with pytest.raises(
        UsageError, match=f"device must be auto, cpu, cuda, cuda:N or mps, got '{name}'"
    ):
        resolve_device(name)


def test_missing_cuda_and_a_cuda_index_beyond_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="device 'cuda' requested but CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(
        UsageError, match=r"'cuda:2' requested but there are 2 CUDA devices \(cuda:0..cuda:1\)"
    ):
        resolve_device("cuda:2")


def test_missing_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UsageError, match="device 'mps' requested but MPS is not available"):
        resolve_device("mps")
