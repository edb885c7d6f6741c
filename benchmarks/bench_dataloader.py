"""Is the data loader the bottleneck? Loader samples/s against training samples/s, same run.

Loader: ``SegmentationDataModule`` from ``conf/data/sample_2d.yaml`` with the sample_2d
experiment's patch and batch size, augmented by ``conf/augment/default.yaml`` (elastic
deformation, flips, intensity), iterated as the trainer would (``num_workers`` from the config,
and with worker processes for comparison).
Peer: a plain training step of the default model (``conf/model/unet_small_2d.yaml``): forward,
cross-entropy on the centre-cropped labels, backward, Adam step, on a batch of the same shape.

    python benchmarks/bench_dataloader.py [--batches 40] [--steps 10] [--workers 0 2] [--threads 1]

A ratio (loader / training) above 1 means the loader keeps up with the model. The training step
is also given against the float32 matmul peak of the same threads (``roofline.py``); the last
line is the JSON of all figures. ``--quick``: a smoke run.
"""

from __future__ import annotations

import argparse
import time

import roofline
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from unet_seg.config import CONFIG_DIR
from unet_seg.data.datamodule import SegmentationDataModule
from unet_seg.models import UNet
from unet_seg.models.blocks import center_crop

PATCH = [188, 188]  # conf/experiment/sample_2d.yaml
BATCH = 4


def build_datamodule(workers: int, augment: bool) -> SegmentationDataModule:
    cfg = OmegaConf.create(
        {
            "paths": OmegaConf.load(CONFIG_DIR / "paths/default.yaml"),
            "data": OmegaConf.load(CONFIG_DIR / "data/sample_2d.yaml"),
            "augment": OmegaConf.load(CONFIG_DIR / "augment/default.yaml"),
        }
    )
    cfg.paths.runs_dir = "runs"
    cfg.data.patch_size, cfg.data.batch_size = PATCH, BATCH
    cfg.data.num_workers = workers
    cfg.data.samples_per_epoch = 10_000  # one long epoch: no worker restarts while timing
    module = instantiate(cfg.data, augment=instantiate(cfg.augment) if augment else None)
    module.setup("fit")
    return module


def loader_samples_per_s(workers: int, augment: bool, batches: int) -> float:
    loader = build_datamodule(workers, augment).train_dataloader()
    iterator = iter(loader)
    # Worker start-up is paid once per run, and workers fill a queue of prefetch_factor (2)
    # batches each before timing starts: drain it so only steady-state production is timed.
    for _ in range(2 * workers + 1):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - start)


def train_samples_per_s(steps: int) -> float:
    model = UNet(**OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model/unet_small_2d.yaml")))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = next(iter(build_datamodule(0, augment=False).train_dataloader()))

    def step() -> None:
        logits = model(batch["image"])
        label = center_crop(batch["label"][:, None].float(), logits.shape[2:])[:, 0].long()
        loss = F.cross_entropy(logits, label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator and kernels
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="loader batches timed per setting")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="a few batches: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.steps, args.workers = 2, 1, [0]
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared machine, 1 avoids thread contention
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {BATCH} x 1 x {PATCH[0]} x {PATCH[1]}")  # fmt: skip
    peaks = roofline.measure_peaks("cpu", quick=args.quick)
    train = train_samples_per_s(args.steps)
    methods = {}
    print(f"{'setting':<42} {'samples/s':>10} {'loader/train':>13}")
    print(f"{'train step, unet_small_2d (fwd+bwd+Adam)':<42} {train:>10.1f} {'':>13}")
    for augment in (False, True):
        for workers in args.workers:
            rate = loader_samples_per_s(workers, augment, args.batches)
            name = (
                f"loader, {'augment=default' if augment else 'no augmentation'}, workers={workers}"
            )
            print(f"{name:<42} {rate:>10.1f} {rate / train:>12.1f}x")
            methods[name] = {
                "samples_per_s": round(rate, 2),
                "loader_vs_train": round(rate / train, 3),
            }
    model = UNet(**OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model/unet_small_2d.yaml")))
    gflop = roofline.training_step_gflop(model.train(), torch.rand(BATCH, 1, *PATCH))
    step = roofline.method_figures(gflop, BATCH / train, peaks, steps_per_s=round(train / BATCH, 4))
    methods = {"train step, unet_small_2d": step, **methods}
    print(roofline.roofline_table(peaks, methods))
    roofline.print_record("dataloader", peaks, methods, batch=BATCH, patch=PATCH, quick=args.quick)


if __name__ == "__main__":
    main()
