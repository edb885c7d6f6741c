"""``report.html``: one self-contained page of an evaluation that any browser opens offline.

The page holds the overall figures, a table of every file that sorts by any column when its
header is clicked (or on load by ``report.html#sort=<column>``, ``#sort=-<column>`` descending),
a histogram per metric, and per file, worst first, thumbnails of image, truth and errors on a few
slices. Every picture is embedded (base64 PNG, JPEG for grey images); nothing is fetched. When
its script has run, the page marks ``<html data-report-ready="<rows>">`` for the browser test.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unet_seg.io.atomic import write_text_atomic
from unet_seg.viz.figures import figure_png, new_figure
from unet_seg.viz.overlays import ERROR_COLOURS, class_rgba
from unet_seg.viz.slice_thumbnails import LabelReader, chosen_thumbnails
from unet_seg.viz.thumbnails import SliceThumbnail, file_thumbnails

_HIST_COLUMNS = 4
_HIST_PX = 220  # one histogram's cell
_DISPLAY_PX = 128  # small thumbnails are enlarged (pixelated) to about this size

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1280px;padding:0 1em;
color:#222}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1em;margin:.2em 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}
#files th{cursor:pointer;user-select:none;background:#f6f6f6;position:sticky;top:0}
#files th[data-order=asc]::after{content:" \\25B2"}
#files th[data-order=desc]::after{content:" \\25BC"}
.meta{color:#666}.failed{color:#a00}
.legend span{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;vertical-align:-.15em}
.file{margin:1em 0;padding-top:.4em;border-top:1px solid #eee}
.slices{display:flex;flex-wrap:wrap;gap:1.2em}
.slice{margin:0}.slice figcaption{color:#666;font-size:12px}
.row{display:flex;gap:4px}
.p{position:relative;background-size:100% 100%;image-rendering:pixelated;background-color:#000}
.p img{position:absolute;inset:0;width:100%;height:100%;image-rendering:pixelated}
.cap{display:flex;gap:4px;font-size:11px;color:#666}.cap span{text-align:center}
"""

_SCRIPT = """
(function () {
  var table = document.getElementById("files");
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function sortBy(col, ascending) {
    var numeric = heads[col].dataset.type !== "text";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      if (!numeric) { return ascending ? x.localeCompare(y) : y.localeCompare(x); }
      var fx = x === "" ? NaN : Number(x), fy = y === "" ? NaN : Number(y);
      if (isNaN(fx) || isNaN(fy)) { return isNaN(fx) - isNaN(fy); }  // no value: always last
      return ascending ? fx - fy : fy - fx;
    });
    heads.forEach(function (h) { delete h.dataset.order; });
    heads[col].dataset.order = ascending ? "asc" : "desc";
    rows.forEach(function (r) { body.appendChild(r); });
  }
  heads.forEach(function (th, col) {
    th.addEventListener("click", function () { sortBy(col, th.dataset.order !== "asc"); });
  });
  var wanted = /^#sort=(-?)(.+)$/.exec(decodeURIComponent(location.hash));
  if (wanted) {
    var col = heads.findIndex(function (h) { return h.dataset.key === wanted[2]; });
    if (col >= 0) { sortBy(col, wanted[1] !== "-"); }
  }
  document.documentElement.dataset.reportReady = String(body.rows.length);
})();
"""


