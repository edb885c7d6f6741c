"""2D inference on a 30x512x512 stack: our tiling vs MONAI's sliding window vs one untiled pass.

Same model, same data, same batch size, each method once in its own subprocess (so that
``ru_maxrss`` is its own peak):

- data: the ISBI 2012 ``test-volume.tif`` (30x512x512) from ``../shared/datasets/isbi2012`` if
  present, else a seeded synthetic stack of that size;
- model: a same-padding 2D U-Net with features (32, 64, 128, 256), 1.93 M parameters (about
  MONAI's BasicUNet); random weights, since speed does not depend on them;
- ``monai``: ``monai.inferers.sliding_window_inference``, roi 256, overlap 0.25, gaussian;
- ``ours``: ``unet_seg.inference.stream`` streamed from the TIFF as ``unet-seg-predict`` runs
  (its default 2D tile, channels-last on the CPU);
- ``untiled``: the network on whole slices, batched, no tiling at all (the lower bound).

All three run the network in channels-last memory format (faster with oneDNN on the CPU).

Seams: the foreground probability of each method is compared with the untiled pass.
Run: ``python benchmarks/bench_inference_2d.py [--slices N] [--batch B]``.
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

ISBI = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "isbi2012" / "test-volume.tif"
FEATURES = (32, 64, 128, 256)


def build_model() -> torch.nn.Module:
    from unet_seg.models import UNet

    torch.manual_seed(0)
    model = UNet(2, 1, 2, FEATURES, padding="same", norm=None, dropout=0.0).eval()
    # Channels-last for every method (ours uses it on the CPU), so that only the tiling differs.
    return model.to(memory_format=torch.channels_last)


def make_stack(path: Path, slices: int) -> str:
    import tifffile

    if ISBI.is_file():
        stack, source = tifffile.imread(ISBI)[:slices], f"ISBI 2012 {ISBI.name}"
    else:
        rng = np.random.default_rng(0)
        stack, source = rng.integers(0, 255, (slices, 512, 512), dtype=np.uint8), "synthetic"
    tifffile.imwrite(path, stack, imagej=True)
    return source


def normalised(path: Path) -> np.ndarray:
    import tifffile

    image = tifffile.imread(path).astype(np.float32)
    lo, hi = np.percentile(image, [1.0, 99.8])
    return ((image - lo) / (hi - lo)).astype(np.float32)


def run_monai(path: Path, batch: int) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    model = build_model()
    x = torch.from_numpy(normalised(path))[:, None]  # the slices are MONAI's batch
    with torch.inference_mode():
        return sliding_window_inference(x, 256, batch, model, 0.25, "gaussian").softmax(1)[:, 1]


def run_untiled(path: Path, batch: int) -> np.ndarray:
    model = build_model()
    image = torch.from_numpy(normalised(path))[:, None].contiguous(
        memory_format=torch.channels_last
    )
    with torch.inference_mode():
        return torch.cat([model(image[i : i + batch]).softmax(1)[:, 1]
                          for i in range(0, len(image), batch)])  # fmt: skip


def run_ours(path: Path, batch: int) -> np.ndarray:
    from unet_seg.data.io import open_volume
    from unet_seg.inference.inputs import input_layout, percentile_range, slab_reader
    from unet_seg.inference.predict import DEFAULT_TILE
    from unet_seg.inference.runner import ModelRunner
    from unet_seg.inference.stream import iter_tiled_predictions
    from unet_seg.inference.tiling import plan_tiles

    model = build_model()
    volume = open_volume(path)
    layout = input_layout(path, volume.shape, model)
    lo, hi = percentile_range(volume, 1.0, 99.8)
    plan = plan_tiles(model, volume.shape, DEFAULT_TILE[2])
    slabs = iter_tiled_predictions(
        slab_reader(volume, layout, lo, hi), volume.shape, plan, ModelRunner(model, "cpu"),
        batch, progress=False,
    )  # fmt: skip
    return np.concatenate([p[1] for _, p in slabs])


def child(args: argparse.Namespace) -> None:
    run = {"monai": run_monai, "ours": run_ours, "untiled": run_untiled}[args.method]
    start = time.perf_counter()
    probs = run(Path(args.stack), args.batch)
    seconds = time.perf_counter() - start
    np.save(args.out, np.asarray(probs, dtype=np.float32))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak}))


def measure(method: str, stack: Path, out: Path, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--method", method, "--stack", str(stack), "--out", str(out),
           "--batch", str(batch)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{method} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["monai", "ours", "untiled"], help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--slices", type=int, default=30, help="slices of the stack to predict")
    args = parser.parse_args()
    if args.method:
        return child(args)
    methods = ("monai", "ours", "untiled")
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack.tif"
        source = make_stack(stack, args.slices)
        results = {m: measure(m, stack, Path(tmp) / f"{m}.npy", args.batch) for m in methods}
        probs = {m: np.load(Path(tmp) / f"{m}.npy") for m in methods}
    voxels = probs["untiled"].size
    print(f"2D inference, {source}, {probs['untiled'].shape}, UNet features {FEATURES} (same "
          f"padding, 1.93 M parameters), batch {args.batch}, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(f"{'method':<36}{'seconds':>9}{'MVox/s':>9}{'peak RSS MiB':>14}{'max|p - untiled|':>18}")
    names = {"monai": "MONAI sliding window roi 256, ov 0.25", "ours": "ours (unet_seg tiling)",
             "untiled": "untiled forward pass"}  # fmt: skip
    for m, r in results.items():
        diff = float(np.abs(probs[m] - probs["untiled"]).max())
        print(f"{names[m]:<36}{r['seconds']:>9.2f}{voxels / r['seconds'] / 1e6:>9.3f}"
              f"{r['peak_rss_mib']:>14.0f}{diff:>18.2e}")  # fmt: skip
    t = {m: r["seconds"] for m, r in results.items()}
    print(
        f"ours vs MONAI: {t['monai'] / t['ours']:.2f}x throughput (goal >= 1.5x); "
        f"ours vs untiled: {t['ours'] / t['untiled']:.2f}x the time (goal <= 1.3x)"
    )


if __name__ == "__main__":
    main()
