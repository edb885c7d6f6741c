"""Training memory as the training set grows: 1x vs 10x the data, from OME-Zarr.

Builds two training sets of 2D OME-Zarr images (``--images`` images of ``--size``^2 uint16, and
``--factor`` times as many) in a temporary folder, then trains a small U-Net for ``--steps``
steps on each in its own process, with patches read lazily (``data.lazy=true``) and, for
contrast, loaded whole (``data.lazy=false``, the in-memory path). Prints the peak RSS of each run
side by side and the ratio 10x / 1x per path (goal for the lazy path: <= 1.2x), plus the set-up
time and the time per step.

The memory is the training process's own (``VmHWM``, not counting its parent's pages before
``exec``; data-loader workers off). On a shared machine, run under
``flock /tmp/unet-bench.lock`` and quote the load it prints.

The last line is the JSON of all figures (``steps_per_s`` per run).

Run: ``python benchmarks/bench_train_memory.py [--size 1024] [--images 8] [--factor 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from unet_seg.peak_memory import peak_rss_mib

MODEL = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [8, 16, 32],
         "padding": "same", "norm": None, "dropout": 0.0}  # fmt: skip


def write_set(folder: Path, count: int, size: int) -> Path:
    """``count`` image/label pairs of ``size``^2 under ``folder``: blocky foreground objects in
    noise, written as OME-Zarr."""
    from unet_seg.io import Volume, write_volume

    for k in range(count):
        rng = np.random.default_rng(k)
        coarse = rng.random((-(-size // 16),) * 2) > 0.7
        label = coarse.repeat(16, 0).repeat(16, 1)[:size, :size].astype(np.uint8)
        image = (rng.integers(0, 1000, (size, size)) + 2000 * label.astype(np.int64)).astype(
            np.uint16
        )
        write_volume(folder / "images" / f"img_{k:03d}.ome.zarr", Volume(image))
        write_volume(folder / "labels" / f"img_{k:03d}.ome.zarr", Volume(label))
    return folder


def child(args: argparse.Namespace) -> None:
    """Set up the data module and train ``args.steps`` steps here; prints a JSON line."""
    import pytorch_lightning as pl
    import torch

    from unet_seg.data.datamodule import SegmentationDataModule
    from unet_seg.training.module import SegmentationModule

    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)
    start = time.perf_counter()
    data = SegmentationDataModule(
        str(Path(args.data) / "images"), str(Path(args.data) / "labels"),
        patch_size=[args.patch, args.patch], batch_size=4, samples_per_epoch=4 * args.steps,
        foreground_prob=0.5, lazy=args.lazy == "true", num_workers=0,
    )  # fmt: skip
    data.setup("fit")
    setup_s = time.perf_counter() - start
    trainer = pl.Trainer(max_steps=args.steps, limit_val_batches=2, accelerator="cpu",
                         devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)  # fmt: skip
    start = time.perf_counter()
    trainer.fit(SegmentationModule(model=MODEL), datamodule=data)
    step_s = (time.perf_counter() - start) / args.steps
    rss_mb = peak_rss_mib()
    print("RESULT " + json.dumps({"rss_mb": rss_mb, "setup_s": setup_s, "step_s": step_s}))


def measure(data: Path, lazy: bool, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--data", str(data), "--lazy", str(lazy).lower(),
           "--steps", str(args.steps), "--patch", str(args.patch),
           "--threads", str(args.threads)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"measurement failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="image edge in pixels")
    parser.add_argument("--images", type=int, default=8, help="images in the 1x set")
    parser.add_argument("--factor", type=int, default=10, help="how many times more data")
    parser.add_argument("--steps", type=int, default=20, help="training steps per run")
    parser.add_argument("--patch", type=int, default=128, help="patch edge")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-eager", action="store_true", help="skip the in-memory contrast")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--lazy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (others' jobs count)")
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}
        for scale in (1, args.factor):
            count = args.images * scale
            sets[scale] = write_set(Path(tmp) / f"x{scale}", count, args.size)
            print(f"{scale}x: {count} images of {args.size}^2 "
                  f"({count * args.size**2 / 1e6:.1f} M voxels)")  # fmt: skip
        paths = [("lazy", True)] + ([] if args.no_eager else [("in memory", False)])
        figures = {}
        print(f"{'path':<10} {'data':>5} {'peak RSS MB':>12} {'set-up s':>9} {'s/step':>7}")
        for label, lazy in paths:
            runs = {scale: measure(folder, lazy, args) for scale, folder in sets.items()}
            for scale, run in runs.items():
                print(f"{label:<10} {scale:>4}x {run['rss_mb']:>12.0f} {run['setup_s']:>9.1f} "
                      f"{run['step_s']:>7.3f}")  # fmt: skip
            ratio = runs[args.factor]["rss_mb"] / runs[1]["rss_mb"]
            for scale, run in runs.items():
                figures[f"{label} {scale}x"] = {**run, "steps_per_s": round(1 / run["step_s"], 4)}
            figures[f"{label} rss ratio"] = {"rss_ratio": round(ratio, 3)}
            goal = " (goal <= 1.2x)" if lazy else ""
            print(f"{label}: peak RSS {args.factor}x / 1x = {ratio:.2f}x{goal}")
    import roofline  # the JSON line only: a memory benchmark measures no peak

    roofline.print_record("train_memory", None, figures, size=args.size, images=args.images,
                          factor=args.factor, steps=args.steps, patch=args.patch)  # fmt: skip


if __name__ == "__main__":
    main()
