"""The napari plugin (``pip install "unet-seg[napari]"``): a reader for the outputs of
``unet-seg-predict``, a "Segment" widget that runs a model on a layer, and the samples.

Declared in ``napari.yaml`` (an npe2 manifest, found through the ``napari.manifest`` entry
point); napari imports the modules it names only when a contribution is used. Only this
subpackage imports napari, magicgui or Qt, and only :mod:`~unet_seg.napari.widget` imports
them at all: the rest of ``unet_seg`` works without them.
"""
