"""Training curves from Lightning's CSV log (unet_seg.viz.curves)."""

from __future__ import annotations

import pytest
from PIL import Image

from unet_seg.viz.curves import COLUMNS, panel_names, read_epoch_metrics, write_curves

# As Lightning's CSVLogger writes it: sparse rows, the learning rate without an epoch, per-step
# losses, and two validation figures.
LOG = """\
epoch,lr-Adam,step,train/loss_epoch,train/loss_step,val/dice,val/loss,val/vi
,0.003,0,,,,,
0,,0,,1.5,,,
0,,1,,,0.5,1.1,2.0
0,,1,1.25,,,,
,0.002,2,,,,,
1,,3,,,0.75,0.9,1.5
1,,3,0.5,,,,
"""


def test_reads_the_last_value_per_epoch(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(LOG)
    metrics = read_epoch_metrics(path)
    assert metrics == {
        "lr-Adam": [(0, 0.003), (1, 0.002)],  # counted to the epoch that follows
        "val/dice": [(0, 0.5), (1, 0.75)],
        "val/loss": [(0, 1.1), (1, 0.9)],
        "val/vi": [(0, 2.0), (1, 1.5)],
        "train/loss": [(0, 1.25), (1, 0.5)],  # per-step values left out
    }
    assert panel_names(metrics) == [
        ["train/loss", "val/loss"], ["val/dice"], ["val/vi"], ["lr-Adam"]
    ]  # fmt: skip


def test_curves_png_has_one_panel_per_figure(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(LOG)
    out = write_curves(path, tmp_path / "run" / "curves.png", title="sample")
    with Image.open(out) as png:
        # 4 panels, COLUMNS to a row of 300 pixels each: 3 x 2 cells.
        assert png.format == "PNG" and png.size == (COLUMNS * 300, 2 * 300)
    one = tmp_path / "one.csv"
    one.write_text("epoch,step,val/loss\n0,1,0.5\n")
    with Image.open(write_curves(one, tmp_path / "one.png")) as png:
        assert png.size == (300, 300)


def test_bad_logs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none\.csv"):
        read_epoch_metrics(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*no 'epoch' column"):
        read_epoch_metrics(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step,lr-Adam\n,0,0.1\n")
    with pytest.raises(ValueError, match=r"empty\.csv: no per-epoch"):
        write_curves(empty, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
