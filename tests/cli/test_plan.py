"""``unet-seg-plan``: the summary and the two files for good data, one line and the exit code of
the other commands for bad data or a bad command line."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.planning.conftest import object_grid, write_dataset
from unet_seg.cli import plan as plan_cli
from unet_seg.cli.exit_codes import EXIT_FAILED, EXIT_USAGE
from unet_seg.io import Volume, write_volume


def run_console(
    cli: ModuleType, script: str, args: list[str], monkeypatch, capsys
) -> tuple[int, str, list[str]]:
    """Exit code, stdout and the stderr lines of the console script ``script args`` (whose
    entry point is ``cli.main``) run in this process; 0 where it returns."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err.splitlines()


def run_plan(args: list[str], monkeypatch, capsys) -> tuple[int, str, list[str]]:
    return run_console(plan_cli, "unet-seg-plan", args, monkeypatch, capsys)


@pytest.fixture
def cells(tmp_path: Path) -> tuple[Path, Path]:
    return write_dataset(tmp_path / "cells", [object_grid((64, 96), (10, 12), 0)] * 3, (0.5, 0.5))


def test_a_plan_prints_each_decision_and_writes_its_files(cells, tmp_path, monkeypatch, capsys):
    images, labels = cells
    args = [f"data.images={images}", f"data.labels={labels}", f"out_dir={tmp_path / 'plans'}",
            "budget=30min", "machine.device=cpu", "machine.memory_gib=4"]  # fmt: skip
    code, out, err = run_plan(args, monkeypatch, capsys)
    assert code == 0, err
    assert "target          boundary -- 100% of 126 objects touch another" in out
    assert (tmp_path / "plans" / "cells.fingerprint.json").is_file()
    assert (tmp_path / "plans" / "experiment" / "cells.yaml").is_file()
    assert f"unet-seg-train --config-dir {tmp_path / 'plans'} experiment=cells" in out


def test_bad_data_is_one_line_naming_the_file(cells, tmp_path, monkeypatch, capsys):
    images, labels = cells
    write_volume(images / "case_2.tif", Volume(np.zeros((64, 95), np.uint16)))
    args = [f"data.images={images}", f"data.labels={labels}", f"out_dir={tmp_path / 'plans'}"]
    code, out, err = run_plan(args, monkeypatch, capsys)
    assert code == EXIT_FAILED and out == ""
    assert err == [f"unet-seg-plan: {images / 'case_2.tif'}: image shape (64, 95) does not match "
                   f"its label {labels / 'case_2.tif'} (64, 96)"]  # fmt: skip
    assert not (tmp_path / "plans").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give data.images=... and data.labels=..., or data.root="),
        (["data.images=/x", "data.labels=/y", "data.root=/z"], "not both"),
        (["data.images=/nonexistent/images", "data.labels=/y"], "/nonexistent/images: no image"),
        pytest.param(
            ["data.root=/nonexistent/Dataset001_X"],
            "dataset.json not found",
            marks=pytest.mark.slow,
        ),  # reading a nnU-Net dataset loads Lightning
        (["data.images=/x", "data.labels=/y", "budget=soon"], "budget='soon': give a time"),
        (["data.images=/x", "data.labels=/y", "machine.device=tpu"], "machine.device='tpu'"),
    ],
)
def test_a_bad_command_line_is_one_line(args, message, tmp_path, monkeypatch, capsys):
    code, _, err = run_plan([*args, f"out_dir={tmp_path}"], monkeypatch, capsys)
    assert code in (EXIT_USAGE, EXIT_FAILED) and len(err) == 1
    assert err[0].startswith("unet-seg-plan: ") and message in err[0]
