"""``unet-seg-predict``: segment files with a trained checkpoint (``conf/predict.yaml``).

Examples::

    unet-seg-predict                                    # the sample stack, the sample model
    unet-seg-predict input=data/ output_dir=preds checkpoint=runs/isbi2012/model.ckpt
    unet-seg-predict input='scans/*.nii.gz' outputs.probabilities=true overwrite=true

The exit code is 1 when any file failed (each failure is logged with its file name).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from unet_seg.config import config_dir
from unet_seg.inference.predict import predict


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def main(cfg: DictConfig) -> None:
    try:
        summary = predict(cfg)
    except (FileNotFoundError, ValueError) as err:  # no inputs, no or a broken checkpoint
        sys.exit(f"unet-seg-predict: {err}")
    print(
        f"unet-seg-predict: {summary['ok']} predicted, {summary['skipped']} skipped, "
        f"{summary['failed']} failed -> {summary['output_dir']}/predict_summary.json"
    )
    if summary["failed"]:
        for entry in summary["files"]:
            if entry["status"] == "failed":
                print(f"  failed: {entry['input']}: {entry['error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
