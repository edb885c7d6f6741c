"""runtime=torch|compile|onnxruntime: one option, the same probabilities; batch norm folded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unet_seg.errors import UsageError
from unet_seg.inference.runner import ModelRunner, RunnerOptions
from unet_seg.inference.runtimes import OnnxRuntimeForward, check_runtime, prepare
from unet_seg.models import UNet
from unet_seg.models.fold import has_batch_norm

CPU = torch.device("cpu")


def tiny(spatial_dims: int = 2, norm: str | None = None, padding: str = "valid") -> UNet:
    torch.manual_seed(0)
    return UNet(spatial_dims, 1, 2, (4, 8), padding=padding, norm=norm, dropout=0.0).eval()


def tiles(spatial_dims: int, batch: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (batch, 1, 1, size, size) if spatial_dims == 2 else (batch, 1, size, size, size)
    return rng.random(shape, dtype=np.float32)


def test_torch_runtime_is_the_model_itself():
    model = tiny()
    assert prepare(model, "torch", CPU) is model


def test_unknown_runtime_and_exported_networks_are_usage_errors():
    with pytest.raises(UsageError, match="runtime must be one of torch, compile, onnxruntime"):
        check_runtime("tensorrt", tiny())
    with pytest.raises(UsageError, match="runtime=compile needs a checkpoint's network"):
        check_runtime("compile", nn.Conv2d(1, 2, 3))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_onnxruntime_gives_the_torch_probabilities(spatial_dims):
    pytest.importorskip("onnxruntime")
    model = tiny(spatial_dims)
    eager = ModelRunner(model, "cpu", precision="float32")
    onnx = ModelRunner(model, "cpu", precision="float32", runtime="onnxruntime")
    assert isinstance(onnx.model, OnnxRuntimeForward)
    size = 44 if spatial_dims == 2 else 20
    for batch, grow in ((2, 0), (1, 8)):  # dynamic batch and spatial axes
        x = tiles(spatial_dims, batch, size + grow)
        np.testing.assert_allclose(onnx(x), eager(x), atol=1e-5)


def test_batch_norm_is_folded_on_a_copy_with_the_same_probabilities():
    model = tiny(norm="batch", padding="same")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = tiles(2, 2, 32)
    expected = model(torch.from_numpy(x[:, :, 0])).softmax(1)[:, :, None].detach().numpy()
    runner = ModelRunner(model, "cpu", precision="float32")
    assert not has_batch_norm(runner.model)
    assert has_batch_norm(model)  # the caller's network keeps its layers
    np.testing.assert_allclose(runner(x), expected, atol=1e-5)


@pytest.mark.slow  # inductor compiles for a few seconds (more on a loaded machine)
def test_compiled_runtime_gives_the_torch_probabilities():
    model = tiny()
    eager = ModelRunner(model, "cpu", precision="float32")
    compiled = ModelRunner(model, "cpu", precision="float32", runtime="compile")
    x = tiles(2, 2, 44)
    np.testing.assert_allclose(compiled(x), eager(x), atol=1e-5)


def test_runner_options_read_the_config_and_the_deprecated_keys(caplog):
    cfg = {"device": "cpu", "precision": "auto", "runtime": "torch", "channels_last": False,
           "threads": 1, "cpu_bf16": True, "amp": None}  # fmt: skip
    options = RunnerOptions.from_config(cfg)
    assert (options.cpu_bf16, options.amp, options.threads) == (True, None, 1)
    assert "cpu_bf16=true is deprecated: use precision=bf16" in caplog.text
    resolved, reason = options.resolve(tiny())
    assert (resolved.precision, resolved.cpu_bf16, reason) == ("bf16", None, "requested")
    assert options.runner(tiny()).precision == "bf16"
    defaults = RunnerOptions.from_config({})
    assert (defaults.precision, defaults.runtime, defaults.threads) == (None, "torch", None)
    # None keeps the earlier defaults, measuring nothing: float32 on the CPU, float16 on a GPU
    assert RunnerOptions("cpu").resolve(tiny()) == (RunnerOptions("cpu", precision="float32"),
                                                    "requested")  # fmt: skip
    cuda = torch.device("cuda")
    assert RunnerOptions().requested_precision(cuda) == "float16"
    assert RunnerOptions(amp=False).requested_precision(cuda) == "float32"
    assert RunnerOptions(precision="auto").requested_precision(cuda) == "auto"


def test_contradicting_or_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="precision=float32 contradicts cpu_bf16=true"):
        RunnerOptions("cpu", precision="float32", cpu_bf16=True).resolve(tiny())
    with pytest.raises(UsageError, match="runtime=onnxruntime runs float32"):
        RunnerOptions("cpu", precision="bf16", runtime="onnxruntime").resolve(tiny())
    with pytest.raises(UsageError, match="threads must be a positive integer"):
        RunnerOptions.from_config({"threads": 0})


def test_auto_where_bf16_is_slow_runs_float32_without_a_probe(monkeypatch):
    from unet_seg.inference import precision

    monkeypatch.setattr(precision, "measure_peaks", lambda d: {"float32": 320.0, "bf16": 167.0})
    resolved, reason = RunnerOptions("cpu", precision="auto").resolve(tiny())
    assert resolved.precision == "float32"
    assert "0.52x" in reason
