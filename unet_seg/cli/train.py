"""``unet-seg-train``: train a U-Net from the Hydra configs in ``conf/`` (see ``conf/train.yaml``).

Examples::

    unet-seg-train experiment=sample_2d                 # the sample data, a few minutes on CPU
    unet-seg-train experiment=isbi2012_fast trainer.max_epochs=50
    unet-seg-train experiment=sample_2d ckpt_path=runs/sample_2d/<run>/checkpoints/last.ckpt
    unet-seg-train -m experiment=sample_2d loss=ce,dice_ce   # a sweep, one run dir per job
    unet-seg-train experiment=sample_2d_boundary        # tune_instances=ap: tuned after training
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from unet_seg.cli.launch import launch

log = logging.getLogger(__name__)
NAME = "unet-seg-train"


def tune_published(cfg: DictConfig) -> dict | None:
    """With ``cfg.tune_instances`` (``ap`` or ``rand_error``), run ``unet-seg-tune`` on the
    checkpoint this run published; returns its result, or None when there is nothing to tune."""
    from unet_seg.models.checkpoint import read_checkpoint
    from unet_seg.training.publish import PUBLICATION_KEY
    from unet_seg.training.train import is_multirun

    objective = cfg.get("tune_instances")
    summary_path = Path(cfg.output_dir) / "metrics.json"
    if not objective or not summary_path.is_file() or is_multirun():  # a sweep publishes nothing
        return None
    best = json.loads(summary_path.read_text()).get("best_checkpoint")
    published = Path(cfg.publish_checkpoint) if cfg.get("publish_checkpoint") else None
    if not best or published is None or not published.is_file():
        log.info("tune_instances: no published checkpoint to tune")
        return None
    source = read_checkpoint(published).get(PUBLICATION_KEY, {}).get("source")
    if source != str(Path(best).resolve()):  # the model there scored better than this run's
        log.info("tune_instances: %s is not this run's model; not tuned", published)
        return None
    from unet_seg.tuning.write_back import tune_command  # inference only when asked

    return tune_command(DictConfig({"checkpoint": str(published), "objective": objective}))


def run(cfg: DictConfig) -> float | None:
    """Run :func:`unet_seg.training.train.train`; returns ``cfg.optimized_metric`` for sweepers."""
    from unet_seg.cli.errors import reported_errors
    from unet_seg.training.train import train  # torch and Lightning load only for real work

    with reported_errors(NAME, cfg):
        metrics = train(cfg)
        tune_published(cfg)
        metric = cfg.get("optimized_metric")
        return metrics.get(metric) if metric else None


def main() -> None:
    """The ``unet-seg-train`` console script (errors: one line; ``traceback=true`` for more)."""
    launch("train", NAME, run)


if __name__ == "__main__":
    main()
