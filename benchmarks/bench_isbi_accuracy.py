"""ISBI 2012 accuracy on held-out sections: our ``isbi2012_fast`` U-Net against MONAI's ``UNet``
trained with the same budget, data, patches, augmentation, loss and optimiser, in one script.

Both train on sections 0-24 (``conf/data/isbi2012.yaml``) for ``--minutes`` of wall time each
(``trainer.max_time``), then segment the whole 512 x 512 held-out sections 25-29 (mirror-padded,
one forward pass each) and are scored there: membrane Dice, pixel error, and the foreground-
restricted Rand error and variation of information of the cell segments (``SegmentationMetrics``).
Both are scored on their final weights (no selection on the held-out sections).

    python benchmarks/bench_isbi_accuracy.py --minutes 15
    python benchmarks/bench_isbi_accuracy.py --minutes 60 --ours-only   # the 1-hour CPU budget

Each model is scored twice: one forward pass, and softmax averaged over the 8 dihedral views.

MONAI's net is its usual 2D ``UNet`` (channels 16..256, strided convs, 2 residual units, batch
norm), same padding; a wrapper crops its output to the centre our valid net predicts, so both
learn from exactly the same labels.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import tifffile
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from unet_seg.config import config_dir
from unet_seg.evaluation.metrics import rand_error, variation_of_information
from unet_seg.inference.runner import tta_views
from unet_seg.instances.methods import resolve, segment
from unet_seg.models import shapes
from unet_seg.models.blocks import center_crop
from unet_seg.normalization import normalize_percentile
from unet_seg.training.metrics import SegmentationMetrics, segments
from unet_seg.training.module import SegmentationModule
from unet_seg.training.train import build_datamodule, build_module
from unet_seg.tuning.search import tune

HELD_OUT = range(25, 30)
TUNE = range(22, 25)  # training sections on which the instance post-processing is tuned
CELLS = {"foreground_class": 0, "background_class": 1, "interior_class": 0}  # class 0 = cell


class CroppedSameNet(nn.Module):
    """A same-padding net made to answer like our valid one: pad the input up to a multiple of
    ``multiple`` (mirror), run, and return the centre ``input - trim`` of the output."""

    def __init__(self, net: nn.Module, trim: int, multiple: int, num_classes: int) -> None:
        super().__init__()
        self.net, self.trim, self.multiple, self.num_classes = net, trim, multiple, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [(-s) % self.multiple for s in size]
        padded = F.pad(x, [p for s in reversed(pad) for p in (0, s)], mode="reflect")
        out = self.net(padded)[(..., *(slice(0, s) for s in size))]
        return center_crop(out, [s - self.trim for s in size])


def monai_unet(num_classes: int, trim: int) -> nn.Module:
    from monai.networks.nets import UNet

    net = UNet(
        spatial_dims=2, in_channels=1, out_channels=num_classes, channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2), num_res_units=2, norm="batch",
    )  # fmt: skip
    return CroppedSameNet(net, trim, 16, num_classes)


def fit(cfg, module: SegmentationModule, minutes: float, workdir: Path) -> float:
    """Train ``module`` on ``cfg.data`` for ``minutes``; returns the seconds it took."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")  # reading and weighting the sections stays out of the budget
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=10_000, max_time={"minutes": minutes},
        check_val_every_n_epoch=5, logger=pl.loggers.CSVLogger(workdir, name=""),
        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=5,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    print(f"  {trainer.current_epoch} epochs, {trainer.global_step} steps")
    return time.perf_counter() - start


