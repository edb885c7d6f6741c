"""3D convolutions of inference run on oneDNN, not PyTorch's unfolding ``slow_conv3d`` (which its
size rule picks for most 3D windows of a batch of one), with the same values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from unet_seg.inference.runner import ModelRunner
from unet_seg.models import UNet
from unet_seg.models.blocks import onednn_convolutions

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN"
)


def conv_kernels(model: torch.nn.Module, x: torch.Tensor, grad: bool = False) -> set[str]:
    """The convolution kernels aten ran for one forward pass."""
    with torch.set_grad_enabled(grad), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    return {e.name for e in prof.events() if "conv" in e.name and "transpose" not in e.name}


def net(padding: str) -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 2, (4, 8, 16), padding=padding, norm=None, dropout=0.0).eval()


@pytest.mark.parametrize(("padding", "size"), [("same", (16, 24, 20)), ("valid", (44, 44, 48))])
def test_inside_the_context_every_3d_convolution_runs_on_onednn(padding, size) -> None:
    model, x = net(padding), torch.rand(1, 1, *size)
    assert "aten::slow_conv3d" in conv_kernels(model, x)  # PyTorch's own choice for these sizes
    with onednn_convolutions():
        kernels = conv_kernels(model, x)
        assert "aten::slow_conv3d" not in kernels and "aten::mkldnn_convolution" in kernels
        assert "aten::mkldnn_convolution" not in conv_kernels(model, x, grad=True)  # training
    assert "aten::slow_conv3d" in conv_kernels(model, x)  # restored on leaving


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_the_runner_gives_the_plain_convolutions_values(padding) -> None:
    model = net(padding)
    size = (16, 24, 20) if padding == "same" else (44, 44, 48)
    tiles = np.random.default_rng(0).random((2, 1, *size), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(tiles)).softmax(1).numpy()
    got = ModelRunner(model, "cpu", channels_last=False)(tiles)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.array_equal(got[0], got[1])  # two different windows, not one broadcast


def test_tracing_inside_the_context_records_plain_convolutions() -> None:
    model, x = net("same"), torch.rand(1, 1, 16, 24, 20)
    with onednn_convolutions(), torch.no_grad():
        graph = str(torch.jit.trace(model, x, check_trace=False).inlined_graph)
    assert "mkldnn_convolution" not in graph and "aten::_convolution" in graph
