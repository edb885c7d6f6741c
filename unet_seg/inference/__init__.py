"""Inference: read lazily -> tiles -> model -> blend -> post-process -> write, and evaluation.

Modules: ``tiling`` (overlap-tile and sliding-window plans), ``stream`` (running them by z-slabs),
``runner`` (device, AMP, flip TTA), ``inputs`` (files, layouts, normalisation), ``writers``
(atomic slab writers), ``postprocess`` (labels, probabilities, instances), ``predict``
(``unet-seg-predict``), ``metrics`` and ``evaluate`` (``unet-seg-evaluate``).
"""
