"""``unet-seg-predict``: ``batch`` (every input of a run, the summary), ``outputs`` (where each
input's outputs go, decided before any work, and whether existing ones are complete),
``driver`` (one input through every stage), ``sinks`` (output files or zarr stores),
``preview`` and ``provenance`` (which run made an output).
"""
