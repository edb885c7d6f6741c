"""2D inference on a 30x512x512 stack: our tiling vs MONAI's sliding window vs one untiled pass.

Same model, same data (normalised once, in memory), same batch size; every slice goes through
each method once, in round-robin chunks so that the load of a shared machine hits all alike:

- data: the ISBI 2012 ``test-volume.tif`` (30x512x512) from ``../shared/datasets/isbi2012`` if
  present, else a seeded synthetic stack of that size;
- model: a same-padding 2D U-Net with features (32, 64, 128, 256), 1.93 M parameters (about
  MONAI's BasicUNet); random weights, since speed does not depend on them;
- ``monai``: ``monai.inferers.sliding_window_inference``, roi 256, overlap 0.25, gaussian;
- ``ours``: ``unet_seg.inference.stream`` with ``unet-seg-predict``'s default 2D tile and its
  model runner;
- ``untiled``: the network on whole slices, batched, no tiling at all (the lower bound).

All three run the network in channels-last memory format (faster with oneDNN on the CPU).

Seams: the foreground probability of each method is compared with the untiled pass.
Roofline: each method's effective GFLOP/s (73.5 GFLOP of useful work per 512x512 slice) as a
fraction of the float32 matmul peak measured in the same run (``roofline.py``); the last line is
the JSON of all figures.
With ``--bf16``, ours also runs with ``precision=bf16``: its speed-up over float32 and its
agreement (labels, probabilities) with ours in float32.
Run: ``python benchmarks/bench_inference_2d.py [--slices N] [--batch B] [--chunk C] [--bf16]
[--quick]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import roofline
import torch

from unet_seg.models.roofline import useful_gflop
from unet_seg.peak_memory import peak_rss_mib

ISBI = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "isbi2012" / "test-volume.tif"
FEATURES = (32, 64, 128, 256)


def build_model() -> torch.nn.Module:
    from unet_seg.models import UNet

    torch.manual_seed(0)
    model = UNet(2, 1, 2, FEATURES, padding="same", norm=None, dropout=0.0).eval()
    # Channels-last for every method (ours uses it on the CPU), so that only the tiling differs.
    return model.to(memory_format=torch.channels_last)


def load_stack(slices: int) -> tuple[np.ndarray, str]:
    """The stack normalised as ``unet-seg-predict`` does (percentiles 1 / 99.8)."""
    import tifffile

    from unet_seg.normalization import percentile_range

    if ISBI.is_file():
        stack, source = tifffile.imread(ISBI)[:slices], f"ISBI 2012 {ISBI.name}"
    else:
        rng = np.random.default_rng(0)
        stack, source = rng.integers(0, 255, (slices, 512, 512), dtype=np.uint8), "synthetic"
    lo, hi = percentile_range(stack, 1.0, 99.8)
    return ((stack.astype(np.float32) - lo) / (hi - lo)).astype(np.float32), source


def run_monai(model, image: np.ndarray, batch: int) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(image)[:, None]  # the slices are MONAI's batch
    with torch.inference_mode():
        probs = sliding_window_inference(x, 256, batch, model, 0.25, "gaussian").softmax(1)
    return probs[:, 1].numpy()


def run_untiled(model, image: np.ndarray, batch: int) -> np.ndarray:
    x = torch.from_numpy(image)[:, None].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return torch.cat([model(x[i : i + batch]).softmax(1)[:, 1]
                          for i in range(0, len(x), batch)]).numpy()  # fmt: skip


def run_ours(model, image: np.ndarray, batch: int, precision: str = "float32") -> np.ndarray:
    from unet_seg.inference.options import DEFAULT_TILE
    from unet_seg.inference.runner import ModelRunner
    from unet_seg.inference.stream import iter_tiled_predictions
    from unet_seg.inference.tiling import plan_tiles

    plan = plan_tiles(model, image.shape, DEFAULT_TILE[2])
    slabs = iter_tiled_predictions(
        lambda box: image[(None, *box)], image.shape, plan,
        ModelRunner(model, "cpu", precision=precision), batch,
        progress=False,
    )  # fmt: skip
    return np.concatenate([p[1] for _, p in slabs])


def run_ours_bf16(model, image: np.ndarray, batch: int) -> np.ndarray:
    return run_ours(model, image, batch, precision="bf16")


METHODS = {"monai": run_monai, "ours": run_ours, "untiled": run_untiled}
NAMES = {"monai": "MONAI sliding window roi 256, ov 0.25", "ours": "ours (unet_seg stream)",
         "untiled": "untiled forward pass", "ours_bf16": "ours, precision=bf16"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--slices", type=int, default=30, help="slices of the stack to predict")
    parser.add_argument("--chunk", type=int, default=6, help="slices per round-robin round")
    parser.add_argument("--quick", action="store_true", help="2 slices: a smoke run, no figures")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also ours with precision=bf16, and its agreement with float32",
    )
    args = parser.parse_args()
    if args.bf16:
        METHODS["ours_bf16"] = run_ours_bf16
    if args.quick:
        args.slices, args.chunk = 2, 1
    peaks = roofline.measure_peaks("cpu", quick=args.quick)
    image, source = load_stack(args.slices)
    model = build_model()
    for run in METHODS.values():  # warm-up on one slice: oneDNN kernel selection, allocations
        run(model, image[:1], 1)
    seconds = dict.fromkeys(METHODS, 0.0)
    probs: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    order = list(METHODS)
    for i in range(0, len(image), args.chunk):
        # Round-robin in rotating order: load changes on the shared machine hit every method.
        for method in order:
            start = time.perf_counter()
            probs[method].append(METHODS[method](model, image[i : i + args.chunk], args.batch))
            seconds[method] += time.perf_counter() - start
        order = order[1:] + order[:1]
    result = {m: np.concatenate(p) for m, p in probs.items()}
    peak = peak_rss_mib()
    print(f"2D inference, {source}, {image.shape}, UNet features {FEATURES} (same padding, "
          f"1.93 M parameters), batch {args.batch}, torch threads {torch.get_num_threads()}, "
          f"round-robin over {args.chunk}-slice chunks, peak RSS {peak:.0f} MiB")  # fmt: skip
    print(f"{'method':<40}{'seconds':>9}{'MVox/s':>9}{'max|p - untiled|':>18}")
    for m, t in seconds.items():
        diff = float(np.abs(result[m] - result["untiled"]).max())
        print(f"{NAMES[m]:<40}{t:>9.2f}{image.size / t / 1e6:>9.3f}{diff:>18.2e}")
    print(
        f"ours vs MONAI: {seconds['monai'] / seconds['ours']:.2f}x throughput (goal >= 1.5x); "
        f"ours vs untiled: {seconds['ours'] / seconds['untiled']:.2f}x the time (goal <= 1.3x)"
    )
    gflop = useful_gflop(model, image.shape[1:], count=len(image))
    methods = {
        m: roofline.method_figures(
            gflop, t, peaks, mvox_per_s=round(image.size / t / 1e6, 4),
            max_diff_untiled=float(np.abs(result[m] - result["untiled"]).max()),
        )
        for m, t in seconds.items()
    }  # fmt: skip
    extra = {}
    if args.bf16:
        from unet_seg.inference.precision import agreement

        two_class = {m: np.stack([1 - result[m], result[m]], 1) for m in ("ours", "ours_bf16")}
        same, diff = agreement(two_class["ours"], two_class["ours_bf16"])
        speedup = seconds["ours"] / seconds["ours_bf16"]
        print(f"bf16 vs float32 (ours): {speedup:.2f}x throughput (goal >= 1.8x where the bf16 "
              f"matmul peak is >= 2x float32's); labels equal on {100 * same:.4f}% of the voxels "
              f"(goal >= 99.9%), max |dp| {diff:.1e} (goal <= 1e-2)")  # fmt: skip
        extra = {"bf16_vs_float32": round(speedup, 3), "bf16_label_agreement": same,
                 "bf16_max_prob_diff": diff}  # fmt: skip
    print(roofline.roofline_table(peaks, methods))
    print("goal: ours >= 0.75 of the float32 peak")
    roofline.print_record(
        "inference_2d",
        peaks,
        methods,
        source=source,
        shape=list(image.shape),
        batch=args.batch,
        peak_rss_mib=round(peak, 1),
        quick=args.quick,
        ours_vs_monai=round(seconds["monai"] / seconds["ours"], 3),
        ours_vs_untiled=round(seconds["ours"] / seconds["untiled"], 3),
        **extra,
    )


if __name__ == "__main__":
    main()
