"""Choosing the instance post-processing: ``search`` (the grid search on predicted validation
images) and ``write_back`` (``unet-seg-tune``: predict a checkpoint's validation split, search,
store the result in the checkpoint). Loads no Lightning.
"""
