"""Training one fold of a cross-validation, and the summary of all folds.

With ``cv.folds=K cv.fold=k`` (``conf/train.yaml``) the data module validates on fold k
(:mod:`unet_seg.data.folds`); the run writes its split to ``folds.json`` in its run directory,
publishes its best checkpoint to ``<name>/fold_<k>/model.ckpt`` (the model folder that
``unet-seg-predict checkpoint=<name>`` ensembles) with that fold's ``metrics.json`` beside it,
and refreshes ``<name>/folds.json``: the mean and spread of every fold's best validation
figures. ``python -m unet_seg.training.folds runs/<name>`` prints that table again.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unet_seg.data.folds import FoldSpec, fold_record
from unet_seg.data.pairs import pair_files
from unet_seg.io.atomic import write_json_atomic

log = logging.getLogger(__name__)
SUMMARY_NAME = "folds.json"  # the split, in a run dir; the summary, in a model folder


def fold_spec(cfg: Mapping[str, Any]) -> FoldSpec | None:
    """The checked ``cv`` settings of a training config, or None when folds are off."""
    cv = cfg.get("cv")
    if not cv or cv.get("folds") is None:
        return None
    return FoldSpec.from_config(cv)


def fold_target(target: str | Path, spec: FoldSpec) -> Path:
    """Where fold ``spec.fold`` publishes: ``<dir>/fold_<k>/<file>`` for ``publish_checkpoint``
    ``<dir>/<file>``, so the folds of one experiment fill one model folder."""
    target = Path(target)
    return target.parent / f"fold_{spec.fold}" / target.name


def write_split(data: Any, spec: FoldSpec, output_dir: Path) -> Path:
    """``folds.json`` in the run directory: which cases fold ``spec.fold`` trains, validates
    and keeps out (``data``: the :class:`~unet_seg.data.training_data.TrainingData`)."""
    pairs = pair_files(data.cfg["images"], data.cfg["labels"])
    return write_json_atomic(output_dir / SUMMARY_NAME, fold_record(pairs, spec))


def _spread(values: list[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize_folds(folder: str | Path) -> dict[str, Any]:
    """``<folder>/folds.json`` from every ``fold_*/metrics.json`` below ``folder``: per fold its
    figures, and per figure the ``mean``, ``std`` (sample) and ``n`` over the folds that report
    it; returns the summary.

    Raises:
        FileNotFoundError: no ``fold_*/metrics.json`` in ``folder``.
    """
    folder = Path(folder)
    found = sorted(folder.glob("fold_*/metrics.json"), key=lambda p: _fold_number(p.parent))
    if not found:
        raise FileNotFoundError(f"{folder}: no fold_*/metrics.json (train with cv.folds=K)")
    folds: dict[str, dict[str, float]] = {}
    for path in found:
        try:
            metrics = json.loads(path.read_text()).get("metrics") or {}
        except (OSError, ValueError) as err:
            log.warning("%s: unreadable, left out of the summary (%s)", path, err)
            continue
        folds[path.parent.name] = {k: float(v) for k, v in metrics.items()}
    names = sorted({k for m in folds.values() for k in m if not k.startswith("train/")})
    figures = {}
    for name in names:
        values = [m[name] for m in folds.values() if name in m and math.isfinite(m[name])]
        if values:
            figures[name] = {"mean": sum(values) / len(values), "std": _spread(values),
                             "n": len(values)}  # fmt: skip
    summary = {"folds": folds, "summary": figures}
    write_json_atomic(folder / SUMMARY_NAME, summary)
    return summary


def _fold_number(path: Path) -> tuple[int, str]:
    suffix = path.name.removeprefix("fold_")
    return (int(suffix), "") if suffix.isdigit() else (sys.maxsize, suffix)


def format_table(summary: Mapping[str, Any]) -> str:
    """The summary as a text table: one row per figure, one column per fold, mean and std."""
    folds = list(summary["folds"])
    rows = [["figure", *folds, "mean", "std"]]
    for name, stats in summary["summary"].items():
        values = [summary["folds"][f].get(name) for f in folds]
        shown = ["-" if v is None else f"{v:.4f}" for v in values]
        rows.append([name, *shown, f"{stats['mean']:.4f}", f"{stats['std']:.4f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m unet_seg.training.folds <model folder>``: refresh and print the summary."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m unet_seg.training.folds <folder of fold_*/>", file=sys.stderr)
        return 2
    try:
        summary = summarize_folds(args[0])
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
