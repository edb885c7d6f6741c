"""The input convolution kept in float32 under a lower-precision autocast."""

import torch
from torch import nn

from unet_seg.models import UNet
from unet_seg.models.ensemble import EnsembleNetwork
from unet_seg.models.float32_input import Float32Island, float32_input_convolution


def _net() -> UNet:
    return UNet(2, 1, 2, (4, 8), padding="same", norm="batch").eval()


def test_only_the_input_convolution_is_wrapped_and_the_original_is_left_alone():
    net = _net()
    wrapped = float32_input_convolution(net)
    assert isinstance(wrapped.inc[0], Float32Island) and isinstance(net.inc[0], nn.Conv2d)
    islands = [m for m in wrapped.modules() if isinstance(m, Float32Island)]
    assert len(islands) == 1
    x = torch.rand(2, 1, 16, 16)
    with torch.inference_mode():
        assert torch.equal(wrapped(x), net(x))  # float32 without autocast: the same network


def test_under_bf16_autocast_the_input_convolution_reads_the_image_unrounded():
    net = float32_input_convolution(_net())
    seen = {}
    net.inc[0].module.register_forward_hook(lambda m, i, o: seen.update(i=i[0].dtype, o=o.dtype))
    x = torch.rand(1, 1, 16, 16) + 1000.0  # bf16 would round 1000.x to a multiple of 8
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    assert seen == {"i": torch.float32, "o": torch.float32}
    conv = net.inc[0].module
    with torch.inference_mode():
        exact = conv(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(net.inc[0](x), exact)
            assert not torch.equal(conv(x).float(), exact)  # what it avoids


def test_every_member_of_an_ensemble_is_wrapped():
    members = [_net(), _net()]
    ensemble = float32_input_convolution(EnsembleNetwork(members))
    islands = [m for m in ensemble.modules() if isinstance(m, Float32Island)]
    assert len(islands) == 2


def test_a_model_without_an_input_convolution_is_returned_as_it_is():
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    assert float32_input_convolution(model) is model
