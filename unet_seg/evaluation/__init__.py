"""Evaluation: segmentation figures (:mod:`~unet_seg.evaluation.metrics`), shared by training's
validation and ``unet-seg-evaluate`` (:mod:`~unet_seg.evaluation.evaluate`), so the two never
drift apart."""
