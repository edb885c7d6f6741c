"""Pictures of results: overlays, prediction previews, training curves and the evaluation report.

Figures are drawn with matplotlib's object API on the Agg canvas (never ``pyplot``), so nothing
here touches global plotting state or needs a display. The package depends only on numpy,
matplotlib and :mod:`unet_seg.io`.
"""
