"""``unet-seg-train experiment=auto``: plans with the planner's overrides, writes the plan as
``unet-seg-plan`` does, and composes the training of it with the user's other overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cli.test_plan import run_console
from tests.planning.conftest import object_grid, write_dataset
from unet_seg.cli import train as train_cli
from unet_seg.cli.auto_plan import plan_overrides, split_arguments
from unet_seg.cli.exit_codes import EXIT_FAILED, EXIT_USAGE
from unet_seg.errors import UsageError


def run_train(args: list[str], monkeypatch, capsys) -> tuple[int, str, list[str]]:
    return run_console(train_cli, "unet-seg-train", args, monkeypatch, capsys)


@pytest.fixture
def cells(tmp_path: Path) -> list[str]:
    images, labels = write_dataset(
        tmp_path / "cells", [object_grid((64, 96), (10, 12), 0)] * 3, (0.5, 0.5)
    )
    plans = tmp_path / "plans"
    return [f"data.images={images}", f"data.labels={labels}", "budget=10min",
            "machine.device=cpu", "machine.memory_gib=2", f"out_dir={plans}"]  # fmt: skip


def test_the_command_line_is_split_between_planner_and_training():
    args = ["-m", "experiment=auto", "data.images=/i", "data.labels=/l", "budget=1h",
            "machine.memory_gib=3", "name=cells", "loss=ce,dice_ce", "--cfg", "job",
            "data.batch_size=4"]  # fmt: skip
    planner, flags, training = split_arguments(args)
    assert planner == ["data.images=/i", "data.labels=/l", "budget=1h", "machine.memory_gib=3",
                       "name=cells"]  # fmt: skip
    assert flags == ["-m", "--cfg", "job"]
    assert training == ["name=cells", "loss=ce,dice_ce", "data.batch_size=4"]
    assert plan_overrides(planner, "/work")[-1] == "out_dir=/work/plans"
    assert plan_overrides(["out_dir=/p"], "/work") == ["out_dir=/p"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "experiment=auto", "budget=10min,1h"], "budget cannot be swept"),
        (["experiment=auto", "--config-dir", "/p"], "drop --config-dir"),
    ],
)
def test_what_auto_cannot_do_is_refused(args, message):
    with pytest.raises(UsageError, match=message):
        split_arguments(args)


def test_auto_plans_then_composes_the_plan(cells, tmp_path, monkeypatch, capsys):
    args = ["experiment=auto", *cells, "data.batch_size=3", "--cfg", "job"]
    code, out, err = run_train(args, monkeypatch, capsys)
    assert code == 0, err
    assert "target          boundary -- 100% of 126 objects touch another" in out
    experiment = tmp_path / "plans" / "experiment" / "cells.yaml"
    assert experiment.is_file() and (tmp_path / "plans" / "cells.fingerprint.json").is_file()
    assert f"unet-seg-train: training experiment=cells from {tmp_path / 'plans'}" in out
    composed = yaml.safe_load(out[out.index("\nname: ") + 1 :])  # --cfg job's config
    planned = yaml.safe_load(experiment.read_text())
    assert composed["name"] == "cells" and composed["data"]["target"] == "boundary"
    assert composed["data"]["patch_size"] == planned["data"]["patch_size"]
    assert composed["model"]["features"] == planned["model"]["features"]
    assert composed["data"]["batch_size"] == 3  # the user's override wins over the plan's


def test_bad_data_is_the_planners_one_line(cells, tmp_path, monkeypatch, capsys):
    args = ["experiment=auto", *cells, f"data.labels={tmp_path / 'nowhere'}"]
    code, _, err = run_train(args, monkeypatch, capsys)
    assert code in (EXIT_USAGE, EXIT_FAILED) and len(err) == 1, err
    assert err[0].startswith(f"unet-seg-train: {tmp_path / 'nowhere'}")
    assert not (tmp_path / "plans").exists()


@pytest.mark.slow  # plans, then Lightning trains one step: several seconds
def test_auto_trains_the_plan(cells, tmp_path, monkeypatch, capsys):
    args = ["experiment=auto", *cells, "debug=fast_dev_run", f"paths.runs_dir={tmp_path / 'r'}",
            "trainer.enable_progress_bar=false", "data.num_workers=0"]  # fmt: skip
    code, _, err = run_train(args, monkeypatch, capsys)
    assert code == 0, err
    assert len(list((tmp_path / "r" / "cells").glob("*/metrics.json"))) == 1
    (resolved,) = (tmp_path / "r" / "cells").glob("*/config_resolved.yaml")
    assert yaml.safe_load(resolved.read_text())["data"]["target"] == "boundary"
