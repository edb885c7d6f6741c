"""Peak RSS of ``predict`` on a 30- and a 300-slice stack: memory must not grow with the volume,
and (``--planes``) on a 1024^2 vs a 3072^2 plane of the same voxels: nor with the y-x plane.

Writes two uncompressed TIFF stacks of ``--size`` x ``--size`` slices (seeded noise) and a tiny
checkpoint of ``conf/model/unet_small_2d.yaml`` (random weights) into a temporary folder, then
runs ``unet_seg.prediction.batch.predict`` on each in its own subprocess (labels and float16
probabilities written) and reports its peak RSS (``VmHWM``: its own, not its parent's) side
by side with the ratio (goal < 1.2x).

Run: ``python benchmarks/bench_inference_memory.py [--size 256] [--slices 30 300]
[--planes 1024 3072]`` (the planes: as many slices of each as the last plane has voxels in one).
The last line is the JSON of all figures.
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

from unet_seg.peak_memory import peak_rss_mib


def make_inputs(folder: Path, stacks: list[tuple[int, int]]) -> Path:
    """A checkpoint and ``stack_<slices>x<size>.tif`` per ``(slices, size)``."""
    import pytorch_lightning as pl
    import tifffile
    import torch
    import yaml

    from unet_seg.config import CONFIG_DIR
    from unet_seg.training.module import SegmentationModule

    model_cfg = yaml.safe_load((CONFIG_DIR / "model" / "unet_small_2d.yaml").read_text())
    module = SegmentationModule(model=model_cfg)
    ckpt = folder / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, ckpt)  # fmt: skip
    rng = np.random.default_rng(0)
    for n, size in stacks:
        path = folder / f"stack_{n}x{size}.tif"
        # A z-stack (pages written one by one were read as channels), filled slice by slice:
        # the generator never holds the whole stack either.
        stack = tifffile.memmap(path, shape=(n, size, size), dtype=np.uint8, imagej=True,
                                metadata={"axes": "ZYX"})  # fmt: skip
        for z in range(n):
            stack[z] = rng.integers(0, 255, (size, size), dtype=np.uint8)
        stack.flush()
        del stack
    return ckpt


def child(stack: str, ckpt: str, out: str) -> None:
    from omegaconf import OmegaConf

    from unet_seg.config import CONFIG_DIR
    from unet_seg.prediction.batch import predict

    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    overrides = {"input": stack, "checkpoint": ckpt, "output_dir": out, "progress": False,
                 "outputs": {"probabilities": True}, "probability_dtype": "float16"}  # fmt: skip
    cfg.merge_with(overrides)
    start = time.perf_counter()
    summary = predict(cfg)
    if summary["failed"]:
        raise SystemExit(json.dumps(summary["files"]))
    peak = peak_rss_mib()
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--planes", type=int, nargs="*", default=[1024, 3072])
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    stacks = [(n, args.size) for n in args.slices]
    if args.planes:
        stacks += [(max(1, round(args.planes[-1] ** 2 / p**2)), p) for p in args.planes]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = make_inputs(folder, stacks)
        for n, size in stacks:
            name = f"stack_{n}x{size}"
            cmd = [sys.executable, __file__, "--child", str(folder / f"{name}.tif"), str(ckpt),
                   str(folder / f"out_{name}")]  # fmt: skip
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"{name} failed:\n{run.stderr}")
            results[(n, size)] = json.loads(run.stdout.strip().splitlines()[-1])
    print("predict (unet_small_2d, random weights) on uint8 stacks, labels + float16 "
          "probabilities written")  # fmt: skip
    print(f"{'slices':>7}{'plane':>7}{'input MiB':>11}{'seconds':>9}{'peak RSS MiB':>14}")
    for (n, size), r in results.items():
        mib = n * size**2 / 2**20
        print(f"{n:>7}{size:>7}{mib:>11.1f}{r['seconds']:>9.1f}{r['peak_rss_mib']:>14.0f}")

    def ratio(small: tuple[int, int], big: tuple[int, int], what: str) -> None:
        value = results[big]["peak_rss_mib"] / results[small]["peak_rss_mib"]
        print(f"peak RSS {what}: {value:.2f}x (goal < 1.2x)")

    ratio(stacks[0], stacks[len(args.slices) - 1], f"{args.slices[-1]} / {args.slices[0]} slices")
    if args.planes:
        ratio(stacks[len(args.slices)], stacks[-1], f"{args.planes[-1]}² / {args.planes[0]}² plane")
    import roofline  # the JSON line only: a memory benchmark measures no peak

    figures = {f"{n}x{size}": r for (n, size), r in results.items()}
    roofline.print_record("inference_memory", None, figures, size=args.size)


if __name__ == "__main__":
    main()
