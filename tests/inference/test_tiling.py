"""Overlap-tile and sliding-window inference reassemble volumes exactly (tiling, stream)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unet_seg.data.patches import reflect_index
from unet_seg.inference.runner import ModelRunner
from unet_seg.inference.stream import predict_tiled
from unet_seg.inference.tiling import importance_map, plan_tiles
from unet_seg.models import UNet
from unet_seg.models.blocks import center_crop


class CropNet(nn.Module):
    """Identity-like 'valid' network: the output is the input cropped by ``margin`` per side.

    Like a U-Net it accepts only sizes ``2 * margin + 2 + period * k``, so tile sizes get rounded.
    """

    def __init__(self, spatial_dims: int, margin: int = 5, period: int = 4, scale: float = 1.0):
        super().__init__()
        self.spatial_dims, self.margin, self.period, self.scale = (
            spatial_dims,
            margin,
            period,
            scale,
        )

    def output_shape(self, shape):
        out = tuple(s - 2 * self.margin for s in shape)
        if len(shape) != self.spatial_dims or any(o < 2 or (o - 2) % self.period for o in out):
            raise ValueError(f"size {shape} does not fit")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * center_crop(x, self.output_shape(x.shape[2:]))


class SameNet(CropNet):
    """Same-padding stand-in: sizes divisible by ``period``; returns ``scale * x`` or a constant."""

    def __init__(self, spatial_dims: int, period: int = 4, constant: float | None = None):
        super().__init__(spatial_dims, margin=0, period=period)
        self.constant = constant

    def output_shape(self, shape):
        if len(shape) != self.spatial_dims or any(s % self.period for s in shape):
            raise ValueError(f"size {shape} does not fit")
        return tuple(shape)

    def forward(self, x):
        return torch.full_like(x, self.constant) if self.constant is not None else x


def raw(model: nn.Module) -> ModelRunner:
    return ModelRunner(model, device="cpu", softmax=False)


@pytest.mark.parametrize("size,start,stop", [(5, -3, 9), (4, -11, 15), (1, -2, 3), (2, -5, 6)])
def test_reflect_indices_match_numpy_reflect(size, start, stop):
    data = np.arange(size)
    padded = np.pad(data, (-start, stop - size), mode="reflect") if size > 1 else None
    idx = reflect_index(np.arange(start, stop), size)
    if padded is not None:
        np.testing.assert_array_equal(data[idx], padded)
    else:
        assert set(idx.tolist()) == {0}
    assert idx.min() >= 0 and idx.max() < size


@pytest.mark.parametrize(
    "shape,tile",
    [((1, 37, 53), 16), ((1, 7, 5), 16), ((1, 64, 64), 64), ((3, 41, 29), 20), ((1, 3, 200), 30)],
)
def test_overlap_tile_2d_reassembles_identity(rng, shape, tile):
    image = rng.standard_normal((1, *shape)).astype(np.float32)
    model = CropNet(2)
    out = predict_tiled(image, model, raw(model), tile_size=tile, batch_size=3)
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize(
    "shape,tile", [((19, 23, 17), 8), ((5, 6, 7), 12), ((33, 9, 40), (10, 6, 14))]
)
def test_overlap_tile_3d_reassembles_identity(rng, shape, tile):
    image = rng.standard_normal((2, *shape)).astype(np.float32)  # 2 channels pass through too
    model = CropNet(3, margin=3, period=2)
    plan = plan_tiles(model, shape, tile)
    assert not plan.blend and all(a.lo == 3 for a in plan.axes)
    out = predict_tiled(image, model, raw(model), tile_size=tile, batch_size=2)
    np.testing.assert_array_equal(out, image)


def test_overlap_tile_output_tiles_abut():
    plan = plan_tiles(CropNet(2), (1, 100, 100), 20)
    ay = plan.axes[1]
    assert ay.in_size - ay.out_size == 10 and ay.out_size == 22
    # Steps are the output size rounded down to the period (4), so every tile sees the pooling
    # grid of an untiled pass; the last tile ends flush with the edge (80 + 22 - 2 mirrored).
    assert ay.starts == (0, 20, 40, 60, 80)
    assert plan.axes[0].starts == (0,)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_sliding_window_constant_model_gives_constant(mode):
    model = SameNet(2, constant=0.7)
    image = np.zeros((1, 3, 50, 37), np.float32)
    out = predict_tiled(image, model, raw(model), tile_size=16, overlap=0.5, blend_mode=mode)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, 0.7, rtol=1e-6)


def test_sliding_window_blends_identity_3d(rng):
    image = rng.standard_normal((1, 21, 30, 18)).astype(np.float32)
    model = SameNet(3)
    plan = plan_tiles(model, image.shape[1:], 8, overlap=0.25)
    assert plan.blend and plan.num_windows > 8
    out = predict_tiled(image, model, raw(model), tile_size=8, overlap=0.25, batch_size=5)
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-6)


def test_importance_map_shape_and_range():
    w = importance_map((1, 9, 8))
    assert w.shape == (1, 9, 8) and w.max() == pytest.approx(1.0) and w.min() > 0
    assert w[0, 4, 0] < w[0, 4, 3]  # decays towards the border
    np.testing.assert_array_equal(importance_map((4, 5), "constant"), np.ones((4, 5)))
    with pytest.raises(ValueError, match="blend mode"):
        importance_map((4,), "cosine")


@pytest.mark.parametrize("spatial_dims,shape,tile", [(2, (3, 75, 61), 24), (3, (13, 17, 15), 6)])
def test_valid_unet_tiled_equals_untiled_forward(rng, spatial_dims, shape, tile):
    """No seams: tiles of a random valid U-Net give exactly one mirror-padded forward pass."""
    model = UNet(spatial_dims, 1, 3, features=(4, 8, 16), padding="valid", dropout=0.0).eval()
    image = rng.standard_normal((1, *shape)).astype(np.float32)
    runner = ModelRunner(model, device="cpu")
    tiled = predict_tiled(image, model, runner, tile_size=tile, batch_size=4)
    plan = plan_tiles(model, shape, tile)
    assert plan.num_windows > (2 if spatial_dims == 2 else 4)  # really tiled

    # Untiled reference: mirror-pad by the margin (more at the far end up to a valid size).
    margin = plan.axes[-1].lo
    net_shape = shape[3 - spatial_dims :]
    sizes = []
    for s in net_shape:
        n = s + 2 * margin
        while True:
            try:
                model.output_shape([n] * spatial_dims)
                break
            except ValueError:
                n += 1
        sizes.append(n)
    pad = [(0, 0)] * (4 - spatial_dims) + [
        (margin, n - s - margin) for s, n in zip(net_shape, sizes, strict=True)
    ]
    padded = np.pad(image, pad, mode="reflect")
    with torch.no_grad():
        x = torch.from_numpy(padded)
        x = x.permute(1, 0, 2, 3) if spatial_dims == 2 else x[None]
        ref = model(x).softmax(1)
        ref = ref.permute(1, 0, 2, 3) if spatial_dims == 2 else ref[0]
    ref = ref[(slice(None), *[slice(0, s) for s in shape])].numpy()
    np.testing.assert_allclose(tiled, ref, atol=2e-5)


def test_flip_tta_of_symmetric_model_is_exact(rng):
    model = CropNet(2)
    image = rng.standard_normal((1, 2, 30, 30)).astype(np.float32)
    runner = ModelRunner(model, device="cpu", tta=True, softmax=False)
    assert len(runner.views) == 8
    out = predict_tiled(image, model, runner, tile_size=16)
    np.testing.assert_allclose(out, image, atol=1e-6)


def test_two_d_model_rejects_thick_tiles():
    with pytest.raises(ValueError, match="one-slice"):
        ModelRunner(CropNet(2), device="cpu")(np.zeros((1, 1, 2, 12, 12), np.float32))


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(SameNet(2), (1, 8, 8), 8, overlap=1.0)
    with pytest.raises(ValueError, match="tile_size"):
        plan_tiles(SameNet(2), (1, 8, 8), (8, 8, 8))


def test_sliding_window_starts_are_spread_evenly():
    plan = plan_tiles(SameNet(2), (1, 300, 50), 128, overlap=0.25)
    # 3 windows of 128 cover 300; 124 is the smallest that still needs only 3 (120 steps by 88:
    # 4), at most 92 voxels apart, the last one flush with the edge.
    assert plan.axes[1].out_size == 124 and plan.axes[1].starts == (0, 88, 176)
    assert plan.axes[2].starts == (0,)
    assert plan.axes[2].in_size == 52  # a 50-voxel axis needs the next size divisible by 4


@pytest.mark.parametrize("size", [37, 100, 256, 300, 517, 1000])
@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_same_padding_windows_shrink_without_adding_windows(size, overlap):
    model = SameNet(2)
    fitted = plan_tiles(model, (1, size, 8), 96, overlap=overlap).axes[1]
    # What the 96-voxel window would need, by the same step rule:
    step = int(96 * (1 - overlap)) // 4 * 4
    count = 1 if size <= 96 else -(-(size - 96) // step) + 1
    assert len(fitted.starts) == count and fitted.out_size <= min(96, -(-size // 4) * 4)
    assert fitted.starts[0] == 0 and fitted.starts[-1] + fitted.out_size >= size  # covered
    gaps = np.diff(fitted.starts)
    assert np.all(fitted.out_size - gaps >= overlap * fitted.out_size - 4)  # overlap kept
    if fitted.out_size > 4:  # and one period smaller would need another window
        smaller = fitted.out_size - 4
        step = round(smaller * (1 - overlap)) // 4 * 4
        assert size > smaller and -(-(size - smaller) // step) + 1 > count


def test_tta_averages_the_eight_views_of_the_square(rng):
    model = UNet(2, 1, 2, features=(4, 8), padding="valid", dropout=0.0).eval()
    tiles = rng.standard_normal((2, 1, 1, 28, 36)).astype(np.float32)  # not square
    out = ModelRunner(model, device="cpu", tta=True)(tiles)
    x = torch.from_numpy(tiles[:, :, 0])
    expected = 0
    with torch.no_grad():
        for k in range(4):
            for flip in (False, True):
                view = torch.rot90(x.flip(3) if flip else x, k, dims=(2, 3))
                probs = torch.rot90(model(view).softmax(1), -k, dims=(2, 3))
                expected = expected + (probs.flip(3) if flip else probs) / 8
        plain = model(x).softmax(1)
    assert out.shape == (2, 2, 1, 12, 20)
    np.testing.assert_allclose(out[:, :, 0], expected.numpy(), atol=1e-6)
    assert not np.allclose(out[:, :, 0], plain.numpy(), atol=1e-3)  # TTA changes something


class SymmetricConvNet(nn.Module):
    """Two valid 3 x 3 convolutions whose kernels are unchanged by quarter turns and flips: the
    network itself commutes with every view, so TTA must not change its output."""

    spatial_dims, num_classes = 2, 2

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Conv2d(3, 2, 3))
        with torch.no_grad():
            for conv in self.convs[::2]:
                w = conv.weight
                w.copy_(sum(torch.rot90(w, k, (2, 3)) + torch.rot90(w.flip(3), k, (2, 3))
                            for k in range(4)) / 8)  # fmt: skip

    def output_shape(self, shape):
        return tuple(s - 4 for s in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


def test_tta_of_an_equivariant_network_changes_nothing(rng):
    model = SymmetricConvNet().eval()
    image = rng.standard_normal((1, 3, 30, 41)).astype(np.float32)
    plain = predict_tiled(image, model, ModelRunner(model, "cpu"), tile_size=(12, 17))
    tta = predict_tiled(image, model, ModelRunner(model, "cpu", tta=True), tile_size=(12, 17))
    np.testing.assert_allclose(tta, plain, atol=1e-5)


def test_tta_makes_a_valid_unet_equivariant_on_non_square_tiles(rng):
    # Averaged over the whole group, the prediction of a turned or flipped tile is the turned or
    # flipped prediction, but only if every view's output is put back on the right voxels.
    model = UNet(2, 1, 2, features=(4, 8), padding="valid", dropout=0.0).eval()
    runner = ModelRunner(model, device="cpu", tta=True)
    tiles = rng.standard_normal((1, 1, 1, 28, 36)).astype(np.float32)
    out = runner(tiles)
    turned = runner(np.ascontiguousarray(np.rot90(tiles, 1, axes=(3, 4))))
    np.testing.assert_allclose(turned, np.rot90(out, 1, axes=(3, 4)), atol=1e-5)
    flipped = runner(np.ascontiguousarray(tiles[..., ::-1, :]))
    np.testing.assert_allclose(flipped, out[..., ::-1, :], atol=1e-5)
    # A square input symmetric under quarter turns gets a symmetric prediction.
    square = rng.standard_normal((1, 1, 1, 28, 28)).astype(np.float32)
    square = sum(np.rot90(square, k, axes=(3, 4)) for k in range(4)).copy()
    probs = runner(square)
    np.testing.assert_allclose(probs, np.rot90(probs, 1, axes=(3, 4)), atol=1e-5)
    plain = ModelRunner(model, device="cpu")(square)
    assert not np.allclose(plain, np.rot90(plain, 1, axes=(3, 4)), atol=1e-3)  # needs the TTA


def test_three_d_tta_flips_only():
    views = ModelRunner(CropNet(3), device="cpu", tta=True).views
    assert len(views) == 8 and all(v.turns == 0 for v in views)
    assert len({v.flips for v in views}) == 8


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cpu_bfloat16_and_memory_formats_stay_close_to_float32(rng, spatial_dims):
    model = UNet(spatial_dims, 1, 2, features=(4, 8), padding="same", dropout=0.0).eval()
    tiles = rng.standard_normal((2, 1, 1 if spatial_dims == 2 else 8, 16, 16)).astype(np.float32)
    plain = ModelRunner(model, "cpu", channels_last=False)(tiles)
    fast = ModelRunner(model, "cpu", channels_last=True)(tiles)
    bf16 = ModelRunner(model, "cpu", cpu_bf16=True)(tiles)
    assert fast.dtype == bf16.dtype == np.float32 and fast.flags.c_contiguous
    np.testing.assert_allclose(fast, plain, atol=1e-5)
    np.testing.assert_allclose(bf16, plain, atol=0.05)
    assert not np.array_equal(bf16, plain)  # really computed in bfloat16


def test_default_tile_of_same_padding_3d_networks_is_sized_by_memory():
    from unet_seg.inference.options import DEFAULT_TILE, SAME_3D_WINDOW_BUDGET, default_tile

    same = UNet(3, 1, 2, (16, 32, 64), padding="same", norm=None)
    assert default_tile(same, (64, 256, 256)) == (64, 48, 48)  # z close to the cube: whole
    assert default_tile(same, (512, 512, 512)) == (48, 48, 48)  # a cube, sides on the step
    assert 16 * np.prod((48, 48, 48)) <= SAME_3D_WINDOW_BUDGET
    # Twice the features: sqrt(2) times the voxels (memory has a part that does not grow).
    wide = UNet(3, 1, 2, (32, 64, 128), padding="same", norm=None)
    assert default_tile(wide, (64, 256, 256)) == (64, 64, 64)
    assert default_tile(wide, (512, 512, 512)) == (64, 64, 64)
    valid = UNet(3, 1, 2, (16, 32, 64), padding="valid", norm=None)
    assert default_tile(valid, (64, 256, 256)) == DEFAULT_TILE[3]  # margins favour big tiles
    assert default_tile(UNet(2, 1, 2, (16, 32)), (1, 512, 512)) == DEFAULT_TILE[2]
