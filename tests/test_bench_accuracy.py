"""benchmarks/bench_accuracy.py's pieces: the merge of the parts into the table, and the
nnU-Net trainer that stops at a wall-clock budget (when ``nnunetv2``, the ``peers`` extra, is
installed)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def part(method: str, seed: int, dice: float, ap50: float, steps: int) -> dict:
    figures = {"dice": dice, "iou": dice / (2 - dice), "pixel_error": 0.1, "rand_error": 0.2,
               "vi": 1.0, "ap": ap50 / 2, "ap50": ap50}  # fmt: skip
    return {"dataset": "sample_2d", "method": method, "seed": seed, "budget": "15min",
            "steps": steps, "train_seconds": 900.0, "primary": "ap50",
            "figures": figures}  # fmt: skip


def test_the_merge_gives_mean_and_spread_over_seeds(tmp_path, capsys):
    merge = bench_module("merge_accuracy")
    (tmp_path / "a.json").write_text(json.dumps(part("ours", 0, 0.90, 0.70, 100)))
    (tmp_path / "b.json").write_text(json.dumps(part("ours", 1, 0.94, 0.80, 120)))
    (tmp_path / "c.json").write_text(json.dumps(part("monai", 0, 0.85, 0.60, 50)))
    (tmp_path / "notes.json").write_text(json.dumps({"dataset": "sample_2d"}))
    table = merge.main([str(tmp_path)])
    out, err = capsys.readouterr()
    assert "notes.json: skipped, not a part" in err
    assert [(r["method"], r["seeds"]) for r in table] == [("monai", [0]), ("ours", [0, 1])]
    ours = table[1]
    assert ours["dice"]["mean"] == pytest.approx(0.92)
    assert ours["dice"]["spread"] == pytest.approx(0.02)  # population sd of 0.90, 0.94
    assert ours["ap50"] == {"mean": pytest.approx(0.75), "spread": pytest.approx(0.05)}
    assert ours["steps"] == 110
    assert table[0]["dice"] == {"mean": 0.85, "spread": 0.0}
    lines = out.strip().splitlines()
    assert json.loads(lines[-1]) == {"rows": json.loads(json.dumps(table))}
    row = next(line for line in lines if line.startswith("| ours"))
    assert "0.9200 ± 0.0200" in row and "**0.7500 ± 0.0500**" in row  # AP@0.5 is primary
    monai = next(line for line in lines if line.startswith("| monai"))
    assert "0.8500 |" in monai and "±" not in monai  # one seed: no spread


def test_the_merge_of_no_parts_says_so(tmp_path, capsys):
    assert bench_module("merge_accuracy").main([str(tmp_path)]) == []
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"no parts in {tmp_path}" and json.loads(lines[-1]) == {"rows": []}


def test_the_budget_schedule_is_nnunets_poly_over_the_time_used():
    nb = bench_module("nnunet_budget")
    assert nb.poly_lr(0.01, 0.0) == 0.01
    assert nb.poly_lr(0.01, 0.5) == pytest.approx(0.01 * 0.5**0.9)
    assert nb.poly_lr(0.01, 1.0) == 0.0 and nb.poly_lr(0.01, 2.0) == 0.0
    used = [0.0]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    schedule = nb.BudgetPolyLR(optimizer, 0.01, lambda: used[0])
    used[0] = 0.75
    schedule.step(3)  # the epoch nnU-Net passes changes nothing: the clock decides
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.25**0.9)
    assert schedule.get_last_lr() == [optimizer.param_groups[0]["lr"]]


TINY_RUN = """
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {benchmarks!r})
import nnunet_budget as nb
from unet_seg.data import samples
from unet_seg.io import Volume, write_volume
root = Path({root!r})
for i, rng in enumerate(np.random.default_rng(0).spawn(4)):
    objects, profile = samples.nuclei((64, 64), (6.0, 9.0), 8, rng)
    image = np.round(samples.fluorescence(profile, rng, 1.0) * 255).astype(np.uint8)
    write_volume(root / "images" / f"c{{i}}.tif", Volume(image))
    write_volume(root / "labels" / f"c{{i}}.tif", Volume(samples.separated_mask(objects)))
cfg, pre = nb.prepare(root / "images", root / "labels", ["c0", "c1", "c2"], ["c3"], 990, "tiny", 2)
trainer = nb.train(pre, cfg, 3.0)
preds = nb.predict(trainer, [image], (1.0, 1.0), root / "test")
print(json.dumps({{"steps": trainer.steps, "epochs": trainer.current_epoch,
                  "seconds": trainer.train_seconds, "used": trainer.used(),
                  "final": (Path(trainer.output_folder) / "checkpoint_final.pth").is_file(),
                  "shape": list(preds[0].shape), "values": np.unique(preds[0]).tolist()}}))
"""


@pytest.mark.slow  # nnU-Net's planning, preprocessing, a 3-second training and its inference
@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None, reason="needs nnunetv2 (peers)")
def test_the_budget_trainer_stops_at_a_tiny_budget(tmp_path):
    # A process of its own: nnU-Net reads its folders from the environment when first imported.
    env = {**os.environ, "nnUNet_raw": str(tmp_path / "nn" / "raw"), "nnUNet_n_proc_DA": "1"}
    code = TINY_RUN.format(benchmarks=str(BENCHMARKS), root=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["steps"] >= 1 and result["epochs"] >= 1
    assert result["used"] == 1.0  # it ran until the clock passed the budget, and then stopped
    assert result["seconds"] >= 3.0
    assert result["final"]  # nnU-Net's own end of training ran
    assert result["shape"] == [64, 64] and set(result["values"]) <= {0, 1}
