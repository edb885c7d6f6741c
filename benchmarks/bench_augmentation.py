"""Augmentation throughput: elastic deformation + random flips of an image/label pair, for our
two backends and MONAI's ``Rand2DElasticd`` / ``Rand3DElasticd``, in the same run.

Rows (pairs/s, median over ``--reps`` timed pairs after one warm-up, one pair at a time):
- ``elasticdeform (cubic)``: the reference, ``Augmenter(backend="elasticdeform")``.
- ``torch (cubic)``: the same deformation, exact cubic B-spline image interpolation.
- ``torch (linear)``: the same displacement field, linear image interpolation (default config).
- ``torch (linear), batch 8``: eight pairs per ``warp`` call (``unet_seg.data.elastic``).
- ``monai``: matched strength. 2D: control points ``spacing = (size - 1) / (points - 1)`` apart
  with ``magnitude_range = (sigma, sigma)`` (N(0, sigma) offsets, bicubic upsampling), as ours.
  3D: MONAI smooths dense uniform noise with a Gaussian instead; we take the smoothing sigma
  ``--monai-smooth`` and scale ``magnitude`` so the displacement std equals ``sigma``.
  Bilinear image, nearest label, reflection padding.

Plus the exact-cubic 3D deformation alone: ``elasticdeform.deform_grid`` against the torch
backend (``deform(..., backend="torch")``) on the same image (1, *shape) + int64 label and the
same displacement (orders 3 and 0), for a 1 x 64 x 128 x 128 patch and the sample_3d recipe's
52 x 68 x 68 patch; wall and CPU-time medians, timed round-robin, the ratio against the issue's
goal (<= 0.2x) and the largest difference between the two outputs. And the weight map of a
512 x 512 ISBI 2012 label (cells as objects) against the brute-force per-object distance
transform, when the ISBI data is present. The last line is one JSON object of all figures.

    python benchmarks/bench_augmentation.py --reps 5
    python benchmarks/bench_augmentation.py --reps 9 --cubic-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.ndimage
import torch

from unet_seg.config import PROJECT_ROOT
from unet_seg.data.elastic import warp
from unet_seg.data.transforms import Augmenter, deform
from unet_seg.data.weightmap import unet_weight_map

ISBI_LABELS = PROJECT_ROOT.parent / "shared" / "datasets" / "isbi2012" / "train-labels.tif"


def make_pair(shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    field = scipy.ndimage.gaussian_filter(rng.normal(size=shape), 4.0).astype(np.float32)
    return {"image": field[None], "label": (field > 0).astype(np.int64)}


def per_pair_seconds(run: Callable[[], object], reps: int, pairs_per_call: int = 1) -> float:
    run()  # warm-up: caches, allocator, lazy imports
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) / pairs_per_call)
    return statistics.median(times)


def interleaved_seconds(methods: dict[str, tuple[Callable[[], object], int]], reps: int):
    """Median seconds per pair of each method, timed round-robin so that the load of a shared
    machine drifting during the run hits every method alike."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for run, _ in methods.values():
        run()  # warm-up: caches, allocator, lazy imports
    for _ in range(reps):
        for name, (run, pairs) in methods.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / pairs)
    return [(name, statistics.median(t)) for name, t in times.items()]


def interleaved_wall_cpu(methods: dict[str, Callable[[], object]], reps: int):
    """``{name: (wall s, CPU s)}`` medians per call, timed round-robin. CPU time (this process)
    is the steadier figure when other work shares the cores; wall time is what training sees."""
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for run in methods.values():
        run()
    for _ in range(reps):
        for name, run in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in methods}


