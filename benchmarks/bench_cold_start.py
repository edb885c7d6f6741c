"""Cold start of ``unet-seg-predict --help`` beside the bare ``python -c "import hydra"``.

Each command runs in a fresh interpreter, alternating, ``--repeats`` times; the median wall
times and their ratio are printed (the goal: within 1.5x of the bare Hydra import). For
reference, the same help rendered by Hydra itself (``hydra.main`` with ``--help``, which composes
the config and lists every config group's options) is timed too.

Run: ``python benchmarks/bench_cold_start.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HYDRA_RENDERED = (
    "import sys; sys.argv = ['unet-seg-predict', '--help']\n"
    "import hydra\n"
    "from unet_seg.cli.predict import run\n"
    "from unet_seg.config import config_dir\n"
    "hydra.main(version_base='1.3', config_path=config_dir(), config_name='predict')(run)()\n"
)


def predict_help_command() -> list[str]:
    """The installed console script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("unet-seg-predict")
    if script.is_file():
        return [str(script), "--help"]
    return [sys.executable, "-m", "unet_seg.cli.predict", "--help"]


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    commands = {
        "unet-seg-predict --help": predict_help_command(),
        'python -c "import hydra"': [sys.executable, "-c", "import hydra"],
        "Hydra-rendered --help": [sys.executable, "-c", HYDRA_RENDERED],
    }
    for command in commands.values():  # warm the file cache and the byte-code
        wall_time(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # alternating, so that load on a shared machine hits all alike
        for name, command in commands.items():
            times[name].append(wall_time(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"cold start, median of {args.repeats} fresh interpreters ({sys.executable}):")
    for name, median in medians.items():
        print(f"  {name:<28s} {median * 1000:7.0f} ms")
    ours, hydra = medians["unet-seg-predict --help"], medians['python -c "import hydra"']
    print(f"ratio unet-seg-predict --help / import hydra: {ours / hydra:.2f}x (goal <= 1.5x)")
    print(f"Hydra's own --help / ours: {medians['Hydra-rendered --help'] / ours:.1f}x slower")


if __name__ == "__main__":
    main()
