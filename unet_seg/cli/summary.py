"""``unet-seg-summary``: print the per-layer arithmetic of a model config for an input size.

Examples::

    unet-seg-summary                                   # the paper's net at 572 x 572
    unet-seg-summary model=unet_small_3d input_size=[44,92,92]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from unet_seg.cli.launch import launch
from unet_seg.errors import UsageError

if TYPE_CHECKING:
    from unet_seg.models.summary import Summary


def summary_from_config(model_cfg: dict, input_size: int | Sequence[int]) -> Summary:
    """Build the ``UNet`` of ``model_cfg`` and summarise it; an int size applies to every axis."""
    from unet_seg.models import UNet  # torch loads only for real work, not for --help
    from unet_seg.models.summary import summarize

    model = UNet(**model_cfg)
    if isinstance(input_size, int):
        input_size = [input_size] * model.spatial_dims
    return summarize(model, input_size)


NAME = "unet-seg-summary"


def positive_size(value: object) -> int:
    """One ``input_size`` entry as an int; ``UsageError`` naming the option unless it is a whole
    number >= 1."""
    from unet_seg.config import whole

    return whole("input_size", value, 1)


def run(cfg: DictConfig) -> None:
    from unet_seg.cli.errors import reported_errors

    with reported_errors(NAME, cfg):
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        if OmegaConf.is_list(cfg.input_size):
            size = [positive_size(s) for s in OmegaConf.to_container(cfg.input_size)]
        else:
            size = positive_size(cfg.input_size)
        try:
            table = summary_from_config(model_cfg, size).table()
        except (ValueError, TypeError) as err:  # sizes or model options that cannot work
            raise UsageError(str(err)) from err
    print(table)


def main() -> None:
    """The ``unet-seg-summary`` console script."""
    launch("summary", NAME, run)


if __name__ == "__main__":
    main()
