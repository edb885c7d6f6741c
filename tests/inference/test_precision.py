"""precision=auto: chosen by measured peaks, checked on the network, never from a CPU flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unet_seg.errors import UsageError
from unet_seg.inference import precision as prec
from unet_seg.inference.precision import (
    agreement,
    agrees,
    check_precision,
    choose_precision,
    resolve_precision,
)
from unet_seg.models import roofline

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("peaks", "expected"),
    [
        ({"float32": 320.0, "bf16": 167.0}, "float32"),  # AVX512-BF16 without AMX: half speed
        ({"float32": 320.0, "bf16": 470.0}, "float32"),  # 1.47x: not worth the rounding
        ({"float32": 320.0, "bf16": 480.0}, "bf16"),  # exactly 1.5x
        ({"float32": 300.0, "bf16": 2400.0}, "bf16"),  # AMX
        ({"float32": 300.0, "bf16": None}, "float32"),  # not supported
        ({"float32": 300.0}, "float32"),  # nothing else measured (mps)
        ({"float32": 60e3, "bf16": 900e3, "float16": 900e3}, "bf16"),  # a GPU: tie goes to bf16
        ({"float32": 60e3, "bf16": None, "float16": 120e3}, "float16"),  # pre-Ampere GPU
        ({"float32": 60e3, "bf16": 100e3, "float16": 130e3}, "float16"),  # the faster one
    ],
)
def test_choose_precision_by_measured_peaks(peaks, expected):
    choice = choose_precision(peaks)
    assert choice.precision == expected
    assert choice.reason


def test_choose_precision_needs_a_float32_peak():
    with pytest.raises(ValueError, match="float32 peak"):
        choose_precision({"bf16": 100.0})


def test_agreement_counts_labels_and_the_largest_difference():
    ref = np.zeros((1, 2, 10, 100), np.float32)
    ref[:, 1] = 0.6
    ref[:, 0] = 0.4
    cand = ref.copy()
    cand[0, :, 0, 0] = (0.55, 0.45)  # one voxel of 1000 changes its label
    same, diff = agreement(ref, cand)
    assert same == pytest.approx(0.999)
    assert diff == pytest.approx(0.15)
    assert agrees(ref, ref + 0.009)[0]
    assert not agrees(ref, ref + 0.011)[0]  # probabilities beyond 1e-2
    close = np.stack([np.full((10, 100), 0.498), np.full((10, 100), 0.502)])[None]
    flipped = close.copy()
    flipped[0, :, 0, :2] = np.array([0.502, 0.498])[:, None]  # 2 of 1000 labels, |dp| 0.004
    assert agreement(close, flipped) == pytest.approx((0.998, 0.004))
    assert not agrees(close, flipped)[0]
    flipped[0, :, 0, 1] = (0.498, 0.502)  # 1 of 1000: allowed
    assert agrees(close, flipped)[0]


def fake_probe(diff: float = 0.0, low_seconds: float = 0.5):
    ref = np.random.default_rng(0).dirichlet((1, 1), (1, 32, 32)).transpose(0, 3, 1, 2)
    calls = []

    def probe(name: str):
        calls.append(name)
        return (ref, 1.0) if name == "float32" else (ref + diff, low_seconds)

    return probe, calls


def test_auto_takes_bf16_where_it_is_fast_and_agrees():
    probe, calls = fake_probe(diff=1e-3)
    choice = resolve_precision("auto", CPU, probe, peaks=lambda d: {"float32": 300, "bf16": 2400})
    assert choice.precision == "bf16"
    assert calls == ["float32", "bf16"] * 2  # the speed-up confirmed by a second round


def test_auto_falls_back_to_float32_when_the_probe_disagrees(caplog):
    probe, _ = fake_probe(diff=0.05)
    choice = resolve_precision("auto", CPU, probe, peaks=lambda d: {"float32": 300, "bf16": 2400})
    assert choice.precision == "float32"
    assert "failed the check" in choice.reason
    assert "disagrees with float32" in caplog.text


def test_auto_keeps_float32_when_the_network_itself_gains_nothing():
    probe, _ = fake_probe(low_seconds=0.95)  # matmul says 8x, the network 1.05x
    choice = resolve_precision("auto", CPU, probe, peaks=lambda d: {"float32": 300, "bf16": 2400})
    assert choice.precision == "float32"
    assert "1.05x" in choice.reason


def test_auto_measures_no_probe_where_the_peaks_say_float32():
    probe, calls = fake_probe()
    choice = resolve_precision("auto", CPU, probe, peaks=lambda d: {"float32": 320, "bf16": 167})
    assert choice.precision == "float32"
    assert calls == []


def test_auto_is_float32_for_an_exported_network_and_named_precisions_are_kept():
    def no_peaks(device):
        raise AssertionError("nothing to measure")

    assert resolve_precision("auto", CPU, None, peaks=no_peaks).precision == "float32"
    assert resolve_precision("bf16", CPU, None, peaks=no_peaks).precision == "bf16"
    assert resolve_precision("float32", CPU, None, peaks=no_peaks).reason == "requested"


def test_unknown_or_impossible_precisions_are_usage_errors():
    with pytest.raises(UsageError, match="precision must be one of auto, float32, bf16, float16"):
        check_precision("fp8", CPU)
    with pytest.raises(UsageError, match="float16 runs on a GPU only"):
        check_precision("float16", CPU)


def test_measured_peaks_alternate_and_are_measured_once(monkeypatch):
    prec._measured_peaks.cache_clear()
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0])
        return 100.0

    monkeypatch.setattr(roofline, "matmul_gflops", counting)  # the probe models.roofline runs
    first = prec.measure_peaks(CPU)
    assert prec.measure_peaks(CPU) == first == {"float32": 100.0, "bf16": 100.0}
    assert calls == [torch.float32, torch.bfloat16] * 3  # rounds alternate: load hits both alike
    prec._measured_peaks.cache_clear()


def test_a_speed_up_the_second_round_does_not_confirm_keeps_float32():
    ref = np.full((1, 2, 8, 8), 0.5)
    seconds = iter([1.0, 0.5, 1.0, 1.0])  # float32, bf16, float32, bf16: 2x, then 1x

    def probe(name: str):
        return ref, next(seconds)

    choice = resolve_precision("auto", CPU, probe, peaks=lambda d: {"float32": 300, "bf16": 2400})
    assert choice.precision == "float32"
    assert "1.00x" in choice.reason
