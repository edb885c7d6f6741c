"""Zarr and OME-Zarr: ``store`` (reading stores lazily, with their NGFF geometry), ``codecs``
(bounded chunk decoding), ``output`` (outputs written block by block, resumably), ``ngff`` (the
multiscale pyramid and NGFF metadata, labels groups), ``convert`` (files to OME-Zarr).
"""
