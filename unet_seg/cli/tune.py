"""``unet-seg-tune``: pick the instance post-processing of a checkpoint on its validation split
(``conf/tune.yaml``) and store it in the checkpoint for ``unet-seg-predict``.

Examples::

    unet-seg-tune checkpoint=runs/sample_2d_boundary/model.ckpt
    unet-seg-tune checkpoint=runs/isbi2012_fast/model.ckpt objective=rand_error
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from unet_seg.config import config_dir
from unet_seg.inference.tune_checkpoint import tune_command


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="tune")
def main(cfg: DictConfig) -> None:
    try:
        result = tune_command(cfg)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"unet-seg-tune: {err}")
    for method, params in result["methods"].items():
        mark = "*" if method == result["method"] else " "
        print(f"{mark} {method:9s} {result['objective']} {result['scores'][method]:.4f}  {params}")
    print(f"unet-seg-tune: {result['method']} stored in {cfg.output or cfg.checkpoint}")


if __name__ == "__main__":
    main()
