"""``unet-seg-train``: train a U-Net from the Hydra configs in ``conf/`` (see ``conf/train.yaml``).

Examples::

    unet-seg-train experiment=sample_2d                 # the sample data, a few minutes on CPU
    unet-seg-train experiment=isbi2012_fast trainer.max_epochs=50
    unet-seg-train experiment=sample_2d ckpt_path=runs/sample_2d/<run>/checkpoints/last.ckpt
    unet-seg-train -m experiment=sample_2d loss=ce,dice_ce   # a sweep, one run dir per job
    unet-seg-train experiment=sample_2d_boundary        # tune_instances=ap: tuned after training
    unet-seg-train experiment=auto data.images=imgs/ data.labels=masks/ budget=30min  # plan, train
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from unet_seg.cli.launch import HELP_FLAGS, launch

if TYPE_CHECKING:  # torch and Lightning load only for real work, not --help
    from unet_seg.training.train import TrainingRun

log = logging.getLogger(__name__)
NAME = "unet-seg-train"


def tune_published(cfg: DictConfig, made: TrainingRun) -> dict | None:
    """With ``cfg.tune_instances`` (``ap`` or ``rand_error``), run ``unet-seg-tune`` on the
    checkpoint this run published; returns its result, or None when there is nothing to tune."""
    objective = cfg.get("tune_instances")
    if not objective:
        return None
    if made.published is None:  # a debug run, a sweep, or a better model already there
        log.info("tune_instances: this run published no checkpoint; not tuned")
        return None
    from unet_seg.tuning.write_back import tune_command  # inference only when asked

    return tune_command(DictConfig({"checkpoint": str(made.published), "objective": objective}))


def run(cfg: DictConfig) -> float | None:
    """Run :func:`unet_seg.training.train.train`; returns ``cfg.optimized_metric`` for sweepers."""
    from unet_seg.cli.errors import reported_errors
    from unet_seg.training.train import train  # torch and Lightning load only for real work

    with reported_errors(NAME, cfg):
        made = train(cfg)
        tune_published(cfg, made)
        metric = cfg.get("optimized_metric")
        return made.metrics.get(metric) if metric else None


def plan_if_auto(args: list[str]) -> list[str]:
    """``args``, or with ``experiment=auto`` the command line that trains a plan made now
    (:mod:`unet_seg.cli.auto_plan`); a planning problem ends in one line and its exit code."""
    from unet_seg.cli.auto_plan import wants_auto

    if not wants_auto(args) or any(flag in args for flag in HELP_FLAGS):
        return args
    from unet_seg.cli.auto_plan import plan_first
    from unet_seg.cli.errors import report, wants_traceback
    from unet_seg.cli.exit_codes import exit_interrupted

    try:
        return plan_first(args, NAME)
    except KeyboardInterrupt:
        exit_interrupted(NAME)
    except Exception as err:
        if wants_traceback():
            raise
        report(NAME, err)


def main() -> None:
    """The ``unet-seg-train`` console script (errors: one line; ``traceback=true`` for more)."""
    sys.argv = [sys.argv[0], *plan_if_auto(sys.argv[1:])]
    launch("train", NAME, run)


if __name__ == "__main__":
    main()
