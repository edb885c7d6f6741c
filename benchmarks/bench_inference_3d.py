"""3D tiled inference vs MONAI's sliding window: throughput and peak RSS, same model, same data.

A 64x256x256 volume (synthetic, seeded), a small same-padding 3D U-Net (features 16, 32, 64;
random weights: speed and memory do not depend on them). Each method runs once, in its own
subprocess, so that its peak RSS (``VmHWM``, see ``unet_seg.peak_memory``) is its own:

- ``monai``: ``monai.inferers.sliding_window_inference``, roi (64, 128, 128), overlap 0.25,
  gaussian blending, batch 1, on the whole volume in memory.
- ``ours``: ``unet-seg-predict``'s path (``predict_file``): block by block from a TIFF on disk
  into a float32 probability TIFF, overlap 0.25 and gaussian blending as MONAI; the variants
  are listed in ``RUNS``.

"mean p1" is the mean foreground probability, which must agree between the methods. Roofline:
each method's effective GFLOP/s (2 x the network's MACs on the volume) as a fraction of the
float32 matmul peak measured in the parent on the same threads (``roofline.py``); the last line
is the JSON of all figures.

Run: ``python benchmarks/bench_inference_3d.py [--quick]`` (about a minute on 2 CPU cores;
``--quick``: a 32x128x128 volume, MONAI and our default only, a smoke run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import roofline
import torch

from unet_seg.models.roofline import useful_gflop
from unet_seg.peak_memory import peak_rss_mib

SHAPE = (64, 256, 256)
FEATURES = (16, 32, 64)
MONAI_ROI = (64, 128, 128)


def build_model() -> torch.nn.Module:
    from unet_seg.models import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 2, FEATURES, padding="same", norm=None, dropout=0.0).eval()


def make_volume(path: Path, shape: tuple[int, ...] = SHAPE) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, shape, dtype=np.uint8)
    tifffile.imwrite(path, volume, imagej=True, metadata={"axes": "ZYX"})


def run_monai(path: Path, batch: int, channels_last: bool) -> dict:
    import tifffile
    from monai.inferers import sliding_window_inference

    model = build_model()
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    image = tifffile.imread(path).astype(np.float32)
    lo, hi = np.percentile(image, [1.0, 99.8])
    x = torch.from_numpy(((image - lo) / (hi - lo)).astype(np.float32))[None, None]
    start = time.perf_counter()
    with torch.inference_mode():
        probs = sliding_window_inference(
            x, MONAI_ROI, batch, model, overlap=0.25, mode="gaussian"
        ).softmax(1)
    return {"seconds": time.perf_counter() - start, "foreground": float(probs[:, 1].mean())}


def run_ours(path: Path, batch: int, tile: list[int] | None, bf16: bool) -> dict:
    """``unet-seg-predict``'s own path (:func:`~unet_seg.prediction.driver.predict_file`):
    blocks read lazily from the TIFF, float32 probabilities written into a memory-mapped TIFF."""
    import tifffile

    from unet_seg.inference.options import PredictOptions
    from unet_seg.inference.runner import ModelRunner
    from unet_seg.prediction.driver import predict_file

    model = build_model()
    options = PredictOptions(
        tile_size=tuple(tile) if tile else None, overlap=0.25, batch_size=batch,
        probability_dtype="float32", progress=False,
    )  # fmt: skip
    target = path.with_name(f"probs-{time.monotonic_ns()}.tif")
    start = time.perf_counter()
    entry = predict_file(path, {"probabilities": target}, model, ModelRunner(model, "cpu",
                         cpu_bf16=bf16), options, {"low": 1.0, "high": 99.8})  # fmt: skip
    seconds = time.perf_counter() - start
    with tifffile.TiffFile(target) as tif:  # page by page: no memory map to count in the RSS
        pages = tif.pages[len(tif.pages) // 2 :]  # the second channel's slices
        voxels = len(pages) * pages[0].shape[0] * pages[0].shape[1]
        foreground = sum(float(p.asarray().sum(dtype=np.float64)) for p in pages) / voxels
    target.unlink()
    return {"seconds": seconds, "foreground": foreground, "windows": entry["tiles"],
            "blocks": entry["blocks"]["total"]}  # fmt: skip


# (label, method, options): MONAI as usually called and with our memory format; ours with the
# default tile (sized by memory: (64, 48, 48) here, see unet_seg.inference.options), with the
# fixed 96 tile that was the default before (fitted to (64, 80, 80) windows), and with a tile
# that needs only 2x2 in-plane windows; opt-in bfloat16 below.
RUNS = [
    ("MONAI roi (64,128,128)", "monai", []),
    ("MONAI roi (64,128,128), channels-last", "monai", ["--channels-last"]),
    ("ours, default tile", "ours", []),
    ("ours, tile 96 (the old default)", "ours", ["--tile", "96", "96", "96"]),
    ("ours, tile (64,148,148)", "ours", ["--tile", "64", "148", "148"]),
]
# bfloat16 on a CPU without native bf16 kernels took over an hour here: opt in with --bf16.
BF16_RUN = ("ours, default tile, cpu_bf16", "ours", ["--bf16"])


def child(args: argparse.Namespace) -> None:
    path = Path(args.volume)
    if args.method == "monai":
        result = run_monai(path, args.batch, args.channels_last)
    else:
        result = run_ours(path, args.batch, args.tile, args.bf16)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def measure(method: str, options: list[str], volume: Path, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--method", method, "--volume", str(volume),
           "--batch", str(batch), "--features", *map(str, FEATURES), *options]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{method} {options} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    global FEATURES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["monai", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--with-bf16", action="store_true", help="also time cpu_bf16 (slow on CPUs without bf16)"
    )
    parser.add_argument("--quick", action="store_true", help="a small volume: a smoke run")
    parser.add_argument(
        "--features", type=int, nargs="+", default=list(FEATURES), help="e.g. 32 64 128"
    )
    args = parser.parse_args()
    FEATURES = tuple(args.features)
    if args.method:
        return child(args)
    shape = (32, 128, 128) if args.quick else SHAPE
    voxels = int(np.prod(shape))
    peaks = roofline.measure_peaks("cpu", quick=args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp) / "volume.tif"
        make_volume(volume, shape)
        runs = [*RUNS, BF16_RUN] if args.with_bf16 else RUNS
        runs = [runs[0], runs[2]] if args.quick else runs
        results = [(label, measure(m, opts, volume, args.batch)) for label, m, opts in runs]
    print(f"3D inference, volume {shape}, UNet features {FEATURES} (same padding), overlap 0.25 "
          f"gaussian, batch {args.batch}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'method':<40}{'windows':>8}{'seconds':>9}{'MVox/s':>8}{'RSS MiB':>9}"
          f"{'speed':>7}{'RSS':>7}{'mean p1':>9}")  # fmt: skip
    monai = results[0][1]
    for label, r in results:
        speed, rss = monai["seconds"] / r["seconds"], r["peak_rss_mib"] / monai["peak_rss_mib"]
        windows = r.get("windows", 9)
        print(
            f"{label:<40}{windows:>8}{r['seconds']:>9.2f}{voxels / r['seconds'] / 1e6:>8.3f}"
            f"{r['peak_rss_mib']:>9.0f}{speed:>6.2f}x{rss:>6.2f}x{r['foreground']:>9.4f}"
        )
    print("speed and RSS relative to the first line; goals: >= 1.5x throughput at <= 0.5x RSS")
    gflop = useful_gflop(build_model(), shape)
    methods = {
        label: roofline.method_figures(
            gflop, r["seconds"], peaks, peak_rss_mib=round(r["peak_rss_mib"], 1),
            mean_p1=round(r["foreground"], 5),
            speed_vs_monai=round(monai["seconds"] / r["seconds"], 3),
            rss_vs_monai=round(r["peak_rss_mib"] / monai["peak_rss_mib"], 3),
        )
        for label, r in results
    }  # fmt: skip
    print(roofline.roofline_table(peaks, methods))
    print("goal: >= 0.5 of the float32 peak for a net of features (32, 64, 128) or wider")
    roofline.print_record("inference_3d", peaks, methods, shape=list(shape),
                          features=list(FEATURES), batch=args.batch, quick=args.quick)  # fmt: skip


if __name__ == "__main__":
    main()
