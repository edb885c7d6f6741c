"""Accuracy at equal wall-clock training time (issue 36): one dataset x method x seed per run,
written as one JSON part under ``benchmarks/accuracy/``; ``--merge`` writes the table.

    python benchmarks/bench_accuracy.py --dataset sample_2d --method ours --budget 15min --seed 0
    python benchmarks/bench_accuracy.py --merge        # markdown table + one JSON line

Methods, each trained for ``--budget`` of wall time on the CPU (set-up, planning and
preprocessing not counted), then scored on the dataset's held-out test split
(``accuracy_data.py``) by the same functions (``accuracy_score.py``):

- ``ours``: ``unet_seg.planning`` given only the data paths, the budget and the CPU, then
  ``unet-seg-train`` of the written experiment (it validates as planned and keeps the best
  checkpoint, chosen on the validation split); whole-image tiled prediction of the test split.
- ``nnunet``: nnU-Net v2's own plan and preprocessing and its default trainer stopped at the
  budget, validation counted, default inference with mirroring (``nnunet_budget.py``).
- ``monai``: MONAI's ``UNet`` (``bench_instances.py``'s, channels 16..256, residual units,
  batch norm) in our pipeline with the hand recipe of the dataset (``sample_2d``, ``sample_3d``,
  ``isbi2012_fast``: Dice + CE, Adam, flips, elastic deformation), final weights, no validation.

Validation splits are the same for every method: the planner's (the last 20 % of the files, or
of a single stack's slices). Nothing is chosen on the test split.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import accuracy_data
import merge_accuracy
import nnunet_budget
import numpy as np
from accuracy_score import figures

METHODS = ("ours", "nnunet", "monai")
PARTS = Path(__file__).resolve().parent / "accuracy"
# The hand recipe each dataset's MONAI line trains with (the validation split the planner's).
RECIPES = {
    "sample_2d": ["experiment=sample_2d"],
    "sample_3d": ["experiment=sample_3d", "data.val_slices=[38,48]"],
    "isbi2012": ["experiment=isbi2012_fast", "data.val_slices=[20,25]"],
}


def normalized(data, low: float | None = None, high: float | None = None) -> list[np.ndarray]:
    """The test images ``(1, *spatial)`` float32, by the percentiles our pipeline uses."""
    from unet_seg.normalization import DEFAULT_PERCENTILES, normalize_percentile

    low = DEFAULT_PERCENTILES["low"] if low is None else low
    high = DEFAULT_PERCENTILES["high"] if high is None else high
    return [normalize_percentile(c.image[None].astype(np.float32), low, high) for c in data.test]


def class_maps(model, images: list[np.ndarray], num_classes: int) -> list[np.ndarray]:
    """Argmax of predict's tiled probabilities of each ``(1, *spatial)`` image."""
    from bench_instances import probabilities

    probs = probabilities(model, images)
    if probs[0].shape[0] != num_classes:
        raise ValueError(f"the model predicts {probs[0].shape[0]} classes, the test {num_classes}")
    return [p.argmax(0) for p in probs]