def _number(value: Any) -> tuple[str, str]:
    """``(data value, shown text)`` of a table cell; NaN/None shows a dash and sorts last."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", "&ndash;"
    if isinstance(value, float):
        return repr(value), f"{value:.4f}"
    return html.escape(str(value)), html.escape(str(value))


def worst_first(
    rows: Sequence[Mapping[str, Any]], metric: str, higher_is_better: bool = True
) -> list[Mapping[str, Any]]:
    """``rows`` ordered worst first by ``metric``; rows without a value come last."""

    def key(row: Mapping[str, Any]) -> tuple[bool, float, str]:
        value = row.get(metric)
        missing = value is None or math.isnan(value)
        score = 0.0 if missing else (value if higher_is_better else -value)
        return missing, score, str(row["file"])

    return sorted(rows, key=key)


def histograms_png(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """Base64 PNG of one histogram per metric (its finite values over the files)."""
    columns = min(_HIST_COLUMNS, len(metrics))
    lines = math.ceil(len(metrics) / columns)
    figure = new_figure(columns, lines, _HIST_PX)
    # A fixed grid with room for the titles and tick labels: the constrained-layout solver
    # measured every tick label, about 0.4-0.6 s per report, as much as the drawing itself.
    height = lines * _HIST_PX
    grid = figure.subplots(
        lines, columns, squeeze=False,
        gridspec_kw={"left": 36 / (columns * _HIST_PX), "right": 1 - 8 / (columns * _HIST_PX),
                     "bottom": 20 / height, "top": 1 - 22 / height, "wspace": 0.25,
                     "hspace": 54 / (_HIST_PX - 54)},
    ).ravel()  # fmt: skip
    for axes in grid[len(metrics) :]:
        axes.remove()
    for axes, metric in zip(grid, metrics, strict=False):
        values = np.array([r[metric] for r in rows if r.get(metric) is not None], float)
        values = values[np.isfinite(values)]
        if values.size:
            axes.hist(values, bins=min(20, max(5, values.size // 3)), color="#4477aa")
        axes.set_title(f"{metric} (n={values.size})", fontsize=9)
        axes.tick_params(labelsize=7)
    return base64.b64encode(figure_png(figure)).decode("ascii")


def _legend(num_classes: int) -> str:
    chips = list(ERROR_COLOURS.items())
    for k in range(1, num_classes):
        chips.append((f"truth class {k}", tuple(class_rgba(np.array([[k]]))[0, 0, :3])))
    return "".join(
        f'<span style="background:rgb({round(r * 255)},{round(g * 255)},{round(b * 255)})">'
        f"</span>{name}"
        for name, (r, g, b) in chips
    )


def _overall(summary: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    mean, pooled = summary.get("mean", {}), summary.get("pooled", {})
    out = ["<h2>Overall</h2><table><tr><th>figure</th><th>mean over files</th>"
           "<th>pooled over voxels</th></tr>"]  # fmt: skip
    for m in metrics:
        both = _number(mean.get(m))[1], _number(pooled[m])[1] if m in pooled else ""
        out.append(f"<tr><td>{html.escape(m)}</td><td>{both[0]}</td><td>{both[1]}</td></tr>")
    out.append("</table>")
    if summary.get("failed"):
        out.append('<h2>Failed</h2><ul class="failed">')
        for failure in summary["failed"]:
            name = failure.get("prediction") or failure.get("ground_truth")
            text = f"{name}: {failure.get('error')}"
            out.append(f"<li>{html.escape(text)}</li>")
        out.append("</ul>")
    return out


def _table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], anchor: dict) -> list[str]:
    out = ['<h2>Per file</h2><p class="meta">Click a column to sort.</p><table id="files">',
           '<thead><tr><th data-key="file" data-type="text">file</th>',
           '<th data-key="segments" data-type="text">segments</th>']  # fmt: skip
    out += [f'<th data-key="{html.escape(m)}">{html.escape(m)}</th>' for m in metrics]
    out.append("</tr></thead><tbody>")
    for row in rows:
        name, segments = html.escape(str(row["file"])), html.escape(str(row.get("segments", "")))
        cells = [f'<td data-v="{name}"><a href="#f{anchor[str(row["file"])]}">{name}</a></td>',
                 f'<td data-v="{segments}">{segments}</td>']  # fmt: skip
        cells += ['<td data-v="{}">{}</td>'.format(*_number(row.get(m))) for m in metrics]
        out.append(f"<tr>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return out


def _file_section(
    index: int, row: Mapping[str, Any], thumbs: Sequence[SliceThumbnail], metric: str,
    styles: list[str],
) -> str:  # fmt: skip
    name, value = html.escape(str(row["file"])), _number(row.get(metric))[1]
    parts = [f'<section class="file" id="f{index}"><h3>{name} <span class="meta">'
             f"{html.escape(metric)} {value}</span></h3><div class=\"slices\">"]  # fmt: skip
    for s, thumb in enumerate(thumbs):
        scale = max(1, _DISPLAY_PX // max(thumb.height, thumb.width))
        box = f"width:{thumb.width * scale}px;height:{thumb.height * scale}px"
        css = f"g{index}-{s}"
        # The grey image is embedded once and shown under both overlays as a background.
        styles.append(f".{css}{{background-image:url(data:image/jpeg;base64,{thumb.gray})}}")
        panels = [f'<div class="p {css}" style="{box}"></div>']
        for alt, data in (("truth", thumb.truth), ("errors", thumb.errors)):
            image = f'<img alt="{alt}" src="data:image/png;base64,{data}">'
            panels.append(f'<div class="p {css}" style="{box}">{image}</div>')
        where = "" if thumb.z is None else f"z {thumb.z}: "
        parts.append(
            f'<figure class="slice"><div class="row">{"".join(panels)}</div><figcaption>'
            f"{where}image &middot; truth &middot; prediction against truth</figcaption></figure>"
        )
    if not thumbs:
        parts.append('<p class="meta">no pictures</p>')
    parts.append("</div></section>")
    return "".join(parts)


def render_html(
    summary: Mapping[str, Any],
    thumbnails: Mapping[str, Sequence[SliceThumbnail]],
    sort_metric: str,
    higher_is_better: bool = True,
    num_classes: int = 2,
) -> str:
    """The page for an evaluation ``summary`` (what ``evaluate(cfg)`` returns) with
    ``thumbnails`` per file key; the files' pictures come worst first by ``sort_metric``."""
    rows = list(summary.get("files", []))
    metrics = [k for k in (rows[0] if rows else {}) if k not in ("file", "segments")]
    source = f"predictions {summary.get('pred_dir', '')} against {summary.get('gt_dir', '')}"
    counts = f"{len(rows)} files evaluated, {len(summary.get('failed', []))} failed"
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>unet-seg evaluation</title><style>{_STYLE}</style><style>STYLES</style></head>",
        f'<body><h1>Evaluation</h1><p class="meta">{html.escape(source)}: {counts}</p>',
    ]
    out += _overall(summary, metrics)
    if rows and metrics:
        data = histograms_png(rows, metrics)
        out.append(
            f'<h2>Distributions</h2><img alt="histograms" src="data:image/png;base64,{data}">'
        )
    order = worst_first(rows, sort_metric, higher_is_better)
    out += _table(rows, metrics, {str(r["file"]): i for i, r in enumerate(order)})
    out.append(f"<h2>Files, worst first by {html.escape(sort_metric)}</h2>")
    out.append(f'<p class="legend">{_legend(num_classes)}</p>')
    styles: list[str] = []
    for i, row in enumerate(order):
        out.append(_file_section(i, row, thumbnails.get(str(row["file"]), []), sort_metric, styles))
    out.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "\n".join(out).replace("<style>STYLES</style>", f"<style>{''.join(styles)}</style>", 1)


