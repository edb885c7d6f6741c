"""``unet-seg-train``: train a U-Net from the Hydra configs in ``conf/`` (see ``conf/train.yaml``).

Examples::

    unet-seg-train experiment=sample_2d                 # the sample data, a few minutes on CPU
    unet-seg-train experiment=isbi2012_fast trainer.max_epochs=50
    unet-seg-train experiment=sample_2d ckpt_path=runs/sample_2d/<run>/checkpoints/last.ckpt
    unet-seg-train -m experiment=sample_2d loss=ce,dice_ce   # a sweep, one run dir per job
"""

from __future__ import annotations

from omegaconf import DictConfig

from unet_seg.cli.launch import launch

NAME = "unet-seg-train"


def run(cfg: DictConfig) -> float | None:
    """Run :func:`unet_seg.training.train.train`; returns ``cfg.optimized_metric`` for sweepers."""
    from unet_seg.cli.errors import reported_errors
    from unet_seg.training.train import train  # torch and Lightning load only for real work

    with reported_errors(NAME, cfg):
        metrics = train(cfg)
        metric = cfg.get("optimized_metric")
        return metrics.get(metric) if metric else None


def main() -> None:
    """The ``unet-seg-train`` console script (errors: one line; ``traceback=true`` for more)."""
    launch("train", NAME, run)


if __name__ == "__main__":
    main()
