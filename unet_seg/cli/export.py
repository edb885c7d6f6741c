"""``unet-seg-export``: a checkpoint as TorchScript, ONNX or a bioimage.io package.

Options: ``conf/export.yaml``.

Examples::

    unet-seg-export                                     # the sample model as ONNX into runs/export
    unet-seg-export checkpoint=runs/isbi2012/model.ckpt format=torchscript output_dir=models
    unet-seg-export format=bioimageio bioimageio.test_image=data_samples/stack/stack.tif
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from unet_seg.config import config_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
def main(cfg: DictConfig) -> None:
    from unet_seg.export.run import export  # torch is imported only when there is work to do

    try:
        written = export(cfg)
    except (FileNotFoundError, ValueError, ImportError) as err:
        sys.exit(f"unet-seg-export: {err}")
    for fmt, path in written.items():
        print(f"unet-seg-export: {fmt} -> {path}")


if __name__ == "__main__":
    main()
