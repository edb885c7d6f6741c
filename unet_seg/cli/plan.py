"""``unet-seg-plan``: fingerprint a dataset and plan a training for this machine and budget
(``conf/plan.yaml``); prints each decision and writes the fingerprint and an experiment file.

Examples::

    unet-seg-plan data.images=/data/cells/images data.labels=/data/cells/masks budget=30min
    unet-seg-plan data.root=/data/nnUNet_raw/Dataset004_Hippocampus budget=8h
    unet-seg-train --config-dir plans experiment=cells
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from unet_seg.cli.launch import launch

if TYPE_CHECKING:
    from unet_seg.planning.run import Planned

NAME = "unet-seg-plan"


def plan_and_print(cfg: DictConfig, name: str = NAME) -> Planned:
    """Plan with the composed ``conf/plan.yaml`` ``cfg``, write the plan's files and print its
    decisions; what ``unet-seg-plan`` and ``unet-seg-train experiment=auto`` both run (errors
    raise, for the caller to report)."""
    from unet_seg.config import plain
    from unet_seg.planning.run import check_data, plan_and_write  # heavy imports only for work

    settings = plain({k: v for k, v in cfg.items() if k != "name"})
    check_data(settings["data"])  # before ${data_name:} reads data.images or data.root
    planned = plan_and_write(settings, str(cfg.name))
    print(planned.plan.summary())
    print(f"{name}: wrote {planned.fingerprint_path} and {planned.experiment_path}")
    return planned


def run(cfg: DictConfig) -> None:
    from unet_seg.cli.errors import reported_errors

    with reported_errors(NAME, cfg):
        planned = plan_and_print(cfg)
    print(
        f"{NAME}: train it with: unet-seg-train --config-dir {planned.experiment_path.parents[1]}"
        f" experiment={planned.name}"
    )


def main() -> None:
    """The ``unet-seg-plan`` console script."""
    launch("plan", NAME, run)


if __name__ == "__main__":
    main()
