"""The U-Net: paper-exact numbers, shapes in 2D/3D and valid/same mode, input checks, gradients."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from unet_seg.models import UNet
from unet_seg.models.blocks import UpBlock, center_crop
from unet_seg.models.shapes import is_valid_size, nearest_valid_sizes, smallest_valid_size

SMALL = (4, 8, 16)


def test_paper_configuration_parameter_count_and_shape() -> None:
    model = UNet(spatial_dims=2, in_channels=1, num_classes=2)
    assert sum(p.numel() for p in model.parameters()) == 31_030_658
    assert model.output_shape((572, 572)) == (388, 388)


@pytest.mark.slow
def test_paper_configuration_forward() -> None:
    model = UNet().eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)


def test_invalid_size_names_nearest_valid_sizes() -> None:
    with pytest.raises(ValueError, match=r"570.*556 or 572"):
        UNet().output_shape((570, 572))
    assert nearest_valid_sizes(570, depth=5) == (556, 572)
    assert [s for s in range(540, 600) if is_valid_size(s, 5)] == [540, 556, 572, 588]
    assert smallest_valid_size(1, depth=5) == 188  # the smallest input with any output


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(
    ("padding", "size", "expected"),
    [("valid", 44, 4), ("valid", 52, 12), ("same", 12, 12), ("same", 20, 20)],
)
def test_forward_shapes(spatial_dims: int, padding: str, size: int, expected: int) -> None:
    model = UNet(spatial_dims, in_channels=2, num_classes=3, features=SMALL, padding=padding)
    spatial = (size,) * spatial_dims
    out = model(torch.randn(2, 2, *spatial))
    assert out.shape == (2, 3, *(expected,) * spatial_dims)
    assert model.output_shape(spatial) == (expected,) * spatial_dims


@pytest.mark.parametrize(
    ("padding", "size"), [("valid", 46), ("valid", 45), ("valid", 10), ("same", 14), ("same", 13)]
)
def test_sizes_that_do_not_fit_raise(padding: str, size: int) -> None:
    model = UNet(2, features=SMALL, padding=padding)
    with pytest.raises(ValueError, match="nearest valid sizes"):
        model(torch.zeros(1, 1, size, size))


def test_inplane_pooling_keeps_z_unpooled() -> None:
    model = UNet(3, features=SMALL, inplane_pooling=True)
    # z is never pooled, so only its 4-voxel trim per block applies: 25 - 5 * 4 = 5.
    assert model(torch.zeros(1, 1, 25, 44, 44)).shape == (1, 2, 5, 4, 4)
    assert model.downs[0][0].kernel_size == (1, 2, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 4},
        {"features": (8, 12)},
        {"features": ()},
        {"padding": "reflect"},
        {"norm": "group"},
        {"dropout": 1.0},
        {"spatial_dims": 2, "inplane_pooling": True},
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        UNet(**kwargs)


@pytest.mark.parametrize("features", [(4, 8, "abc"), (4, 8.5), "abc", 5, (4, 0)])
def test_features_that_are_not_positive_whole_numbers_are_named(features) -> None:
    with pytest.raises(ValueError, match="features must be a non-empty list of positive ints, got"):
        UNet(2, features=features)


def test_wrong_input_channels_raise() -> None:
    with pytest.raises(ValueError, match="expected input"):
        UNet(2, in_channels=1, features=SMALL)(torch.zeros(1, 3, 44, 44))


def test_output_is_logits_and_gradients_reach_every_parameter() -> None:
    model = UNet(2, features=SMALL, norm="batch")
    out = model(torch.randn(2, 1, 44, 44))
    assert out.min() < 0 or out.max() > 1  # no softmax/sigmoid applied
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_he_normal_initialisation() -> None:
    model = UNet(2, features=(64, 128))
    weight = model.downs[0][1][0].weight  # 128 x 64 x 3 x 3, fan_in 576
    assert abs(weight.std().item() - (2 / 576) ** 0.5) < 0.002
    assert all(
        m.bias.abs().sum() == 0
        for m in model.modules()
        if hasattr(m, "bias") and m.bias is not None
    )


def test_up_block_is_a_2x2_stride_2_transposed_conv_halving_channels() -> None:
    block = UpBlock(2, in_channels=8, out_channels=4)
    assert block.up.kernel_size == (2, 2) and block.up.stride == (2, 2)
    assert block.up.out_channels == 4
    out = block(torch.randn(1, 8, 6, 6), torch.randn(1, 4, 16, 16))
    assert out.shape == (1, 4, 8, 8)


def test_center_crop_takes_the_middle() -> None:
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    assert center_crop(x, (2, 2)).flatten().tolist() == [14.0, 15.0, 20.0, 21.0]
    with pytest.raises(ValueError):
        center_crop(x, (8, 8))


@pytest.mark.parametrize(
    ("spatial_dims", "padding", "norm", "size"),
    [(2, "valid", None, 44), (2, "same", "batch", 24), (3, "valid", "instance", 44),
     (3, "same", None, 16)],
)  # fmt: skip
def test_inference_without_concatenation_equals_the_concatenating_forward(
    spatial_dims: int, padding: str, norm: str | None, size: int
) -> None:
    torch.manual_seed(0)
    model = UNet(spatial_dims, 2, 3, features=(4, 8, 16), padding=padding, norm=norm).eval()
    x = torch.randn(2, 2, *(size,) * spatial_dims)
    reference = model(x).detach()  # autograd on: conv over torch.cat([skip, up])
    with torch.inference_mode(), mock.patch.object(torch, "cat", wraps=torch.cat) as cat:
        lean = model(x)  # the split kernel, no concatenated tensor
    assert cat.call_count == 0
    assert lean.shape == reference.shape
    torch.testing.assert_close(lean, reference, rtol=1e-5, atol=1e-5)
