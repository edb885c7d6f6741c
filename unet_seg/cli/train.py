"""``unet-seg-train``: train a U-Net from the Hydra configs in ``conf/`` (see ``conf/train.yaml``).

Examples::

    unet-seg-train experiment=sample_2d                 # the sample data, a few minutes on CPU
    unet-seg-train experiment=isbi2012_fast trainer.max_epochs=50
    unet-seg-train experiment=sample_2d ckpt_path=runs/sample_2d/<run>/checkpoints/last.ckpt
    unet-seg-train -m experiment=sample_2d loss=ce,dice_ce   # a sweep, one run dir per job
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from unet_seg.cli.errors import reported_errors, run_console_script
from unet_seg.config import config_dir
from unet_seg.training.train import train

NAME = "unet-seg-train"


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def run(cfg: DictConfig) -> float | None:
    """Run :func:`unet_seg.training.train.train`; returns ``cfg.optimized_metric`` for sweepers."""
    with reported_errors(NAME, cfg):
        metrics = train(cfg)
        metric = cfg.get("optimized_metric")
        return metrics.get(metric) if metric else None


def main() -> None:
    """The ``unet-seg-train`` console script (errors: one line; ``traceback=true`` for more)."""
    run_console_script(NAME, run)


if __name__ == "__main__":
    main()
