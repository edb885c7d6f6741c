"""``curves.png``: a training run's loss and validation figures per epoch, from Lightning's CSV log.

Lightning's ``CSVLogger`` writes ``metrics.csv`` with one row per logging call: columns ``epoch``,
``step`` and one per logged name, mostly empty. Per-step columns (``*_step``) are left out; of the
rest, each epoch's last value is plotted. All losses share the first panel; every other figure
(``val/dice``, ``val/vi``, a learning rate, ...) gets its own.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from unet_seg.viz.figures import new_figure, save_png

COLUMNS = 3  # panels per row
_PANEL_PX = 300


def read_epoch_metrics(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(epoch, value), ...]}`` from a Lightning ``metrics.csv``, the last value per
    epoch of each column, epochs ascending; ``*_epoch`` names lose that ending. Rows without an
    epoch (Lightning's learning-rate monitor writes only the step) count to the next epoch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV log")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "epoch" not in reader.fieldnames:
            raise ValueError(f"{path}: not a Lightning CSV log (no 'epoch' column)")
        series: dict[str, dict[int, float]] = {}
        pending: list[dict[str, str]] = []
        for row in reader:
            if not row.get("epoch"):
                pending.append(row)  # e.g. a learning rate logged at the start of an epoch
                continue
            epoch = int(float(row["epoch"]))
            for logged in (*pending, row):
                for name, text in logged.items():
                    if name in ("epoch", "step") or not text or name.endswith("_step"):
                        continue
                    series.setdefault(name.removesuffix("_epoch"), {})[epoch] = float(text)
            pending = []
    return {name: sorted(values.items()) for name, values in series.items()}


def panel_names(metrics: dict[str, list]) -> list[list[str]]:
    """The figure's panels: all losses together, then one per validation figure, then the rest."""
    losses = sorted(
        (n for n in metrics if "loss" in n), key=lambda n: (not n.startswith("train"), n)
    )
    others = sorted(
        (n for n in metrics if "loss" not in n), key=lambda n: (not n.startswith("val/"), n)
    )
    return ([losses] if losses else []) + [[n] for n in others]


def curves_figure(metrics: dict[str, list[tuple[int, float]]], title: str = ""):
    """A grid of line plots, ``COLUMNS`` panels wide, one panel per entry of :func:`panel_names`."""
    panels = panel_names(metrics)
    if not panels:
        raise ValueError("no per-epoch figures to plot")
    columns = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = new_figure(columns, rows, _PANEL_PX, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes in grid[len(panels) :]:
        axes.remove()
    for axes, names in zip(grid, panels, strict=False):
        for name in names:
            epochs, values = zip(*metrics[name], strict=True)
            axes.plot(
                epochs, values, marker="o" if len(epochs) < 30 else None, markersize=3, label=name
            )
        axes.set_title(" / ".join(names) if len(names) == 1 else "loss", fontsize=9)
        axes.set_xlabel("epoch", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if len(names) > 1:
            axes.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9, color="0.3")
    return figure


def write_curves(csv_path: str | os.PathLike, out_path: str | os.PathLike, title: str = "") -> Path:
    """Plot the per-epoch figures of ``csv_path`` into the PNG ``out_path`` (atomically)."""
    metrics = read_epoch_metrics(csv_path)
    if not any("loss" in n or n.startswith("val/") for n in metrics):
        raise ValueError(f"{csv_path}: no per-epoch losses or validation figures logged")
    return save_png(curves_figure(metrics, title), out_path)