def run_ours(data, budget: str, seed: int, workdir: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from unet_seg.config import config_dir
    from unet_seg.planning.run import plan_and_write
    from unet_seg.training.module import SegmentationModule
    from unet_seg.training.train import train

    settings = {
        "data": {"images": str(data.images), "labels": str(data.labels),
                 "label_map": data.label_map},
        "budget": budget, "machine": {"device": "cpu"}, "out_dir": str(workdir / "plans"),
    }  # fmt: skip
    planned = plan_and_write(settings, f"{data.name}_planned")
    print(planned.plan.summary())
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose("train", overrides=[
            f"hydra.searchpath=[file://{workdir / 'plans'}]", f"experiment={planned.name}",
            f"seed={seed}", f"paths.runs_dir={workdir / 'runs'}", f"output_dir={workdir / 'run'}",
            "trainer.enable_progress_bar=false", "tune_instances=null",
        ])  # fmt: skip
    start = time.perf_counter()
    made = train(cfg)
    seconds = time.perf_counter() - start
    summary = json.loads((workdir / "run" / "metrics.json").read_text())
    if made.best is None:  # scoring the last weights instead would change the method
        raise SystemExit(f"ours: no validation within {budget}, so no checkpoint; a longer budget")
    model = SegmentationModule.load_from_checkpoint(made.best, map_location="cpu").model.eval()
    norm = cfg.normalization
    preds = class_maps(model, normalized(data, norm.low, norm.high), data.num_classes)
    return {"train_seconds": seconds, "steps": summary["global_step"],
            "epochs": summary["epochs"], "figures": figures(preds, data),
            "setup": {"plan": planned.plan.summary().splitlines()}}  # fmt: skip


def run_monai(data, seconds: float, seed: int, workdir: Path) -> dict:
    import pytorch_lightning as pl
    from bench_instances import monai_net
    from hydra import compose, initialize_config_dir

    from unet_seg.config import config_dir
    from unet_seg.training.train import build_datamodule, build_module, follow_the_data

    overrides = list(RECIPES[data.name])
    if data.name == "isbi2012":
        overrides += [f"data.images={data.images}", f"data.labels={data.labels}"]
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        paths = [f"seed={seed}", f"paths.runs_dir={workdir}", f"output_dir={workdir}"]
        cfg = compose("train", overrides=[*overrides, *paths])
    pl.seed_everything(seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")  # reading the data stays out of the budget, as for the others
    follow_the_data(cfg, datamodule)
    module = build_module(cfg)
    patch = list(cfg.data.patch_size)
    trim = patch[0] - module.model.output_shape(patch)[0]
    module.model = monai_net(cfg.model.spatial_dims, cfg.model.num_classes, trim)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=10**6, max_time={"seconds": seconds},
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    took = time.perf_counter() - start
    preds = class_maps(module.model.eval(), normalized(data), data.num_classes)
    params = sum(p.numel() for p in module.model.parameters())
    return {"train_seconds": took, "steps": trainer.global_step, "epochs": trainer.current_epoch,
            "figures": figures(preds, data),
            "setup": {"recipe": overrides[0], "parameters": params}}  # fmt: skip


def run_nnunet(data, seconds: float, seed: int, workdir: Path, gpu_memory_gb: float | None):
    import torch

    os.environ.setdefault("nnUNet_raw", str(workdir / "nnunet" / "raw"))  # removed with workdir
    images, labels, train, val = accuracy_data.as_cases(data, workdir / "cases")
    dataset_id = 901 + accuracy_data.DATASETS.index(data.name)
    configuration, preprocessed = nnunet_budget.prepare(
        images, labels, train, val, dataset_id, data.name, data.spatial_dims, gpu_memory_gb
    )
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - nnU-Net's loaders draw from NumPy's global generator
    trainer = nnunet_budget.train(preprocessed, configuration, seconds)
    preds = nnunet_budget.predict(trainer, [c.image for c in data.test], data.spacing,
                                  workdir / "test")  # fmt: skip
    arch = trainer.configuration_manager.network_arch_init_kwargs
    return {"train_seconds": trainer.train_seconds, "steps": trainer.steps,
            "epochs": trainer.current_epoch, "figures": figures(preds, data),
            "setup": {"configuration": configuration, "gpu_memory_target_gb": gpu_memory_gb,
                      "patch_size": list(trainer.configuration_manager.patch_size),
                      "batch_size": trainer.configuration_manager.batch_size,
                      "features_per_stage": list(arch["features_per_stage"])}}  # fmt: skip


def provenance() -> dict:
    """Where and when: commit (and whether the tree differed), CPU, threads, load."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return run.stdout.strip()

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())  # fmt: skip
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu, "cores": len(os.sched_getaffinity(0)),
                    "torch_threads": torch.get_num_threads(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }  # fmt: skip


def run_part(args: argparse.Namespace) -> Path:
    from unet_seg.io.atomic import write_text_atomic
    from unet_seg.planning.machine import parse_budget

    budget = parse_budget(args.budget)
    if budget.seconds is None:
        raise SystemExit(f"--budget {args.budget}: give a time (15min, 30min), not epochs")
    if args.method == "nnunet" and not nnunet_budget.available():
        raise SystemExit(f"nnunet: nnunetv2 is not installed; install it: {nnunet_budget.INSTALL}")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench_accuracy_{args.dataset}_{args.method}_"))
    try:
        data = accuracy_data.load(args.dataset, workdir)
        before = provenance()
        start = time.perf_counter()
        if args.method == "ours":
            result = run_ours(data, args.budget, args.seed, workdir)
        elif args.method == "monai":
            result = run_monai(data, budget.seconds, args.seed, workdir)
        else:
            result = run_nnunet(data, budget.seconds, args.seed, workdir, args.nnunet_gpu_memory)
    finally:
        if args.keep:
            print(f"kept the run's files in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    method = (
        args.method if args.nnunet_gpu_memory is None else f"nnunet_{args.nnunet_gpu_memory:g}gb"
    )
    part = {
        "dataset": data.name, "method": method, "seed": args.seed, "budget": args.budget,
        "budget_seconds": budget.seconds, "primary": data.primary,
        **{k: result[k] for k in ("steps", "epochs")},
        "train_seconds": round(result["train_seconds"], 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "test_cases": len(data.test),
        "figures": {k: round(v, 5) for k, v in result["figures"].items()},
        "setup": result["setup"], **before,
    }  # fmt: skip
    out = args.out_dir / f"{data.name}_{method}_{args.budget}_seed{args.seed}.json"
    write_text_atomic(out, json.dumps(part, indent=2) + "\n")
    print(json.dumps(part["figures"]))
    print(f"wrote {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=accuracy_data.DATASETS)
    parser.add_argument("--method", choices=METHODS)
    parser.add_argument("--budget", default="15min", help="training wall time: 15min, 30min, 90s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=PARTS, help="where the parts are")
    parser.add_argument(
        "--nnunet-gpu-memory", type=float, default=None, metavar="GB",
        help="nnunet: re-plan with its own GPU-memory target (an extra line)",
    )  # fmt: skip
    parser.add_argument("--merge", action="store_true", help="print the table of the parts")
    parser.add_argument("--keep", action="store_true", help="keep the run's temporary files")
    args = parser.parse_args(argv)
    if args.merge:
        merge_accuracy.main([str(args.out_dir)])
        return
    if args.dataset is None or args.method is None:
        parser.error("give --dataset and --method (or --merge)")
    if args.nnunet_gpu_memory is not None and args.method != "nnunet":
        parser.error("--nnunet-gpu-memory is for --method nnunet")
    run_part(args)


if __name__ == "__main__":
    main()
