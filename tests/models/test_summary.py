"""Architecture arithmetic against independent measurements: autograd and torch's flop counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from unet_seg.cli.summary import summary_from_config
from unet_seg.models import UNet
from unet_seg.models.summary import measure_receptive_field, receptive_field_at, summarize


def test_paper_totals() -> None:
    summary = summarize(UNet(), (572, 572))
    assert summary.total_params == 31_030_658
    assert summary.output_shape == (1, 2, 388, 388)
    assert summary.receptive_field == (188, 188)
    assert summary.receptive_field_range == ((188, 204), (188, 204))
    assert summary.rows[0].receptive_field == (3, 3) and summary.rows[0].jump == (1.0, 1.0)
    bottleneck = next(r for r in summary.rows if r.name == "dropout")
    assert bottleneck.receptive_field == (140, 140) and bottleneck.jump == (16.0, 16.0)
    assert sum(r.params for r in summary.rows) == summary.total_params


@pytest.mark.slow
def test_paper_receptive_field_measured_by_autograd() -> None:
    assert measure_receptive_field(UNet(), (188, 188), (0, 0)) == (188, 188)


@pytest.mark.parametrize(
    ("kwargs", "size", "positions"),
    [
        ({"spatial_dims": 2, "features": (2, 4, 8)}, (60, 60), [(0, 0), (1, 3), (2, 1), (3, 3)]),
        # The paper's depth: the window depends on the position (188 aligned, 204 at 7 or 15).
        ({"spatial_dims": 2, "features": (1, 2, 4, 8, 16)}, (204, 204), [(0, 1), (7, 15)]),
        ({"spatial_dims": 2, "features": (2, 4, 8), "padding": "same"}, (96, 96), [(48, 49)]),
        ({"spatial_dims": 3, "features": (2, 4)}, (24, 24, 24), [(0, 0, 0), (1, 0, 1)]),
    ],
)
def test_receptive_field_trace_matches_autograd(kwargs: dict, size: tuple, positions: list) -> None:
    model = UNet(**kwargs)
    summary = summarize(model, size)
    seen = set()
    for pos in positions:
        measured = measure_receptive_field(model, size, pos)
        assert measured == receptive_field_at(model, size, pos)
        seen.update(measured)
    lo, hi = zip(*summary.receptive_field_range, strict=True)
    if kwargs["features"][-1] == 16:
        assert seen == {188, 204}
    lo, hi = zip(*summary.receptive_field_range, strict=True)
    assert min(seen) >= min(lo) and max(seen) <= max(hi)
    assert measure_receptive_field(model, size, positions[0]) == summary.receptive_field or (
        kwargs.get("padding") == "same"
    )


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        ({"spatial_dims": 2, "features": (8, 16, 32)}, (60, 76)),
        ({"spatial_dims": 3, "features": (4, 8), "norm": "batch"}, (20, 28, 28)),
        ({"spatial_dims": 3, "features": (4, 8), "inplane_pooling": True}, (13, 28, 28)),
    ],
)
def test_macs_agree_with_torch_flop_counter(kwargs: dict, size: tuple) -> None:
    model = UNet(**kwargs).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(2, 1, *size))
    assert 2 * summarize(model, (2, 1, *size)).total_macs == counter.get_total_flops()


def test_activation_memory_counts_every_stored_output() -> None:
    model = UNet(2, features=(4, 8))
    summary = summarize(model, (20, 20))
    # inc: 2 convs (4x18x18, 4x16x16); pool 4x8x8; down convs 8x6x6, 8x4x4; dropout 8x4x4;
    # up 4x8x8; up convs 4x6x6, 4x4x4; head 2x4x4. In-place ReLUs add nothing.
    values = 4 * 18 * 18 + 4 * 16 * 16 + 4 * 64 + 8 * 36 + 8 * 16 + 8 * 16
    values += 4 * 64 + 4 * 36 + 4 * 16 + 2 * 16
    assert summary.activation_bytes == 4 * values


def test_summary_table_and_bad_size() -> None:
    text = summary_from_config({"features": [64, 128, 256, 512, 1024]}, 572).table()
    assert "31,030,658" in text and "188x188" in text
    with pytest.raises(ValueError, match="556 or 572"):
        summary_from_config({}, 570)
