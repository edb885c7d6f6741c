"""The evaluation report page and its thumbnails (unet_seg.viz.report, .thumbnails)."""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from unet_seg.io import read_volume
from unet_seg.viz.overlays import error_rgba
from unet_seg.viz.report import ReportBuilder, worst_first
from unet_seg.viz.thumbnails import file_thumbnails


class PageParser(HTMLParser):
    """Collects the per-file table's first cells, section headings and every embedded source."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.sections: list[str] = []
        self.sources: list[str] = []
        self._in_row = self._first = False
        self._in_section_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and self._in_table:
            self._first = True
        elif tag == "td" and self._first:
            self._in_row, self._first = True, False
            self.cells.append(attrs["data-v"])
        elif tag == "table":
            self._in_table = attrs.get("id") == "files"
        elif tag == "h3":
            self._in_section_title = True
            self.sections.append("")
        if "src" in attrs:
            self.sources.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "h3":
            self._in_section_title = False
        if tag == "table":
            self._in_table = False

    def handle_data(self, data):
        if self._in_section_title and not self.sections[-1]:
            self.sections[-1] = data.strip()

    _in_table = False


def summary_of(rows: list[dict], failed: list | None = None) -> dict:
    return {"pred_dir": "preds", "gt_dir": "truth", "files": rows, "failed": failed or [],
            "mean": {"dice_1": 0.5}, "pooled": {"dice_1": 0.6}, "evaluated": len(rows)}  # fmt: skip


def decode(data_uri: str) -> Image.Image:
    kind, data = re.match(r"data:image/(png|jpeg);base64,(.*)", data_uri).groups()
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    assert image.format == kind.upper()
    return image


def test_page_lists_every_file_worst_first_and_is_self_contained(tmp_path, rng):
    truth = np.zeros((5, 30, 40), np.uint8)
    truth[:, 5:20, 5:25] = 1
    builder = ReportBuilder(num_slices=2)
    rows = []
    for i, flips in enumerate([0.0, 0.3, 0.1]):
        pred = np.where(rng.random(truth.shape) < flips, 1 - truth, truth)
        image = rng.normal(size=(2, *truth.shape)) if i == 1 else None  # channels first
        builder.add(f"vol<{i}>", pred, truth, image)
        rows.append({"file": f"vol<{i}>", "segments": "components", "dice_1": 1 - flips,
                     "vi": math.nan})  # fmt: skip
    builder.add("flat", truth[0], truth[0], rng.normal(size=truth.shape[1:]))
    rows.append({"file": "flat", "segments": "instances", "dice_1": math.nan, "vi": 0.0})
    failed = [{"prediction": "x", "error": "ValueError: bad"}]
    path = builder.write(tmp_path / "report.html", summary_of(rows, failed), "dice_1")
    page = path.read_text()
    parser = PageParser()
    parser.feed(page)
    assert parser.cells == ["vol<0>", "vol<1>", "vol<2>", "flat"]
    assert "vol<0>" not in page  # names are escaped
    # Worst first by dice_1; a file without a value comes last.
    assert parser.sections == ["vol<1>", "vol<2>", "vol<0>", "flat"]
    assert "http://" not in page and "https://" not in page
    assert all(s.startswith("data:image/") for s in parser.sources)
    backgrounds = re.findall(r"url\((data:[^)]*)\)", page)
    assert len(backgrounds) == 3 * 2 + 1  # two slices per volume, one for the 2D file
    for uri in parser.sources + backgrounds:
        decode(uri)
    assert "ValueError: bad" in page and "&ndash;" in page  # the failure, NaN as a dash


def test_error_thumbnail_is_exact_on_the_strided_slice(rng):
    truth = (rng.random((4, 300, 260)) < 0.3).astype(np.uint8)
    pred = (rng.random((4, 300, 260)) < 0.3).astype(np.uint8)
    pred[2] = truth[2]  # the slice without errors is not shown first
    thumbs = file_thumbnails(pred, truth, None, num_slices=2, max_side=100)
    assert [t.z for t in thumbs] == sorted(t.z for t in thumbs) and 2 not in [t.z for t in thumbs]
    thumb = thumbs[0]
    assert (thumb.height, thumb.width) == (100, 87)  # stride 3
    shown = np.asarray(decode(f"data:image/png;base64,{thumb.errors}").convert("RGBA"))
    expected = error_rgba(pred[thumb.z, ::3, ::3], truth[thumb.z, ::3, ::3])
    np.testing.assert_array_equal(shown, np.round(expected * 255).astype(np.uint8))


def test_image_that_does_not_fit_is_refused(rng):
    labels = np.zeros((3, 8, 8), np.uint8)
    with pytest.raises(ValueError, match=r"image shape \(3, 8, 9\) does not fit"):
        file_thumbnails(labels, labels, np.zeros((3, 8, 9)))


def test_worst_first_when_lower_is_better():
    rows = [{"file": "a", "vi": 0.5}, {"file": "b", "vi": 2.0}, {"file": "c", "vi": math.nan}]
    assert [r["file"] for r in worst_first(rows, "vi", higher_is_better=False)] == ["b", "a", "c"]


def test_a_hundred_sample_volumes_stay_at_a_few_mb(tmp_path, samples_dir, rng):
    image = read_volume(samples_dir / "stack" / "stack.tif").array
    truth = read_volume(samples_dir / "stack" / "stack_labels.tif").array
    builder = ReportBuilder()
    rows = []
    for i in range(100):
        pred = np.roll(truth, i % 7, axis=2)
        builder.add(f"stack{i:03d}", pred, truth, image)
        rows.append({"file": f"stack{i:03d}", "segments": "components", "dice_1": 1 - i / 100})
    path = builder.write(tmp_path / "report.html", summary_of(rows), "dice_1")
    size = path.stat().st_size
    assert size < 5e6, f"{size / 1e6:.1f} MB for 100 files of {truth.shape}"
