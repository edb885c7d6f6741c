"""The plan as a Hydra experiment file: ``# @package _global_``, the config groups it selects, and
every value it sets with a comment naming the decision and its reason, so that a user can read
it, edit it and run it::

    unet-seg-train --config-dir plans experiment=<name>

(``plans/experiment/<name>.yaml``; ``--config-dir`` adds ``plans/`` to Hydra's search path.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unet_seg.io.atomic import write_text_atomic
from unet_seg.planning.plan import Plan


def _value(value: Any) -> str:
    """``value`` as a one-line YAML flow value (strings JSON-quoted, which YAML reads alike)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def _nested(plan: Plan) -> dict[str, Any]:
    """``{top key: {sub key: (value, comment)} or (value, comment)}`` from the dotted settings;
    a decision's reason is written on its first key, its name on the others."""
    tree: dict[str, Any] = {}
    for decision in plan.decisions:
        first = True
        for key, value in decision.settings.items():
            comment = f"{decision.name}: {decision.reason}" if first else decision.name
            first = False
            top, _, sub = key.partition(".")
            if sub:
                tree.setdefault(top, {})[sub] = (value, comment)
            else:
                tree[top] = (value, comment)
    return tree


def experiment_yaml(
    plan: Plan,
    name: str,
    fingerprint: str | os.PathLike | None = None,
    config_dir: str | os.PathLike = "plans",
) -> str:
    """The text of the experiment file of ``plan`` for run name ``name``."""
    tile = plan.decision("inference tile").value
    lines = [
        "# @package _global_",
        f"# Planned by unet-seg-plan for {plan.machine.describe()}, budget "
        f"{plan.budget.describe()}.",
        *([f"# Fingerprint: {fingerprint}"] if fingerprint else []),
        f"#   train:   unet-seg-train --config-dir {config_dir} experiment={name}",
        f"#   predict: unet-seg-predict checkpoint=<run>/model.ckpt tile_size={_value(tile)} ...",
        "# Every value says which fact of the data it came from; edit any of them.",
        "defaults:",
    ]
    reasons = {
        "data": plan.decision("data").reason,
        "model": plan.decision("spatial_dims").reason,
        "loss": plan.decision("loss").reason,
        "augment": plan.decision("augment").reason,
        "optimizer": "Adam, as every recipe",
        "scheduler": "anneals over the epochs"
        if plan.budget.epochs is not None
        else "anneals over the budget's seconds",
    }
    for group, option in plan.groups.items():
        lines.append(f"  - override /{group}: {option}  # {reasons.get(group, '')}".rstrip())
    lines += ["", f"name: {_value(name)}"]
    for top, entry in _nested(plan).items():
        if isinstance(entry, tuple):
            lines.append(f"{top}: {_value(entry[0])}  # {entry[1]}")
            continue
        lines.append(f"{top}:")
        lines += [
            f"  {sub}: {_value(value)}  # {comment}" for sub, (value, comment) in entry.items()
        ]
    return "\n".join(lines) + "\n"


def write_experiment(
    plan: Plan,
    config_dir: str | os.PathLike,
    name: str,
    fingerprint: str | os.PathLike | None = None,
) -> Path:
    """Write ``<config_dir>/experiment/<name>.yaml`` atomically; returns its path."""
    path = Path(config_dir) / "experiment" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, experiment_yaml(plan, name, fingerprint, config_dir))
