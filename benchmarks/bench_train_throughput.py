"""Training throughput: steps/s of our training loop against a plain PyTorch loop and a MONAI
loop, on the same network, patch and batch, with the roofline of each.

Everything a step costs is timed: data loading, augmentation, forward, backward, optimiser.

- ``ours``: the recipe's Lightning module and data module (``conf/experiment/<recipe>.yaml``:
  its data, augmentation, loss, optimiser and ``num_workers``) in a Lightning ``Trainer``, as
  ``unet-seg-train`` runs it, without validation, checkpoints or loggers;
- ``plain``: the same loader (our patches and augmentation), network, loss and optimiser in a
  hand-written PyTorch loop (what the Lightning loop costs on top);
- ``monai``: the same images, network and optimiser in a MONAI-style loop: ``monai.data``
  ``Dataset``/``DataLoader`` with MONAI's transforms (positive/negative patch sampling, elastic
  deformation of matched strength, flips, quarter turns, intensity scaling and noise) and
  ``monai.losses.DiceCELoss`` (``SupervisedTrainer`` needs pytorch-ignite, which is not a
  dependency; its loop is this one).

Options: ``--bf16`` (bfloat16 autocast in every loop; Lightning's ``bf16-mixed``),
``--channels-last`` (network and batches in channels-last). Each loop runs ``--warmup``
untimed steps (worker start-up, kernel selection) and ``--steps`` timed ones; the figure is
steps/s over the timed ones. Roofline: the GFLOP of a step's forward and backward pass (counted by
``torch.utils.flop_counter``) per second as a fraction of the float32 matmul peak of the same
threads. The last line is the JSON of all figures.

    python benchmarks/bench_train_throughput.py [--recipe sample_2d] [--steps 30] [--bf16]
    python benchmarks/bench_train_throughput.py --quick     # a smoke run, no figures
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

import numpy as np
import roofline
import torch

from unet_seg.models.blocks import center_crop


def compose_recipe(recipe: str, runs_dir: str):
    from hydra import compose, initialize_config_dir

    from unet_seg.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=[f"experiment={recipe}", f"paths.runs_dir={runs_dir}"])


def build(cfg, seed: int = 0):
    """A fresh (module, data module) of the recipe, seeded alike for every loop."""
    import pytorch_lightning as pl

    from unet_seg.training.train import build_datamodule, build_module

    pl.seed_everything(seed, verbose=False)
    data = build_datamodule(cfg)
    data.setup("fit")
    return build_module(cfg), data


def memory_format(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


class StepClock:
    """Wall times at the start of each training batch and at the end of the last."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def tick(self) -> None:
        self.times.append(time.perf_counter())

    def steps_per_s(self, warmup: int) -> float:
        timed = self.times[warmup:]
        return (len(timed) - 1) / (timed[-1] - timed[0])


def run_ours(cfg, steps: int, warmup: int, bf16: bool, channels_last: bool) -> float:
    import pytorch_lightning as pl

    module, data = build(cfg)
    if channels_last:
        module.model.to(memory_format=memory_format(module.model.spatial_dims))
    clock = StepClock()

    class Clock(pl.Callback):
        def on_train_batch_start(self, *args) -> None:
            clock.tick()

        def on_train_end(self, *args) -> None:
            clock.tick()

    trainer = pl.Trainer(
        max_steps=warmup + steps, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0,
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()],
        precision="bf16-mixed" if bf16 else "32-true",
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return clock.steps_per_s(warmup)


def endless(loader):
    while True:
        yield from loader


def timed_loop(model, batches, step, steps: int, warmup: int) -> float:
    clock = StepClock()
    for i, batch in enumerate(batches):
        if i == warmup + steps:
            break
        clock.tick()
        step(batch)
    clock.tick()
    del model
    return clock.steps_per_s(warmup)


