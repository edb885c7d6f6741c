"""``unet-seg-tune``: pick the instance post-processing of a checkpoint on its validation split
(``conf/tune.yaml``) and store it in the checkpoint for ``unet-seg-predict``.

Examples::

    unet-seg-tune checkpoint=runs/sample_2d_boundary/model.ckpt
    unet-seg-tune checkpoint=runs/isbi2012_fast/model.ckpt objective=rand_error

Exit codes: 1 when the checkpoint or its data cannot be read, 2 for a command that cannot work as
given (see ``unet_seg.cli.errors``); ``traceback=true`` shows tracebacks.
"""

from __future__ import annotations

from omegaconf import DictConfig

from unet_seg.cli.launch import launch

NAME = "unet-seg-tune"


def run(cfg: DictConfig) -> None:
    from unet_seg.cli.errors import reported_errors, sigterm_as_interrupt
    from unet_seg.tuning.write_back import tune_command  # heavy imports only for work

    with reported_errors(NAME, cfg), sigterm_as_interrupt():
        result = tune_command(cfg)
    for method, params in result["methods"].items():
        mark = "*" if method == result["method"] else " "
        print(f"{mark} {method:9s} {result['objective']} {result['scores'][method]:.4f}  {params}")
    with_tta = "tta=true" if result.get("tta") else "tta=false"
    print(f"{NAME}: {result['method']} stored in {cfg.output or cfg.checkpoint} "
          f"(for unet-seg-predict {with_tta})")  # fmt: skip


def main() -> None:
    """The ``unet-seg-tune`` console script."""
    launch("tune", NAME, run)


if __name__ == "__main__":
    main()
