"""The network over a volume's windows: ``tiling`` (overlap-tile and sliding-window plans),
``stream`` (running a plan slab by slab and blending), ``runner`` (device, AMP, flip TTA),
``inputs`` (a file's layout for a model, normalised regions), ``options`` (predict's per-file
options), ``postprocess`` (labels and stored probabilities).

A whole file runs block by block through :mod:`unet_seg.prediction.driver` on the engine of
:mod:`unet_seg.blockwise`; objects are :mod:`unet_seg.instances`'.
"""
