"""The U-Net (``unet``), its blocks (``blocks``), the sizes it accepts (``shapes``), its per-layer
summary (``summary``), loading it from a checkpoint (``checkpoint``) and the contract inference
relies on (``protocol``)."""

from unet_seg.models.unet import UNet

__all__ = ["UNet"]