def run_plain(cfg, steps: int, warmup: int, bf16: bool, channels_last: bool) -> float:
    module, data = build(cfg)
    model, loss_fn = module.model.train(), module.loss_fn
    fmt = memory_format(model.spatial_dims) if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    optimizer = optimizer[0][0] if isinstance(optimizer, tuple) else optimizer
    autocast = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step(batch) -> None:
        with autocast:
            logits = model(batch["image"].contiguous(memory_format=fmt))
            shape = logits.shape[2:]
            weight = batch.get("weight")
            weight = None if weight is None else center_crop(weight[:, None], shape)[:, 0]
            label = center_crop(batch["label"][:, None], shape)[:, 0]
            loss = loss_fn(logits, label, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed_loop(model, endless(data.train_dataloader()), step, steps, warmup)


def monai_loader(cfg, data, seed: int = 0):
    """MONAI's dataset, transforms and loader over our training images, patch and batch size."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        Rand3DElasticd,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityd,
    )  # fmt: skip

    patch = tuple(int(p) for p in cfg.data.patch_size)
    keys = ["image", "label"]
    elastic_args = {"keys": keys, "prob": float(cfg.augment.get("elastic_p", 0.8)),
                    "mode": ("bilinear", "nearest"), "padding_mode": "reflection"}  # fmt: skip
    sigma, points = float(cfg.augment.get("sigma", 10.0)), int(cfg.augment.get("points", 3))
    if len(patch) == 2:  # control points as ours: N(0, sigma) offsets, spline-upsampled
        spacing = tuple((s - 1) / (points - 1) for s in patch)
        elastic = Rand2DElasticd(spacing=spacing, magnitude_range=(sigma, sigma), **elastic_args)
    else:  # MONAI's 3D deformation is smoothed noise; about the same displacement std
        elastic = Rand3DElasticd(sigma_range=(16, 16), magnitude_range=(sigma * 35, sigma * 35),
                                 **elastic_args)  # fmt: skip
    transform = Compose([
        RandCropByPosNegLabeld(keys, "label", patch, pos=1, neg=1, num_samples=1),
        elastic,
        *[RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(len(patch))],
        RandRotate90d(keys, prob=0.5, spatial_axes=(len(patch) - 2, len(patch) - 1)),
        RandScaleIntensityd("image", factors=0.1, prob=0.3),
        RandGaussianNoised("image", prob=0.2, std=0.03),
    ])  # fmt: skip
    transform.set_random_state(seed=seed)
    items = [{"image": r.image, "label": np.maximum(r.label, 0)[None]}
             for r in data.train_set.regions]  # fmt: skip
    length = int(cfg.data.samples_per_epoch)
    dataset = Dataset([items[i % len(items)] for i in range(length)], transform)
    workers = int(cfg.data.num_workers)
    return DataLoader(dataset, batch_size=int(cfg.data.batch_size), num_workers=workers,
                      persistent_workers=workers > 0)  # fmt: skip


def run_monai(cfg, steps: int, warmup: int, bf16: bool, channels_last: bool) -> float:
    from monai.losses import DiceCELoss

    module, data = build(cfg)
    model = module.model.train()
    fmt = memory_format(model.spatial_dims) if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.optimizer.get("lr", 1e-3)))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    autocast = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step(batch) -> None:
        image = torch.as_tensor(batch["image"]).contiguous(memory_format=fmt)
        with autocast:
            logits = model(image)
            label = center_crop(torch.as_tensor(batch["label"]), logits.shape[2:])
            loss = loss_fn(logits.float(), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed_loop(model, endless(monai_loader(cfg, data)), step, steps, warmup)


LOOPS = {"ours": run_ours, "plain": run_plain, "monai": run_monai}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="sample_2d", help="a conf/experiment/ name")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--loops", nargs="+", choices=list(LOOPS), default=list(LOOPS))
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in every loop")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="4 steps: a smoke run, no figures")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.warmup = 3, 1
    peaks = roofline.measure_peaks("cpu", quick=args.quick)
    with tempfile.TemporaryDirectory() as runs:
        cfg = compose_recipe(args.recipe, runs)
        if args.quick:
            cfg.data.batch_size = 2
        rates = {name: LOOPS[name](cfg, args.steps, args.warmup, args.bf16, args.channels_last)
                 for name in args.loops}  # fmt: skip
        module, data = build(cfg)
    batch = next(iter(data.train_dataloader()))
    gflop = roofline.training_step_gflop(module.model.train(), batch["image"])
    patch, size = list(cfg.data.patch_size), int(cfg.data.batch_size)
    print(f"training throughput, recipe {args.recipe}: model {list(cfg.model.features)} "
          f"{cfg.model.padding}, patch {patch}, batch {size}, loader workers "
          f"{cfg.data.num_workers}, bf16 {args.bf16}, channels-last {args.channels_last}, "
          f"{torch.get_num_threads()} torch threads, {args.steps} timed steps")  # fmt: skip
    print(f"{'loop':<10}{'steps/s':>9}{'vs ours':>9}")
    for name, rate in rates.items():
        ratio = rate / rates["ours"] if "ours" in rates else float("nan")
        print(f"{name:<10}{rate:>9.3f}{ratio:>8.2f}x")
    if {"ours", "monai"} <= rates.keys():
        print(f"ours vs MONAI's loop: {rates['ours'] / rates['monai']:.2f}x steps/s (goal >= 1.2x)")
    methods = {name: roofline.method_figures(gflop, 1 / rate, peaks, steps_per_s=round(rate, 4))
               for name, rate in rates.items()}  # fmt: skip
    print(roofline.roofline_table(peaks, methods))
    roofline.print_record("train_throughput", peaks, methods, recipe=args.recipe, patch=patch,
                          batch=size, bf16=args.bf16, channels_last=args.channels_last,
                          steps=args.steps, quick=args.quick)  # fmt: skip


if __name__ == "__main__":
    main()
