"""``unet-seg-train experiment=auto``: plan first, then train the plan.

Hydra chooses config groups when it composes, before any task runs, so it cannot pick an
experiment that does not exist yet. The train command therefore looks at its command line before
Hydra does: with ``experiment=auto`` it composes ``conf/plan.yaml`` with the planner's overrides
(``data.images``, ``data.labels``, ``data.root``, ``data.label_map``, ``budget``, ``machine.*``,
``intensity``, ``out_dir``, ``name``), runs the planner as ``unet-seg-plan`` does (the same
function, the same files, the same printed decisions), and hands Hydra a new command line::

    --config-dir <out_dir> <Hydra's flags> experiment=<name> <every other override>

A sweep (``-m``) plans once and sweeps the other overrides; a planner override that is itself
swept would need one plan per job and is refused in one line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from unet_seg.errors import UsageError

AUTO = "experiment=auto"
# Overrides of conf/plan.yaml; every other override goes to training.
PLAN_KEYS = ("data.images", "data.labels", "data.root", "data.label_map", "budget", "out_dir",
             "intensity")  # fmt: skip
PLAN_PREFIXES = ("machine.",)
# The planner and the training run share these (the plan is named as the run).
SHARED_KEYS = ("name",)
# Hydra flags followed by a value (``--cfg job``); ``--flag=value`` needs no special case.
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--info", "-i", "--config-name", "-cn",
               "--config-path", "-cp", "--experimental-rerun")  # fmt: skip
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")
MULTIRUN_FLAGS = ("-m", "--multirun")
SWEEP_MARKS = (",", "range(", "choice(", "glob(", "interval(")


def wants_auto(args: Sequence[str]) -> bool:
    return AUTO in args or f"+{AUTO}" in args


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def is_plan_override(arg: str) -> bool:
    key = _key(arg)
    return key in PLAN_KEYS or key.startswith(PLAN_PREFIXES)


def split_arguments(args: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``(planner overrides, Hydra's flags with their values, training overrides)`` of a train
    command line with ``experiment=auto`` (which none keeps). ``UsageError`` for a
    ``--config-dir`` of the user's (the plan's folder takes its place) and, in a sweep, for a
    swept planner override."""
    planner: list[str] = []
    flags: list[str] = []
    training: list[str] = []
    multirun = any(a in MULTIRUN_FLAGS for a in args)
    values_follow = False
    for arg in args:
        if values_follow:
            flags.append(arg)
            values_follow = False
        elif arg in (AUTO, f"+{AUTO}"):
            continue
        elif arg.split("=", 1)[0] in CONFIG_DIR_FLAGS:
            raise UsageError(
                "experiment=auto writes its plan to out_dir and reads it from there; "
                "drop --config-dir (or plan with unet-seg-plan and train with --config-dir)"
            )
        elif arg.startswith("-"):
            flags.append(arg)
            values_follow = arg in VALUE_FLAGS
        elif "=" in arg and is_plan_override(arg):
            if multirun and any(mark in arg.split("=", 1)[1] for mark in SWEEP_MARKS):
                raise UsageError(
                    f"-m experiment=auto plans once, so {_key(arg)} cannot be swept; plan each "
                    "with unet-seg-plan and sweep --config-dir plans experiment=<name>"
                )
            planner.append(arg)
        else:
            if "=" in arg and _key(arg) in SHARED_KEYS:
                planner.append(arg)
            training.append(arg)
    return planner, flags, training


def plan_overrides(planner: Sequence[str], cwd: str | os.PathLike) -> list[str]:
    """The overrides of ``conf/plan.yaml``: the user's, and ``out_dir`` (``<cwd>/plans`` as
    ``unet-seg-plan``'s default, which composing outside a Hydra run cannot resolve)."""
    if "out_dir" in {_key(a) for a in planner}:
        return list(planner)
    return [*planner, f"out_dir={Path(cwd).absolute() / 'plans'}"]


def plan_first(args: Sequence[str], name: str) -> list[str]:
    """Plan with the planner's overrides in ``args`` (printing the decisions, writing the files
    as ``unet-seg-plan``) and return the training command line that runs the plan."""
    from hydra import compose, initialize_config_dir

    from unet_seg.cli.plan import plan_and_print
    from unet_seg.config import config_dir

    planner, flags, training = split_arguments(args)
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose("plan", overrides=plan_overrides(planner, os.getcwd()))
    planned = plan_and_print(cfg, name)
    plans = planned.experiment_path.parents[1]
    print(f"{name}: training experiment={planned.name} from {plans}", flush=True)
    # Flags first: Hydra's parser takes the overrides as one run of positional arguments.
    return ["--config-dir", str(plans), *flags, f"experiment={planned.name}", *training]
