"""ISBI 2012 accuracy of a *planned* U-Net: ``unet-seg-plan`` on the training sections with only
the data paths and the budget, then ``unet-seg-train`` of the written experiment, scored on the
held-out sections like ``bench_isbi_accuracy.py`` (membrane Dice, pixel error, the cells'
foreground-restricted Rand error and VI). UNMEASURED: no figure of this script is in RESULTS.md
yet; it needs a quiet machine, and the nnU-Net and MONAI lines of issue 36's table are separate.

Sections 0-24 are written to a temporary stack that is all the planner and the training see (the
plan validates on its last 20 %, sections 20-24); sections 25-29 are scored whole with the best
checkpoint, which was chosen on the validation sections only. One JSON part per run (``--out``),
for a script that merges the parts into the table.

    python benchmarks/bench_plan_accuracy.py --minutes 30 --seeds 3 --out isbi_planned.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from hydra import compose, initialize_config_dir

from unet_seg.config import PROJECT_ROOT, config_dir
from unet_seg.normalization import normalize_percentile
from unet_seg.planning.run import plan_and_write
from unet_seg.training.module import SegmentationModule
from unet_seg.training.train import train

ISBI = PROJECT_ROOT.parent / "shared" / "datasets" / "isbi2012"
TRAIN, HELD_OUT = range(0, 25), range(25, 30)
LABEL_MAP = {255: 0, 0: 1}  # ISBI stores cells 255, membranes 0: class 0 = cells, 1 = membranes


def isbi_scoring():
    """``score`` of ``bench_isbi_accuracy.py`` (the same held-out figures, one code path)."""
    path = Path(__file__).with_name("bench_isbi_accuracy.py")
    spec = importlib.util.spec_from_file_location("bench_isbi_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.score


def write_training_stack(workdir: Path) -> tuple[Path, Path]:
    """Sections :data:`TRAIN` of the ISBI stack and its labels, as the planner's only data."""
    images, labels = workdir / "images", workdir / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    tifffile.imwrite(images / "isbi_train.tif", tifffile.imread(ISBI / "train-volume.tif")[:25])
    tifffile.imwrite(labels / "isbi_train.tif", tifffile.imread(ISBI / "train-labels.tif")[:25])
    return images, labels


def run_seed(plans: Path, name: str, seed: int, workdir: Path):
    """Train the planned experiment with ``seed``; returns the best checkpoint's module."""
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose(
            "train",
            overrides=[
                f"hydra.searchpath=[file://{plans}]",
                f"experiment={name}",
                f"seed={seed}",
                f"paths.runs_dir={workdir / 'runs'}",
                f"output_dir={workdir / f'seed{seed}'}",
                "trainer.enable_progress_bar=false",
                "tune_instances=null",
            ],
        )
    made = train(cfg)
    print(f"  seed {seed}: validation {made.metrics}")
    return SegmentationModule.load_from_checkpoint(made.best, map_location="cpu"), cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="the planner's budget")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    if not (ISBI / "train-volume.tif").is_file():
        raise FileNotFoundError(f"ISBI 2012 data not found in {ISBI}")

    workdir = Path(tempfile.mkdtemp(prefix="bench_plan_"))
    images, labels = write_training_stack(workdir)
    settings = {
        "data": {"images": str(images), "labels": str(labels), "label_map": LABEL_MAP},
        "budget": f"{args.minutes:g}min",
        "machine": {"device": "cpu"},
        "out_dir": str(workdir / "plans"),
    }
    planned = plan_and_write(settings, "isbi_planned")
    print(planned.plan.summary())

    score = isbi_scoring()
    stack = tifffile.imread(ISBI / "train-volume.tif")[list(HELD_OUT)].astype(np.float32)
    truth = np.where(tifffile.imread(ISBI / "train-labels.tif")[list(HELD_OUT)] == 0, 1, 0)
    runs = []
    for seed in range(args.seeds):
        module, cfg = run_seed(workdir / "plans", "isbi_planned", seed, workdir)
        norm = cfg.normalization
        sections = np.stack([normalize_percentile(s, norm.low, norm.high) for s in stack])
        model = module.model
        patch = list(cfg.data.patch_size)
        trim = patch[0] - model.output_shape(patch)[0]
        runs.append(score(model, sections, truth.astype(np.int64), trim, model.depth))
        print(f"  seed {seed}: held-out {runs[-1]}")

    keys = ("dice", "pixel_error", "rand_error", "vi")
    summary = {
        k: {
            "mean": statistics.mean(float(r[k]) for r in runs),
            "spread": statistics.pstdev(float(r[k]) for r in runs),
        }
        for k in keys
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        part = {
            "dataset": "isbi2012",
            "method": "ours, planned",
            "minutes": args.minutes,
            "plan": planned.plan.summary().splitlines(),
            "runs": [{k: float(r[k]) for k in keys} for r in runs],
            "summary": summary,
        }
        args.out.write_text(json.dumps(part, indent=2) + "\n")


if __name__ == "__main__":
    main()
