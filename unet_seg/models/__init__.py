"""The U-Net, its building blocks and its size arithmetic."""

from unet_seg.models.unet import UNet

__all__ = ["UNet"]
