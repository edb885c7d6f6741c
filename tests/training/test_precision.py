"""trainer.precision=auto: the choice from measured peaks, and the trainer config it resolves."""

import pytest
import torch
from omegaconf import OmegaConf

from unet_seg.models import roofline
from unet_seg.training import precision as training_precision
from unet_seg.training.precision import choose_training_precision, resolve_training_precision
from unet_seg.training.train import trainer_config


@pytest.mark.parametrize(
    "peaks,expected",
    [({"float32": 180.0, "bf16": 405.0}, "bf16-mixed"),  # AVX512-BF16 at 2.2x, or AMX
     ({"float32": 320.0, "bf16": 167.0}, "32-true"),  # emulated bf16: half of float32
     ({"float32": 100.0, "bf16": 149.0}, "32-true"),  # just under the 1.5x bar
     ({"float32": 100.0, "bf16": 150.0}, "bf16-mixed"),  # on it
     ({"float32": 100.0, "bf16": None}, "32-true")],  # not measured
)  # fmt: skip
def test_cpu_choice_follows_the_measured_peaks(peaks, expected):
    chosen, reason = choose_training_precision("cpu", peaks)
    assert chosen == expected
    assert reason.endswith("float32") == (expected == "32-true")


def test_gpu_choice_follows_bf16_support():
    assert choose_training_precision("cuda", {}, cuda_bf16=True)[0] == "bf16-mixed"
    assert choose_training_precision("cuda", {}, cuda_bf16=False)[0] == "16-mixed"
    assert choose_training_precision("mps", {})[0] == "32-true"


def test_lightning_values_pass_through_unmeasured():
    def never():
        raise AssertionError("measured although precision was not auto")

    for value in ("32-true", "bf16-mixed", "16-mixed", 32):
        assert resolve_training_precision(value, "cpu", peaks=never) == value


def test_several_cpu_processes_keep_float32_unmeasured():
    def never():
        raise AssertionError("measured for several processes")

    assert resolve_training_precision("auto", "cpu", processes=2, peaks=never) == "32-true"


def test_trainer_config_resolves_auto(monkeypatch):
    fast = {"float32": 180.0, "bf16": 405.0}
    monkeypatch.setattr(training_precision, "measure_cpu_peaks", lambda: fast)
    monkeypatch.setattr(training_precision.torch.cuda, "is_available", lambda: False)
    cfg = OmegaConf.create({"trainer": {"precision": "auto", "accelerator": "cpu", "devices": 1}})
    assert trainer_config(cfg).precision == "bf16-mixed"
    assert cfg.trainer.precision == "auto"  # the composed config is left as the user wrote it
    slow = {"float32": 320.0, "bf16": 167.0}
    monkeypatch.setattr(training_precision, "measure_cpu_peaks", lambda: slow)
    assert trainer_config(cfg).precision == "32-true"


def test_the_cpu_probe_is_the_shared_alternating_one(monkeypatch):
    calls = []

    def counting(dtype, *args, **kwargs):
        calls.append(dtype)
        return 100.0 if dtype == torch.float32 else 220.0

    monkeypatch.setattr(roofline, "matmul_gflops", counting)
    assert training_precision.measure_cpu_peaks() == {"float32": 100.0, "bf16": 220.0}
    assert calls == [torch.float32, torch.bfloat16] * 3