class ReportBuilder:
    """Collects each file's thumbnails as the evaluation goes (so no volume is kept), then
    writes the page with the evaluation's summary.

    Args:
        num_slices: slices shown per file (a 2D file has one).
        max_side: longest thumbnail side in pixels; larger slices are strided.
    """

    def __init__(self, num_slices: int = 3, max_side: int = 128) -> None:
        self.num_slices, self.max_side = num_slices, max_side
        self.thumbnails: dict[str, list[SliceThumbnail]] = {}

    def add(self, key: str, pred: np.ndarray, truth: np.ndarray, image: Any = None) -> None:
        """Thumbnails of one file: ``pred``/``truth`` ``(Y, X)`` or ``(Z, Y, X)``, ``image`` of
        the same spatial shape (channels first allowed; a lazy volume reads only the slices)."""
        self.thumbnails[key] = file_thumbnails(pred, truth, image, self.num_slices, self.max_side)

    def add_slices(
        self,
        key: str,
        shape: Sequence[int],
        foreground: Sequence[int],
        errors: Sequence[int],
        read_labels: LabelReader,
        image: Any = None,
    ) -> None:
        """Thumbnails of one file too big to hold: labels of spatial ``shape``, the truth's
        ``foreground`` and the wrong voxels per slice, ``read_labels(z, step)`` the strided
        class maps of a slice (:func:`~unet_seg.viz.slice_thumbnails.chosen_thumbnails`);
        only the slices shown are read."""
        self.thumbnails[key] = chosen_thumbnails(
            shape, foreground, errors, read_labels, image, self.num_slices, self.max_side
        )

    def write(
        self,
        path: str | os.PathLike,
        summary: Mapping[str, Any],
        sort_metric: str,
        higher_is_better: bool = True,
        num_classes: int = 2,
    ) -> Path:
        """Write ``report.html`` to ``path`` atomically."""
        page = render_html(summary, self.thumbnails, sort_metric, higher_is_better, num_classes)
        return write_text_atomic(path, page)
