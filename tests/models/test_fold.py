"""Batch norm folded into the convolutions: the same logits, fewer layers, the original intact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unet_seg.models import UNet
from unet_seg.models.fold import fold_batch_norm, has_batch_norm


def _trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, as after training."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=generator) * 2 + 0.1)
                m.weight.copy_(torch.randn(c, generator=generator))
                m.bias.copy_(torch.randn(c, generator=generator))
    return model.eval()


@pytest.mark.parametrize(
    ("spatial_dims", "padding", "size"), [(2, "same", (36, 28)), (2, "valid", (44, 44)),
                                          (3, "same", (12, 16, 20))],
)  # fmt: skip
def test_folded_equals_unfolded(spatial_dims, padding, size):
    torch.manual_seed(0)
    model = _trained_like(UNet(spatial_dims, 2, 3, (4, 8), padding=padding, norm="batch",
                               dropout=0.0))  # fmt: skip
    x = torch.rand(2, 2, *size)
    folded = fold_batch_norm(model)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    assert not has_batch_norm(folded)
    assert has_batch_norm(model)  # the original keeps its layers (its training may go on)


def test_a_conv_with_bias_keeps_it_and_other_layers_stay():
    conv = nn.Conv2d(1, 3, 3, bias=True)
    model = _trained_like(nn.Sequential(conv, nn.BatchNorm2d(3), nn.ReLU(), nn.BatchNorm2d(3)))
    x = torch.rand(1, 1, 9, 9)
    folded = fold_batch_norm(model)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)
    assert [type(m).__name__ for m in folded] == ["Conv2d", "Identity", "ReLU", "BatchNorm2d"]


def test_a_network_without_batch_norm_is_unchanged():
    model = UNet(2, 1, 2, (4, 8), padding="same", norm=None, dropout=0.0)
    folded = fold_batch_norm(model)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(folded(x), model.eval()(x))
