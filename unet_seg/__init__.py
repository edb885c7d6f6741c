"""unet-seg: the U-Net of Ronneberger et al. (2015) for 2D and 3D microscopy segmentation."""

__version__ = "0.1.0"
