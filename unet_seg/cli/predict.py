"""``unet-seg-predict``: segment files with a trained checkpoint (``conf/predict.yaml``).

Examples::

    unet-seg-predict                                    # the sample stack, the sample model
    unet-seg-predict input=data/ output_dir=preds checkpoint=runs/isbi2012/model.ckpt
    unet-seg-predict input='scans/*.nii.gz' outputs.probabilities=true overwrite=true

Exit codes: 1 when any file failed (one line per failed file), 2 for a command that cannot work
as given (see ``unet_seg.cli.errors``); ``traceback=true`` shows tracebacks.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from unet_seg.cli.launch import launch

NAME = "unet-seg-predict"


def run(cfg: DictConfig) -> None:
    from unet_seg.cli.errors import EXIT_FAILED, reported_errors, sigterm_as_interrupt
    from unet_seg.prediction.batch import predict  # torch loads only for real work, not --help

    with reported_errors(NAME, cfg), sigterm_as_interrupt():
        summary = predict(cfg)
    print(
        f"{NAME}: {summary['ok']} predicted, {summary['skipped']} skipped, "
        f"{summary['failed']} failed -> {summary['output_dir']}/predict_summary.json"
    )
    if summary["failed"]:
        for entry in summary["files"]:
            if entry["status"] == "failed":
                print(f"{NAME}: failed: {entry['input']}: {entry['error']}", file=sys.stderr)
        sys.exit(EXIT_FAILED)


def main() -> None:
    """The ``unet-seg-predict`` console script."""
    launch("predict", NAME, run)


if __name__ == "__main__":
    main()
