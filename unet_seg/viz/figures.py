"""Matplotlib figures without ``pyplot``: a grid of image panels, PNG bytes, atomic PNG files.

A grid figure is exactly ``columns * panel_px`` by ``rows * panel_px`` pixels (no tight bounding
box), so a picture's size tells how many panels it holds.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from unet_seg.io.atomic import replace_atomic

DPI = 100
PANEL_PX = 256  # one grid cell, title included


def new_figure(
    columns: int, rows: int, panel_px: int = PANEL_PX, layout: str | None = None
) -> Figure:
    """An empty figure of ``columns x rows`` cells of ``panel_px`` pixels, on an Agg canvas.

    ``layout="constrained"`` fits axes, labels and titles into that size (it never resizes it).
    """
    if columns < 1 or rows < 1:
        raise ValueError(f"a figure needs at least one panel, got {columns} x {rows}")
    size = (columns * panel_px / DPI, rows * panel_px / DPI)
    figure = Figure(figsize=size, dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def image_grid(
    panels: Sequence[Sequence[tuple[str, np.ndarray]]], panel_px: int = PANEL_PX, title: str = ""
) -> Figure:
    """Rows of ``(caption, picture)`` panels; a picture is ``(Y, X)`` grey or ``(Y, X, 3)`` RGB
    in [0, 1]. Rows may differ in length; the grid is as wide as the longest."""
    rows = len(panels)
    columns = max((len(row) for row in panels), default=0)
    figure = new_figure(columns, rows, panel_px)
    caption = 14 / panel_px  # a caption line, as a fraction of a cell
    for r, row in enumerate(panels):
        for c, (text, picture) in enumerate(row):
            box = [c / columns, 1 - (r + 1) / rows, 1 / columns, (1 - caption) / rows]
            axes = figure.add_axes(box)
            axes.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes.set_axis_off()
            figure.text((c + 0.5) / columns, 1 - r / rows - 0.2 * caption / rows, text,
                        ha="center", va="top", fontsize=8)  # fmt: skip
    if title:
        figure.text(0.005, 0.998, title, ha="left", va="top", fontsize=7, color="0.4")
    return figure


def figure_png(figure: Figure, palette: bool = False) -> bytes:
    """The figure as PNG bytes; ``palette``: in 256 colours, which takes a preview of noisy
    microscopy to a third of the bytes and looks the same (white turns a shade off-white)."""
    figure.canvas.draw()
    image = Image.fromarray(np.ascontiguousarray(np.asarray(figure.canvas.buffer_rgba())[..., :3]))
    if palette:
        image = image.quantize(256, Image.Quantize.FASTOCTREE)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def save_png(figure: Figure, path: str | os.PathLike, palette: bool = False) -> Path:
    """Write the figure to ``path`` as PNG (:func:`figure_png`), atomically."""
    data = figure_png(figure, palette)
    return replace_atomic(lambda tmp: tmp.write_bytes(data), path)
