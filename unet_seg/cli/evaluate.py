"""``unet-seg-evaluate``: score predictions against ground truth (``conf/evaluate.yaml``).

Examples::

    unet-seg-evaluate                                   # sample stack predictions vs its labels
    unet-seg-evaluate pred_dir=preds gt_dir=data_samples/2d/labels gt_suffix=''

Exit codes: 1 when any pair failed (one line per failure), 2 for a command that cannot work as
given (see ``unet_seg.cli.errors``); ``traceback=true`` shows tracebacks.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from unet_seg.cli.launch import launch

NAME = "unet-seg-evaluate"


def run(cfg: DictConfig) -> None:
    from unet_seg.cli.errors import EXIT_FAILED, reported_errors, sigterm_as_interrupt
    from unet_seg.evaluation.evaluate import evaluate  # heavy imports only for real work

    with reported_errors(NAME, cfg), sigterm_as_interrupt():
        summary = evaluate(cfg)
    pooled = summary["pooled"]
    print(f"{'':>12s}  {'mean':>7s}  {'pooled':>7s}")
    for name, value in summary["mean"].items():
        both = f"{pooled[name]:7.4f}" if name in pooled else ""
        print(f"{name:>12s}  {value:7.4f}  {both}")
    print(
        f"unet-seg-evaluate: {summary['evaluated']} files evaluated, "
        f"{len(summary['failed'])} failed"
    )
    for failure in summary["failed"]:
        name = failure.get("prediction") or failure.get("ground_truth")
        print(f"{NAME}: failed: {name}: {failure['error']}", file=sys.stderr)
    if summary["failed"]:
        sys.exit(EXIT_FAILED)


def main() -> None:
    """The ``unet-seg-evaluate`` console script."""
    launch("evaluate", NAME, run)


if __name__ == "__main__":
    main()
