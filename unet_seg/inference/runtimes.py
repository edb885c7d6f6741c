"""What runs the network's forward pass: ``torch`` (eager, the default), ``compile``
(``torch.compile`` with inductor; compiled on the first batch of each tile shape, which the run's
time includes) or ``onnxruntime`` (the network exported to ONNX in memory and run by ONNX
Runtime, float32). All three take and return the same tensors: ``(B, C, *spatial)`` in,
``(B, K, *output_shape(spatial))`` logits out.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from unet_seg.errors import UsageError
from unet_seg.models import shapes

RUNTIMES = ("torch", "compile", "onnxruntime")
_ONNX_OPSET = 17  # as unet-seg-export writes: every ONNX Runtime since 1.13


def check_runtime(runtime: str, model: nn.Module) -> None:
    """``UsageError`` for an unknown runtime, or one ``model`` cannot use: ``compile`` and
    ``onnxruntime`` work on a checkpoint's network (an exported one runs in its own runtime),
    ``onnxruntime`` only where it is installed."""
    if runtime not in RUNTIMES:
        raise UsageError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime != "torch" and not hasattr(model, "features"):
        raise UsageError(
            f"runtime={runtime} needs a checkpoint's network; {type(model).__name__} runs in "
            "its own runtime (use runtime=torch)"
        )
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UsageError(
                "runtime=onnxruntime needs onnxruntime: pip install 'unet-seg[export]'"
            ) from None


def example_input(model: nn.Module, steps: int = 1) -> torch.Tensor:
    """``(1, in_channels, *spatial)`` float32, seeded: the smallest size ``model`` accepts plus
    ``steps`` size steps on every axis."""
    sizes = []
    for pooled in model.pooled_axes:
        minimum, step, _ = shapes.size_rule(model.depth, model.padding, pooled)
        sizes.append(minimum + steps * step)
    generator = torch.Generator().manual_seed(0)
    return torch.rand((1, int(model.in_channels), *sizes), generator=generator)


def prepare(model: nn.Module, runtime: str, device: torch.device) -> nn.Module:
    """``model`` (on ``device``, eval mode, in its memory format) as ``runtime`` runs it."""
    check_runtime(runtime, model)
    if runtime == "compile":
        return torch.compile(model, backend="inductor")
    if runtime == "onnxruntime":
        return OnnxRuntimeForward(model, device)
    return model


class OnnxRuntimeForward(nn.Module):
    """``model`` exported to ONNX in memory (dynamic batch and spatial axes) and run by an ONNX
    Runtime session: CUDA where ``device`` is a GPU and ONNX Runtime has that provider, else the
    CPU with torch's thread count. Keeps ``model``'s attributes (``spatial_dims``, ...)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        import onnxruntime as ort

        self.spatial_dims = int(model.spatial_dims)
        self.in_channels, self.num_classes = int(model.in_channels), int(model.num_classes)
        self._output_shape = model.output_shape
        axes = {0: "batch", **{2 + i: f"s{i}" for i in range(self.spatial_dims)}}
        out_axes = {0: "batch", **{2 + i: f"o{i}" for i in range(self.spatial_dims)}}
        cpu_model = _cpu_float_copy(model)
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on UNet's shape checks
            torch.onnx.export(
                cpu_model, (example_input(cpu_model),), buffer, dynamo=False,
                opset_version=_ONNX_OPSET, input_names=["input"], output_names=["output"],
                dynamic_axes={"input": axes, "output": out_axes},
            )  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=providers)

    def output_shape(self, input_shape):
        return self._output_shape(input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        (logits,) = self.session.run(None, {"input": array})
        return torch.from_numpy(logits).to(x.device)


def _cpu_float_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
