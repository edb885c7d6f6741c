"""``unet-seg-evaluate``: score predictions against ground truth (``conf/evaluate.yaml``).

Examples::

    unet-seg-evaluate                                   # sample stack predictions vs its labels
    unet-seg-evaluate pred_dir=preds gt_dir=data_samples/2d/labels gt_suffix=''

The exit code is 1 when any pair failed (each failure is logged with its file name).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from unet_seg.config import config_dir
from unet_seg.evaluation.evaluate import evaluate


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        summary = evaluate(cfg)
    except FileNotFoundError as err:
        sys.exit(f"unet-seg-evaluate: {err}")
    for name, value in summary["mean"].items():
        print(f"{name:>12s}  {value:.4f}")
    print(
        f"unet-seg-evaluate: {summary['evaluated']} files evaluated, "
        f"{len(summary['failed'])} failed"
    )
    for failure in summary["failed"]:
        print(f"  failed: {failure['prediction']}: {failure['error']}", file=sys.stderr)
    if summary["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
