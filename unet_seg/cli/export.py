"""``unet-seg-export``: a checkpoint as TorchScript, ONNX or a bioimage.io package.

Options: ``conf/export.yaml``.

Examples::

    unet-seg-export                                     # the sample model as ONNX into runs/export
    unet-seg-export checkpoint=runs/isbi2012/model.ckpt format=torchscript output_dir=models
    unet-seg-export format=bioimageio bioimageio.test_image=data_samples/stack/stack.tif

Exit codes as for the other commands (``unet_seg.cli.errors``).
"""

from __future__ import annotations

from omegaconf import DictConfig

from unet_seg.cli.launch import launch

NAME = "unet-seg-export"


def run(cfg: DictConfig) -> None:
    from unet_seg.cli.errors import reported_errors
    from unet_seg.export.run import export  # torch is imported only when there is work to do

    with reported_errors(NAME, cfg):
        written = export(cfg)
    for fmt, path in written.items():
        print(f"{NAME}: {fmt} -> {path}")


def main() -> None:
    """The ``unet-seg-export`` console script."""
    launch("export", NAME, run)


if __name__ == "__main__":
    main()