def bench_exact_cubic_3d(shape: tuple[int, ...], reps: int, args) -> dict:
    """elasticdeform vs the torch backend, exact cubic image + nearest label, same input and
    displacement; returns the figures for the JSON line."""
    rng = np.random.default_rng(0)
    pair = make_pair(shape, rng)
    arrays = [pair["image"], pair["label"]]
    displacement = rng.normal(0.0, args.sigma, size=(len(shape), *[args.points] * len(shape)))
    runs = {
        backend: (lambda b=backend: deform(arrays, displacement, (3, 0), backend=b))
        for backend in ("elasticdeform", "torch")
    }
    ref, ours = (run() for run in runs.values())
    times = interleaved_wall_cpu(runs, reps)
    (ed_wall, ed_cpu), (torch_wall, torch_cpu) = times["elasticdeform"], times["torch"]
    figures = {
        "shape": list(shape),
        "elasticdeform_ms": 1000 * ed_wall,
        "torch_ms": 1000 * torch_wall,
        "ratio": torch_wall / ed_wall,
        "elasticdeform_cpu_ms": 1000 * ed_cpu,
        "torch_cpu_ms": 1000 * torch_cpu,
        "cpu_ratio": torch_cpu / ed_cpu,
        "image_max_abs_diff": float(np.abs(ours[0] - ref[0]).max()),
        "label_equal_fraction": float(np.mean(ours[1] == ref[1])),
    }
    print(
        f"\nexact cubic 3D, 1 x {' x '.join(map(str, shape))} image + label, orders (3, 0)\n"
        f"  elasticdeform {1000 * ed_wall:.0f} ms (CPU {1000 * ed_cpu:.0f})   "
        f"torch {1000 * torch_wall:.0f} ms (CPU {1000 * torch_cpu:.0f})\n"
        f"  ratio {figures['ratio']:.3f}x wall, {figures['cpu_ratio']:.3f}x CPU; goal <= 0.2x: "
        f"{'met' if figures['ratio'] <= 0.2 else 'NOT met'}; image max |diff| "
        f"{figures['image_max_abs_diff']:.1e}, labels equal {figures['label_equal_fraction']:.5f}"
    )
    return figures


def monai_transform(shape, sigma: float, points: int, smooth: float):
    from monai.transforms import Compose, Rand2DElasticd, Rand3DElasticd, RandFlipd

    keys = ["image", "label"]
    common = {"keys": keys, "prob": 1.0, "mode": ("bilinear", "nearest")}
    common["padding_mode"] = "reflection"
    if len(shape) == 2:
        spacing = tuple((s - 1) / (points - 1) for s in shape)
        elastic = Rand2DElasticd(spacing=spacing, magnitude_range=(sigma, sigma), **common)
    else:
        magnitude = sigma / smoothed_uniform_std(smooth, len(shape))
        elastic = Rand3DElasticd(
            sigma_range=(smooth, smooth), magnitude_range=(magnitude, magnitude), **common
        )
    flips = [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(len(shape))]
    transform = Compose([elastic, *flips])
    transform.set_random_state(seed=0)
    return transform


def smoothed_uniform_std(smooth: float, dims: int) -> float:
    """Std of U(-1, 1) noise after a separable Gaussian of sigma ``smooth`` (truncated at 3 sigma,
    as MONAI's GaussianFilter), away from borders."""
    x = np.arange(-int(3 * smooth), int(3 * smooth) + 1)
    kernel = np.exp(-(x**2) / (2 * smooth**2))
    kernel /= kernel.sum()
    return float(np.sqrt(1 / 3) * np.sqrt((kernel**2).sum()) ** dims)


