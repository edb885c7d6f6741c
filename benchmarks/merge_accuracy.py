"""The table of ``bench_accuracy.py``'s parts: one row per dataset, budget and method, each
figure the mean over its seeds and the spread (population standard deviation, as
``bench_plan_accuracy.py``) where there are several; markdown on stdout, then one JSON line.

    python benchmarks/merge_accuracy.py [PARTS_DIR]     # default benchmarks/accuracy/

Works with whatever parts exist; a file that is not a part is named and skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

FIGURES = ("dice", "iou", "pixel_error", "rand_error", "vi", "ap", "ap50")
HEADERS = {"dice": "Dice", "iou": "IoU", "pixel_error": "pixel err", "rand_error": "Rand err",
           "vi": "VI", "ap": "mean AP", "ap50": "AP@0.5"}  # fmt: skip
KEYS = ("dataset", "method", "seed", "budget", "steps", "figures")


def read_parts(folder: Path) -> list[dict]:
    """Every part (``*.json`` with the keys of :data:`KEYS`) in ``folder``, sorted by name."""
    parts = []
    for path in sorted(folder.glob("*.json")):
        try:
            part = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"{path}: skipped, not JSON ({err})", file=sys.stderr)
            continue
        if not isinstance(part, dict) or not all(k in part for k in KEYS):
            print(f"{path}: skipped, not a part (needs {', '.join(KEYS)})", file=sys.stderr)
            continue
        parts.append(part)
    return parts


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def rows(parts: Iterable[dict]) -> list[dict]:
    """One row per (dataset, budget, method): seeds, mean steps and training seconds, and
    ``{figure: {"mean", "spread"}}`` over the seeds."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for part in parts:
        groups.setdefault((part["dataset"], part["budget"], part["method"]), []).append(part)
    out = []
    for (dataset, budget, method), group in sorted(groups.items()):
        row = {"dataset": dataset, "budget": budget, "method": method,
               "seeds": sorted(p["seed"] for p in group),
               "primary": group[0].get("primary"),
               "steps": statistics.fmean(p["steps"] for p in group),
               "train_seconds": statistics.fmean(p.get("train_seconds", float("nan"))
                                                 for p in group)}  # fmt: skip
        for figure in FIGURES:
            values = [p["figures"][figure] for p in group if figure in p["figures"]]
            if values:
                mean, spread = mean_spread(values)
                row[figure] = {"mean": mean, "spread": spread}
        out.append(row)
    return out


def cell(value: dict | None, seeds: int) -> str:
    if value is None:
        return "-"
    return f"{value['mean']:.4f}" + (f" ± {value['spread']:.4f}" if seeds > 1 else "")


def markdown(table: list[dict]) -> str:
    """The rows as one markdown table per dataset and budget; the primary figure in bold."""
    lines: list[str] = []
    for key in dict.fromkeys((r["dataset"], r["budget"]) for r in table):
        lines += [f"### {key[0]}, {key[1]} of training", ""]
        lines.append("| method | seeds | steps | train s | " + " | ".join(HEADERS.values()) + " |")
        lines.append("| --- " * (4 + len(HEADERS)) + "|")
        for r in (r for r in table if (r["dataset"], r["budget"]) == key):
            n = len(r["seeds"])
            cells = []
            for f in FIGURES:
                text = cell(r.get(f), n)
                cells.append(f"**{text}**" if f == r["primary"] and text != "-" else text)
            seeds = ",".join(str(s) for s in r["seeds"])
            lines.append(f"| {r['method']} | {seeds} | {r['steps']:.0f} | "
                         f"{r['train_seconds']:.0f} | " + " | ".join(cells) + " |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent / "accuracy"
    parser.add_argument("folder", nargs="?", type=Path, default=default)
    args = parser.parse_args(argv)
    table = rows(read_parts(args.folder))
    if table:
        print(markdown(table))
    else:
        print(f"no parts in {args.folder}")
    print(json.dumps({"rows": table}))
    return table


if __name__ == "__main__":
    main()
