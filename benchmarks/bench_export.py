"""ONNX Runtime vs the PyTorch model on the 2D inference benchmark's stack, the same tiles.

The stack, the model (a same-padding 2D U-Net, 1.93 M parameters) and the tiling are those of
``bench_inference_2d.py``: ``unet-seg-predict``'s plan and slab stream with its model runner, once
with the PyTorch ``UNet`` and once with the same weights exported by ``unet_seg.export.onnx`` and
run through ``unet_seg.models.exported.OnnxNetwork`` (what ``unet-seg-predict
checkpoint=<file>.onnx`` does). Chunks of slices alternate between the two, so load on a shared
machine hits both alike. Prints seconds, throughput, the ratio and the largest probability
difference, and each runtime's effective GFLOP/s against the float32 matmul peak of the same
threads (``roofline.py``); the last line is the JSON of all figures.

Run: ``python benchmarks/bench_export.py [--slices N] [--batch B] [--chunk C] [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import roofline
import torch


def inference_benchmark():
    """``bench_inference_2d`` as a module, for its stack and model (benchmarks is no package)."""
    path = Path(__file__).with_name("bench_inference_2d.py")
    spec = importlib.util.spec_from_file_location("bench_inference_2d", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tiled(network, image: np.ndarray, batch: int) -> np.ndarray:
    """Foreground probabilities ``(Z, Y, X)`` of ``image`` through predict's tiles and runner."""
    from unet_seg.inference.options import DEFAULT_TILE
    from unet_seg.inference.runner import ModelRunner
    from unet_seg.inference.stream import iter_tiled_predictions
    from unet_seg.inference.tiling import plan_tiles

    plan = plan_tiles(network, image.shape, DEFAULT_TILE[2])
    slabs = iter_tiled_predictions(
        lambda box: image[(None, *box)], image.shape, plan, ModelRunner(network, "cpu"), batch,
        progress=False,
    )  # fmt: skip
    return np.concatenate([p[1] for _, p in slabs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--slices", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="2 slices: a smoke run, no figures")
    args = parser.parse_args()
    if args.quick:
        args.slices, args.chunk = 2, 1
    peaks = roofline.measure_peaks("cpu", quick=args.quick)
    import onnxruntime

    from unet_seg.export.onnx import export_onnx
    from unet_seg.models.exported import load_exported

    bench = inference_benchmark()
    image, source = bench.load_stack(args.slices)
    model = bench.build_model()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_net, _ = load_exported(export_onnx(model, None, Path(tmp) / "model.onnx"))
    networks = {"pytorch": model, "onnxruntime": onnx_net}
    for network in networks.values():  # warm-up: kernel selection, allocations
        run_tiled(network, image[:1], 1)
    seconds = dict.fromkeys(networks, 0.0)
    probs: dict[str, list[np.ndarray]] = {name: [] for name in networks}
    order = list(networks)
    for i in range(0, len(image), args.chunk):
        for name in order:
            start = time.perf_counter()
            probs[name].append(run_tiled(networks[name], image[i : i + args.chunk], args.batch))
            seconds[name] += time.perf_counter() - start
        order.reverse()
    diff = float(
        np.abs(np.concatenate(probs["onnxruntime"]) - np.concatenate(probs["pytorch"])).max()
    )
    print(f"2D inference, {source}, {image.shape}, UNet features {bench.FEATURES} (same padding), "
          f"batch {args.batch}, predict's default tiles; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, onnxruntime {onnxruntime.__version__}")  # fmt: skip
    print(f"{'runtime':<14}{'seconds':>9}{'MVox/s':>9}")
    for name, t in seconds.items():
        print(f"{name:<14}{t:>9.2f}{image.size / t / 1e6:>9.3f}")
    ratio = seconds["pytorch"] / seconds["onnxruntime"]
    print(f"ONNX Runtime vs PyTorch: {ratio:.2f}x throughput; max |p_onnx - p_torch| = {diff:.1e}")
    from unet_seg.models.roofline import useful_gflop

    gflop = useful_gflop(model, image.shape[1:], count=len(image))
    methods = {name: roofline.method_figures(gflop, t, peaks) for name, t in seconds.items()}
    print(roofline.roofline_table(peaks, methods))
    roofline.print_record("export", peaks, methods, shape=list(image.shape), batch=args.batch,
                          quick=args.quick, onnx_vs_torch=round(ratio, 3), max_diff=diff,
                          onnxruntime=onnxruntime.__version__)  # fmt: skip


if __name__ == "__main__":
    main()
