"""3D tiled inference vs MONAI's sliding window: throughput and peak RSS, same model, same data.

A 64x256x256 volume (synthetic, seeded), a small same-padding 3D U-Net (features 16, 32, 64;
random weights: speed and memory do not depend on them). Each method runs once, in its own
subprocess, so that ``ru_maxrss`` is its own peak:

- ``monai``: ``monai.inferers.sliding_window_inference``, roi (64, 128, 128), overlap 0.25,
  gaussian blending, batch 1, on the whole volume in memory.
- ``ours``: ``unet_seg.inference.stream`` streamed slab by slab from a TIFF on disk (as
  ``unet-seg-predict`` runs), with its 3D default tile, and once more with a larger tile that
  needs only 2x2 windows in-plane (``--big-tile``), overlap 0.25 and gaussian blending as MONAI.

"mean p1" is the mean foreground probability, which must agree between the methods.

Run: ``python benchmarks/bench_inference_3d.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHAPE = (64, 256, 256)
FEATURES = (16, 32, 64)
MONAI_ROI = (64, 128, 128)


def build_model() -> torch.nn.Module:
    from unet_seg.models import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 2, FEATURES, padding="same", norm=None, dropout=0.0).eval()


def make_volume(path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, SHAPE, dtype=np.uint8)
    tifffile.imwrite(path, volume, imagej=True)


def run_monai(path: Path, batch: int) -> dict:
    import tifffile
    from monai.inferers import sliding_window_inference

    model = build_model()
    image = tifffile.imread(path).astype(np.float32)
    lo, hi = np.percentile(image, [1.0, 99.8])
    x = torch.from_numpy(((image - lo) / (hi - lo)).astype(np.float32))[None, None]
    start = time.perf_counter()
    with torch.inference_mode():
        probs = sliding_window_inference(
            x, MONAI_ROI, batch, model, overlap=0.25, mode="gaussian"
        ).softmax(1)
    return {"seconds": time.perf_counter() - start, "foreground": float(probs[:, 1].mean())}


def run_ours(path: Path, batch: int, tile: list[int] | None, overlap: float) -> dict:
    from unet_seg.data.io import open_volume
    from unet_seg.inference.inputs import input_layout, percentile_range, slab_reader
    from unet_seg.inference.predict import DEFAULT_TILE
    from unet_seg.inference.runner import ModelRunner
    from unet_seg.inference.stream import iter_tiled_predictions
    from unet_seg.inference.tiling import plan_tiles

    model = build_model()
    volume = open_volume(path)
    layout = input_layout(path, volume.shape, model)
    start = time.perf_counter()
    lo, hi = percentile_range(volume, 1.0, 99.8)
    plan = plan_tiles(model, SHAPE, tile or DEFAULT_TILE[3], overlap)
    slabs = iter_tiled_predictions(
        slab_reader(volume, layout, lo, hi), SHAPE, plan, ModelRunner(model, "cpu"), batch,
        progress=False,
    )  # fmt: skip
    foreground = sum(float(p[1].sum()) for _, p in slabs) / np.prod(SHAPE)
    return {"seconds": time.perf_counter() - start, "foreground": foreground,
            "windows": plan.num_windows, "tile_in": [a.in_size for a in plan.axes]}  # fmt: skip


def child(args: argparse.Namespace) -> None:
    path = Path(args.volume)
    if args.method == "monai":
        result = run_monai(path, args.batch)
    else:
        result = run_ours(path, args.batch, args.tile, args.overlap)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(method: str, volume: Path, args: argparse.Namespace, tile: list[int] | None) -> dict:
    cmd = [sys.executable, __file__, "--method", method, "--volume", str(volume),
           "--batch", str(args.batch), "--overlap", str(args.overlap)]  # fmt: skip
    if tile:
        cmd += ["--tile", *map(str, tile)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{method} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["monai", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tile", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--overlap", type=float, default=0.25, help="our window overlap")
    parser.add_argument("--big-tile", type=int, nargs=3, default=[64, 148, 148],
                        help="a second, throughput-oriented tile of ours (0: skip)")  # fmt: skip
    args = parser.parse_args()
    if args.method:
        return child(args)
    voxels = int(np.prod(SHAPE))
    runs = [("monai", None), ("ours", None)] + (
        [("ours", args.big_tile)] if any(args.big_tile) else []
    )
    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp) / "volume.tif"
        make_volume(volume)
        results = [(m, measure(m, volume, args, tile)) for m, tile in runs]
    print(f"3D inference, volume {SHAPE}, UNet features {FEATURES} (same padding), "
          f"batch {args.batch}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'method':<40}{'seconds':>9}{'MVox/s':>9}{'peak RSS MiB':>14}{'vs MONAI: speed':>17}"
          f"{'RSS':>7}{'mean p1':>9}")  # fmt: skip
    monai = results[0][1]
    for method, r in results:
        name = (f"MONAI sliding window roi {MONAI_ROI}" if method == "monai"
                else f"ours, {r['windows']} tiles {tuple(r['tile_in'])}")  # fmt: skip
        speed, rss = monai["seconds"] / r["seconds"], r["peak_rss_mib"] / monai["peak_rss_mib"]
        print(
            f"{name:<40}{r['seconds']:>9.2f}{voxels / r['seconds'] / 1e6:>9.3f}"
            f"{r['peak_rss_mib']:>14.0f}{speed:>16.2f}x{rss:>6.2f}x{r['foreground']:>9.4f}"
        )
    print("goals: throughput >= 1.5x MONAI at peak RSS <= 0.5x")


if __name__ == "__main__":
    main()
