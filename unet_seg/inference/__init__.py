"""Inference: read lazily -> tiles -> model -> blend -> post-process -> write.

Modules: ``tiling`` (overlap-tile and sliding-window plans), ``stream`` (running them by z-slabs),
``runner`` (device, AMP, flip TTA), ``inputs`` (a file's layout for a model, normalised slabs),
``postprocess`` (labels, probabilities, instances), ``predict`` (``unet-seg-predict``). Files are
read and written through :mod:`unet_seg.io`; figures of a prediction are
:mod:`unet_seg.evaluation`'s.
"""