@torch.no_grad()
def section_probabilities(
    model: nn.Module, image: np.ndarray, trim: int, depth: int, tta: bool = False
) -> torch.Tensor:
    """``(2, H, W)`` softmax of one whole section (mirror padding by ``trim / 2``); ``tta``:
    averaged over the 8 dihedral views (:func:`tta_views`)."""
    model.eval()
    size = image.shape
    full = [shapes.smallest_valid_size(s + trim, depth) for s in size]
    pads = [(trim // 2, f - s - trim // 2) for s, f in zip(size, full, strict=True)]
    x = torch.from_numpy(np.pad(image, pads, mode="reflect"))[None, None]
    views = tta_views(2, tta)
    probs = sum(view.undo(model(view.apply(x)).softmax(1)) for view in views) / len(views)
    return probs[0, :, : size[0], : size[1]]


def score(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, trim: int, depth: int,
    tta: bool = False,
) -> dict:  # fmt: skip
    """The held-out figures of the class map (argmax; its cell components are the segments)."""
    metrics = SegmentationMetrics(num_classes=2, region_class=0)  # cells are the segments
    for image, label in zip(images, labels, strict=True):
        pred = section_probabilities(model, image, trim, depth, tta).argmax(0)
        metrics.update(pred[None], torch.from_numpy(label)[None])
    return metrics.compute()


def score_tuned(
    model: nn.Module, tune_set: tuple[np.ndarray, np.ndarray], images: np.ndarray,
    labels: np.ndarray, trim: int, depth: int,
) -> dict:  # fmt: skip
    """Rand error and VI of the cells from the instance post-processing (``cc``, ``distance``,
    ``seeded``) tuned for Rand error on ``tune_set`` (training sections: the held-out ones
    choose nothing)."""

    def probabilities(sections: np.ndarray) -> list[np.ndarray]:
        return [section_probabilities(model, s, trim, depth).numpy() for s in sections]

    tune_truths = [segments(label == 0) for label in tune_set[1]]
    tuned = tune(probabilities(tune_set[0]), tune_truths, CELLS, objective="rand_error",
                 progress=False)  # fmt: skip
    options = resolve(tuned)
    preds = [segment(p, options) for p in probabilities(images)]
    truths = [segments(label == 0) for label in labels]
    pairs = list(zip(preds, truths, strict=True))
    return {
        "method": tuned["method"], "params": tuned["methods"][tuned["method"]],
        "tune_rand_error": tuned["score"],
        "rand_error": float(np.mean([rand_error(p, t) for p, t in pairs])),
        "vi": float(np.mean([variation_of_information(p, t) for p, t in pairs])),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per model")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument(
        "--ours-only", action="store_true", help="train and score only ours (the 1-hour run)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_isbi_"))
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose("train", overrides=["experiment=isbi2012_fast", f"paths.runs_dir={workdir}",
                                          f"output_dir={workdir}"])  # fmt: skip
    isbi = Path(cfg.data.images).parent
    if not Path(cfg.data.images).is_file():
        raise FileNotFoundError(f"ISBI 2012 data not found: {cfg.data.images}")
    norm = cfg.normalization
    images = tifffile.imread(cfg.data.images)[list(HELD_OUT)].astype(np.float32)
    images = np.stack([normalize_percentile(i, norm.low, norm.high) for i in images])
    all_labels = tifffile.imread(cfg.data.labels)
    labels = np.where(all_labels[list(HELD_OUT)] == 0, 1, 0).astype(np.int64)  # 0 = membrane
    tune_images = tifffile.imread(cfg.data.images)[list(TUNE)].astype(np.float32)
    tune_set = (np.stack([normalize_percentile(i, norm.low, norm.high) for i in tune_images]),
                np.where(all_labels[list(TUNE)] == 0, 1, 0).astype(np.int64))  # fmt: skip
    threads = torch.get_num_threads()
    print(f"ISBI 2012 from {isbi}: train sections 0-24, score whole sections {HELD_OUT[0]}-"
          f"{HELD_OUT[-1]}; {args.minutes:g} min per model, {threads} threads")  # fmt: skip

    ours = build_module(cfg)
    depth = ours.model.depth
    trim = cfg.data.patch_size[0] - ours.model.output_shape(list(cfg.data.patch_size))[0]
    results = {}
    lines = [("ours isbi2012_fast", ours)]
    if not args.ours_only:
        lines.append(("MONAI UNet", build_module(cfg)))
    for name, module in lines:
        if name.startswith("MONAI"):
            module.model = monai_unet(cfg.model.num_classes, trim)
        params = sum(p.numel() for p in module.model.parameters())
        print(f"{name}: {params:,} parameters, training ...")
        seconds = fit(cfg, module, args.minutes, workdir / name.split()[0])
        torch.save(module.state_dict(), workdir / f"{name.split()[0]}.pt")  # to score again
        figures = score(module.model, images, labels, trim, depth)
        results[name] = {"parameters": params, "train_seconds": round(seconds, 1), **figures}
        tta = score(module.model, images, labels, trim, depth, tta=True)
        results[f"{name} + TTA"] = {"parameters": params, "train_seconds": round(seconds, 1), **tta}
        tuned = score_tuned(module.model, tune_set, images, labels, trim, depth)
        print(
            f"  tuned on sections {TUNE[0]}-{TUNE[-1]} for Rand error: {tuned['method']} "
            f"{tuned['params']} (Rand error there {tuned['tune_rand_error']:.4f})"
        )
        results[f"{name} + tuned cells"] = {**results[name], "rand_error": tuned["rand_error"],
                                            "vi": tuned["vi"], "tuned": tuned}  # fmt: skip

    print(f"\nheld-out sections {HELD_OUT[0]}-{HELD_OUT[-1]}, {args.minutes:g} min training each")
    print(
        f"{'model':28s} {'params':>10s} {'dice':>7s} {'pixel err':>10s} {'rand err':>9s} {'VI':>7s}"
    )
    for name, r in results.items():
        print(f"{name:28s} {r['parameters']:10,d} {r['dice']:7.4f} {r['pixel_error']:10.4f} "
              f"{r['rand_error']:9.4f} {r['vi']:7.4f}")  # fmt: skip
    if args.ours_only:
        print("(MONAI not run: --ours-only)")
    else:
        a, b = results["ours isbi2012_fast"], results["MONAI UNet"]
        print(f"ratio ours/MONAI: dice {a['dice'] / b['dice']:.3f}, pixel error "
              f"{a['pixel_error'] / b['pixel_error']:.3f}, rand error "
              f"{a['rand_error'] / b['rand_error']:.3f}, VI {a['vi'] / b['vi']:.3f}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"minutes": args.minutes, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
