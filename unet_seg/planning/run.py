"""What ``unet-seg-plan`` does, without Hydra: fingerprint the data, plan, write the fingerprint
JSON and the experiment file. ``conf/plan.yaml`` lists the settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unet_seg.errors import UsageError
from unet_seg.planning.experiment_file import write_experiment
from unet_seg.planning.fingerprint import Fingerprint, fingerprint_data
from unet_seg.planning.intensity import CHOICES as INTENSITY_CHOICES
from unet_seg.planning.machine import detect_machine, parse_budget
from unet_seg.planning.plan import Plan, make_plan


@dataclass(frozen=True)
class Planned:
    """What a planning run made: the fingerprint, the plan and the two files written."""

    fingerprint: Fingerprint
    plan: Plan
    fingerprint_path: Path
    experiment_path: Path
    name: str


def check_data(data: Mapping[str, Any]) -> None:
    """``UsageError`` unless ``data`` names images and labels, or a nnU-Net root (not both)."""
    folder = data.get("images") is not None or data.get("labels") is not None
    if data.get("root") is not None and folder:
        raise UsageError(
            "give data.root (a nnU-Net dataset) or data.images and data.labels, not both"
        )
    if data.get("root") is None and (data.get("images") is None or data.get("labels") is None):
        raise UsageError(
            "give data.images=... and data.labels=..., or data.root=<nnU-Net DatasetXXX_Name>"
        )


def plan_and_write(cfg: Mapping[str, Any], name: str) -> Planned:
    """Run the planner on the plain settings ``cfg`` (``conf/plan.yaml``'s keys) and write
    ``<out_dir>/<name>.fingerprint.json`` and ``<out_dir>/experiment/<name>.yaml``."""
    data, machine_cfg = cfg["data"], cfg.get("machine") or {}
    check_data(data)
    budget = parse_budget(cfg.get("budget", "30min"))
    intensity = str(cfg.get("intensity", "auto"))
    if intensity not in INTENSITY_CHOICES:  # before the data are read
        raise UsageError(f"intensity={intensity!r}: choose {', '.join(INTENSITY_CHOICES)}")
    machine = detect_machine(
        machine_cfg.get("device", "auto"),
        machine_cfg.get("memory_gib"),
        machine_cfg.get("macs_per_second"),
    )
    fingerprint = fingerprint_data(
        data.get("images"),
        data.get("labels"),
        data.get("root"),
        data.get("label_map"),
        int(cfg.get("seed", 0)),
    )
    measure = None
    if machine_cfg.get("measure"):
        from unet_seg.planning.measure import step_timer

        measure = step_timer(fingerprint.channels, 3, machine.device)
    plan = make_plan(fingerprint, machine, budget, measure, intensity)
    out_dir = Path(cfg["out_dir"])
    fingerprint_path = fingerprint.write(out_dir / f"{name}.fingerprint.json")
    experiment = write_experiment(plan, out_dir, name, fingerprint_path)
    return Planned(fingerprint, plan, fingerprint_path, experiment, name)