def bench_shape(shape, reps: int, args) -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    pair = make_pair(shape, rng)
    common = {"elastic_p": 1.0, "sigma": args.sigma, "points": args.points}
    common.update({"flip_p": 0.5, "rot90_p": 0.0})
    methods = {}
    for name, backend, order in [
        ("elasticdeform (cubic)", "elasticdeform", 3),
        ("torch (cubic)", "torch", 3),
        ("torch (linear)", "torch", 1),
    ]:
        aug = Augmenter(backend=backend, image_order=order, **common)
        methods[name] = (lambda aug=aug: aug(pair, rng), 1)

    batch = 8
    images = torch.from_numpy(np.repeat(pair["image"][None], batch, axis=0))
    labels = torch.from_numpy(np.repeat(pair["label"][None, None], batch, 0).astype(np.float32))

    def torch_batch() -> None:
        disp = torch.randn(batch, len(shape), *[args.points] * len(shape)) * args.sigma
        flips = [d + 2 for d in range(len(shape)) if torch.rand(()) < 0.5]
        x, y = (images.flip(flips), labels.flip(flips)) if flips else (images, labels)
        warp([x, y], disp, orders=(1, 0))

    methods[f"torch (linear), batch {batch}"] = (torch_batch, batch)
    monai = monai_transform(shape, args.sigma, args.points, args.monai_smooth)
    data = {
        "image": torch.from_numpy(pair["image"]),
        "label": torch.from_numpy(pair["label"])[None],
    }
    methods[f"monai Rand{len(shape)}DElasticd + flips"] = (lambda: monai(data), 1)
    return interleaved_seconds(methods, reps)


def print_table(shape, rows) -> None:
    reference = rows[0][1]
    print(f"\n{' x '.join(map(str, shape))} pair (image float32 + label int64)")
    print(f"{'method':<34}{'ms/pair':>10}{'pairs/s':>10}{'time vs elasticdeform':>24}")
    for name, seconds in rows:
        print(f"{name:<34}{1000 * seconds:>10.1f}{1 / seconds:>10.2f}{seconds / reference:>23.3f}x")


def bench_weightmap(reps: int) -> None:
    if not ISBI_LABELS.is_file():
        print(f"\nweight map: ISBI labels not found at {ISBI_LABELS}, skipped")
        return
    import tifffile

    classes = (tifffile.imread(ISBI_LABELS)[0] == 0).astype(np.int64)  # membrane = 1
    objects, count = scipy.ndimage.label(classes == 0)  # cells

    def brute_force() -> None:  # the peer: one full-image distance transform per cell
        distances = [
            scipy.ndimage.distance_transform_edt(objects != i) for i in range(1, count + 1)
        ]
        np.partition(np.stack(distances), 1, axis=0)

    ours = per_pair_seconds(lambda: unet_weight_map(classes, foreground=0), reps)
    peer = per_pair_seconds(brute_force, 1)
    print(f"\nweight map, ISBI 2012 label 512 x 512, {count} cells (w0 10, sigma 5)")
    print(
        f"  windowed (ours): {1000 * ours:.1f} ms   brute force: {1000 * peer:.0f} ms   "
        f"ratio {ours / peer:.3f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed pairs per method and size")
    parser.add_argument("--sigma", type=float, default=10.0)
    parser.add_argument("--points", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 as in DataLoader workers (and elasticdeform is single-threaded)",
    )
    parser.add_argument("--monai-smooth", type=float, default=16.0, help="3D Gaussian sigma")
    parser.add_argument(
        "--cubic-only", action="store_true", help="only the exact-cubic 3D elasticdeform rows"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"elastic sigma {args.sigma} px on a {args.points}-point grid; "
        f"median of {args.reps}, methods timed round-robin"
    )
    figures: dict = {"threads": torch.get_num_threads(), "reps": args.reps, "tables": {}}
    for shape in [] if args.cubic_only else [(512, 512), (64, 128, 128)]:
        rows = bench_shape(shape, args.reps, args)
        figures["tables"]["x".join(map(str, shape))] = {name: 1000 * s for name, s in rows}
        print_table(shape, rows)
        if len(shape) == 3:
            ratio = dict(rows)["torch (linear)"] / rows[0][1]
            cubic = dict(rows)["torch (cubic)"] / rows[0][1]
            print(
                f"3D goal torch <= 0.2x elasticdeform: linear {ratio:.3f}x "
                f"({'met' if ratio <= 0.2 else 'NOT met'}), cubic {cubic:.3f}x "
                f"({'met' if cubic <= 0.2 else 'NOT met'})"
            )
    figures["exact_cubic_3d"] = [
        bench_exact_cubic_3d(shape, args.reps, args) for shape in [(64, 128, 128), (52, 68, 68)]
    ]
    if not args.cubic_only:
        bench_weightmap(args.reps)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
