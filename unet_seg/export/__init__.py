"""Exporting a trained U-Net so that it runs outside this project: TorchScript (``.pt``), ONNX
(``.onnx``) and bioimage.io model packages (deepImageJ, ilastik, the BioImage Model Zoo).

Each exported file outputs logits ``(N, num_classes, *output_spatial)`` for any batch size and any
spatial size the network accepts (``unet_seg.models.shapes.size_rule``), and carries the metadata
that ``unet_seg.models.exported`` reads back (size arithmetic, percentiles).
"""
