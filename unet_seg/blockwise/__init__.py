"""The block-wise engine: ``plan`` (blocks: the region each owns and the region it reads),
``task`` (one block through the model into the outputs; the per-worker runner cache),
``engine`` (in-process or Dask: local, an address, SLURM / PBS / LSF), ``run`` (the blocks not
yet recorded, failures reported by block), ``mask`` (skip blocks without foreground),
``instance_passes`` and ``flood`` (instances across blocks), ``allocator`` (memory returned to
the system on long Dask runs).
"""
