"""Roofline arithmetic: useful GFLOP from known MACs, effective GFLOP/s, fraction of the peak."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from unet_seg.models import UNet
from unet_seg.models.roofline import (
    fraction_of_peak,
    gflops,
    macs_per_output_voxel,
    matmul_gflops,
    useful_gflop,
)

# Two levels, 1 -> 4 -> 8 channels, 2 classes, same padding, on 16x16 (MACs per output pixel of
# each layer times its pixels): full resolution conv 1->4 (1*9*4), 4->4 (4*9*4), after the
# up-convolution 8->4 (8*9*4), 4->4 (4*9*4), head (4*2); at 8x8 conv 4->8 (4*9*8) and 8->8
# (8*9*8); the 2x2 up-convolution 8->4: 8*4*4 MACs per input pixel of 8x8.
SAME_16 = (36 + 144 + 288 + 144 + 8) * 256 + (288 + 576) * 64 + 8 * 4 * 4 * 64


def two_levels(padding: str) -> UNet:
    return UNet(2, 1, 2, (4, 8), padding=padding, dropout=0.0)


def forward_flop(model: UNet, spatial: tuple[int, ...]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, *spatial))
    return counter.get_total_flops()


def test_same_padding_useful_work_is_two_flop_per_mac_of_the_written_pixels():
    model = two_levels("same")
    assert forward_flop(model, (16, 16)) == 2 * SAME_16  # the hand count is torch's too
    assert macs_per_output_voxel(model, (16, 16)) == SAME_16 / 256
    assert useful_gflop(model, (16, 16)) == pytest.approx(2 * SAME_16 / 1e9)
    assert useful_gflop(model, (16, 16), count=30) == pytest.approx(30 * 2 * SAME_16 / 1e9)


def test_valid_padding_counts_the_pass_whose_output_is_the_written_region():
    model = two_levels("valid")
    assert model.output_shape((26, 26)) == (10, 10)
    assert useful_gflop(model, (10, 10)) == pytest.approx(forward_flop(model, (26, 26)) / 1e9)


def test_the_2d_benchmark_net_does_73_5_gflop_per_512_slice():
    model = UNet(2, 1, 2, (32, 64, 128, 256), padding="same", dropout=0.0)
    assert useful_gflop(model, (512, 512)) == pytest.approx(73.467, abs=1e-3)


def test_gflops_and_fraction_of_peak():
    assert gflops(73.5, 0.35) == pytest.approx(210.0)
    assert fraction_of_peak(210.0, 328.125) == pytest.approx(0.64)
    with pytest.raises(ValueError, match="seconds must be positive"):
        gflops(1.0, 0.0)
    with pytest.raises(ValueError, match="peak_gflops must be positive"):
        fraction_of_peak(1.0, 0.0)


def test_matmul_peak_is_measured_and_bad_sizes_refused():
    assert matmul_gflops(torch.float32, "cpu", size=64, repeats=1, warmup=0) > 0
    with pytest.raises(ValueError, match="size and repeats must be positive"):
        matmul_gflops(size=0)


def test_the_benchmarks_json_record_carries_the_figures(monkeypatch):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "roofline.py"
    spec = importlib.util.spec_from_file_location("roofline", path)
    roofline = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "roofline", roofline)  # dataclasses look their module up
    spec.loader.exec_module(roofline)
    peaks = roofline.Peaks("cpu", "test CPU", 2, float32=320.0, bf16=160.0)
    ours = roofline.method_figures(73.5, 0.35, peaks, steps_per_s=2.0)
    assert ours == {"seconds": 0.35, "gflop": 73.5, "gflops": 210.0, "fraction_of_peak": 0.6562,
                    "fraction_of_bf16_peak": 1.3125, "steps_per_s": 2.0}  # fmt: skip
    record = roofline.record("inference_2d", peaks, {"ours": ours}, batch=4)
    assert {k: record[k] for k in ("device", "threads", "peak_gflops", "peak_gflops_bf16")} == {
        "device": "cpu",
        "threads": 2,
        "peak_gflops": 320.0,
        "peak_gflops_bf16": 160.0,
    }
    assert record["methods"]["ours"]["fraction_of_peak"] == 0.6562
    assert record["batch"] == 4
    assert "ours" in roofline.roofline_table(peaks, {"ours": ours})
