"""Training-step time: our Lightning step against a plain PyTorch loop on the same model and batch
(the Lightning overhead; goal <= 1.05x), and against MONAI's ``BasicUNet`` of matched width.

All three run in this process on the same random batch, the same loss (Dice + CE) and Adam, each
for ``--warmup`` untimed and ``--steps`` timed steps; the figure is the median time per step.

    python benchmarks/bench_train_step.py                       # unet_small_2d, 4 x 188 x 188
    python benchmarks/bench_train_step.py --model unet_small_3d --size 52 68 68 --batch 2
    python benchmarks/bench_train_step.py --quick                # a smoke run, no figures

Roofline: steps/s and the effective GFLOP/s of each step's forward and backward pass (counted by
``torch.utils.flop_counter``) as a fraction of the float32 matmul peak of the same threads; the
last line is the JSON of all figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import roofline
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unet_seg.config import CONFIG_DIR
from unet_seg.models.blocks import center_crop
from unet_seg.training.losses import SegmentationLoss
from unet_seg.training.module import SegmentationModule

LOSS = {"ce_weight": 1.0, "dice_weight": 1.0}


class RepeatBatch(Dataset):
    """The same pre-made batch ``n`` times (``batch_size=None`` loaders yield it as is)."""

    def __init__(self, batch: dict[str, torch.Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch


class StepTimer(pl.Callback):
    """Time from one training batch start to the next: forward, backward, step and Lightning's
    own work (logging, hooks, progress bar) in between."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())


def make_batch(n: int, size: list[int], channels: int, num_classes: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(n, channels, *size, generator=g)
    label = torch.randint(0, num_classes, (n, *size), generator=g)
    return {"image": image, "label": label, "weight": torch.ones(n, *size)}


def plain_loop(model: nn.Module, loader: DataLoader, warmup: int) -> list[float]:
    """The reference: forward, crop, loss, backward, Adam step; seconds per timed step."""
    loss_fn = SegmentationLoss(**LOSS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    times = []
    start = time.perf_counter()
    for batch in loader:
        logits = model(batch["image"])
        out = logits.shape[2:]
        label = center_crop(batch["label"][:, None], out)[:, 0]
        weight = center_crop(batch["weight"][:, None], out)[:, 0]
        loss = loss_fn(logits, label, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # Lightning reads the loss for logging each step, so do the same
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times[warmup:]


def lightning_loop(module: SegmentationModule, loader: DataLoader, warmup: int) -> list[float]:
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=True, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(module, loader)
    steps = [b - a for a, b in zip(timer.starts, timer.starts[1:], strict=False)]
    return steps[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet_small_2d", help="a conf/model/ name")
    parser.add_argument("--size", type=int, nargs="+", default=[188, 188])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="3 steps of a small batch: a smoke")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.batch = 3, 1, 1
    peaks = roofline.measure_peaks("cpu", quick=args.quick)

    model_cfg = OmegaConf.to_container(
        OmegaConf.load(Path(CONFIG_DIR) / "model" / f"{args.model}.yaml")
    )
    batch = make_batch(args.batch, args.size, model_cfg["in_channels"], model_cfg["num_classes"])
    n = args.warmup + args.steps
    loader = DataLoader(RepeatBatch(batch, n), batch_size=None)
    threads = torch.get_num_threads()
    print(f"model {args.model} {model_cfg['features']} {model_cfg['padding']}, batch "
          f"{args.batch} x {args.size}, {args.steps} timed steps, {threads} threads")  # fmt: skip

    results = {}
    torch.manual_seed(0)
    module = SegmentationModule(model=model_cfg, loss=LOSS)
    gflop = {"ours": roofline.training_step_gflop(module.model, batch["image"])}
    results["ours, plain PyTorch loop"] = plain_loop(module.model, loader, args.warmup)
    torch.manual_seed(0)
    module = SegmentationModule(model=model_cfg, loss=LOSS)
    results["ours, Lightning training_step"] = lightning_loop(module, loader, args.warmup)

    from monai.networks.nets import BasicUNet

    # BasicUNet always has 5 levels and same padding: give it our widths (the 5th level doubles the
    # last), batch norm and ReLU, and an input of the same size rounded up to a multiple of 16.
    f = list(model_cfg["features"])
    feats = [*[*f, *[f[-1] * 2 ** (i + 1) for i in range(5 - len(f))]][:5], f[0]]
    monai_size = [-(-s // 16) * 16 for s in args.size]
    monai = BasicUNet(
        spatial_dims=model_cfg["spatial_dims"], in_channels=model_cfg["in_channels"],
        out_channels=model_cfg["num_classes"], features=feats, act="relu", norm="batch",
    )  # fmt: skip
    mbatch = make_batch(args.batch, monai_size, model_cfg["in_channels"], model_cfg["num_classes"])
    mloader = DataLoader(RepeatBatch(mbatch, n), batch_size=None)
    gflop["monai"] = roofline.training_step_gflop(monai, mbatch["image"])
    results[f"MONAI BasicUNet {feats}, {monai_size}"] = plain_loop(monai, mloader, args.warmup)

    ours, theirs = (sum(p.numel() for p in m.parameters()) for m in (module.model, monai))
    print(f"parameters: ours {ours:,}, MONAI BasicUNet {theirs:,}")
    medians = {name: statistics.median(t) for name, t in results.items()}
    base = medians["ours, plain PyTorch loop"]
    for name, value in medians.items():
        print(f"{name:55s} {1000 * value:8.1f} ms/step   {value / base:5.3f}x plain loop")
    lightning = medians["ours, Lightning training_step"]
    print(f"Lightning overhead ratio: {lightning / base:.3f} (goal <= 1.05)")
    methods = {
        name: roofline.method_figures(
            gflop["monai" if name.startswith("MONAI") else "ours"], value, peaks,
            steps_per_s=round(1 / value, 3), vs_plain_loop=round(value / base, 4),
        )
        for name, value in medians.items()
    }  # fmt: skip
    print(roofline.roofline_table(peaks, methods))
    roofline.print_record("train_step", peaks, methods, model=args.model, size=args.size,
                          batch=args.batch, steps=args.steps, quick=args.quick,
                          lightning_overhead=round(lightning / base, 4))  # fmt: skip


if __name__ == "__main__":
    main()
