"""The GPU figures in one go (under 5 minutes on one GPU): matmul peaks, 2D and 3D inference and
training steps, each against the peak, written as a markdown table and JSON lines.

Stages, each on ``--device`` (default ``cuda``) with the GPU's own timing (synchronised):

- ``peaks``: 4096^2 matmul in float32 (TF32 off), TF32, bfloat16, float16;
- ``inference_2d``: the 2D benchmark's net (features 32-256, same padding) on a stack of 512^2
  slices through predict's tiles and runner: precision float32 / bf16 / float16, channels-last
  on and off, runtime torch and compile (compile time reported apart), what ``precision=auto``
  picks and why, agreement with float32 (labels, max |dp|); MONAI's sliding window beside;
- ``inference_3d``: a (32, 64, 128) 3D net on a 64x256x256 volume: ours float32 / bf16 vs MONAI's
  sliding window, peak GPU memory of each;
- ``train``: steps/s of a plain training step (forward, Dice+CE-like loss, backward, Adam) of the
  2D and 3D nets: float32, bf16 autocast, channels-last.

Each row has seconds, GFLOP/s of useful work (2 x MACs of the voxels written; for training the
counted forward + backward) and the fraction of the float32 and of the bf16 peak. Nothing is
written but ``--out`` (``gpu_suite.md``, ``gpu_suite.jsonl``).

    python benchmarks/gpu_suite.py --out /tmp/gpu            # on a CUDA machine
    python benchmarks/gpu_suite.py --dry-run                 # the plan, then every stage tiny on
                                                             # the CPU (checks the code runs)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from unet_seg.models import UNet
from unet_seg.models.roofline import matmul_gflops, useful_gflop

FEATURES_2D, FEATURES_3D = (32, 64, 128, 256), (32, 64, 128)


class Suite:
    """Collects rows ``{stage, method, seconds, gflop, ...}`` and the peaks."""

    def __init__(self, device: torch.device, tiny: bool) -> None:
        self.device, self.tiny, self.rows, self.peaks = device, tiny, [], {}
        self.started = time.perf_counter()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def best_time(self, fn: Callable[[], object], repeats: int = 2) -> tuple[float, float, object]:
        """(first call's seconds: warm-up or compile, best of ``repeats`` after it, the last
        call's result)."""
        self.sync()
        start = time.perf_counter()
        result = fn()
        self.sync()
        first, best = time.perf_counter() - start, float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn()
            self.sync()
            best = min(best, time.perf_counter() - start)
        return first, best, result

    def add(self, stage: str, method: str, seconds: float, gflop: float, **extra) -> None:
        row = {"stage": stage, "method": method, "seconds": round(seconds, 4),
               "gflop": round(gflop, 3), "gflops": round(gflop / seconds, 1)}  # fmt: skip
        for name in ("float32", "bf16"):
            if self.peaks.get(name):
                row[f"of_{name}_peak"] = round(gflop / seconds / self.peaks[name], 3)
        row.update(extra)
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def stage_peaks(s: Suite) -> None:
    size = 512 if s.tiny else 4096
    cuda = s.device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
    s.peaks["float32"] = matmul_gflops(torch.float32, s.device, size, 5)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        s.peaks["tf32"] = matmul_gflops(torch.float32, s.device, size, 5)
        torch.backends.cuda.matmul.allow_tf32 = False
        s.peaks["float16"] = matmul_gflops(torch.float16, s.device, size, 5)
    if not cuda or torch.cuda.is_bf16_supported():
        s.peaks["bf16"] = matmul_gflops(torch.bfloat16, s.device, size, 3, budget_s=2.0)
    print(json.dumps({"peaks_gflops": {k: round(v, 1) for k, v in s.peaks.items()}}), flush=True)


def precisions(s: Suite, dims: int) -> list[str]:
    """float32, bf16 where measured, float16 on a GPU. Not bf16 for full-size 3D on a CPU whose
    bf16 matmul is not faster: its 3D convolutions have no native bf16 kernels (hours)."""
    slow_bf16 = s.peaks.get("bf16", 0) < s.peaks["float32"] and dims == 3 and not s.tiny
    names = ["float32", "bf16"] if "bf16" in s.peaks and not (
        s.device.type == "cpu" and slow_bf16) else ["float32"]  # fmt: skip
    return [*names, "float16"] if s.device.type == "cuda" else names


def tiled(model, runner, image: np.ndarray, batch: int) -> np.ndarray:
    """Foreground probabilities of ``image`` ``(Z, Y, X)`` through predict's tiles."""
    from unet_seg.inference.options import default_tile
    from unet_seg.inference.stream import iter_tiled_predictions
    from unet_seg.inference.tiling import plan_tiles

    plan = plan_tiles(model, image.shape, default_tile(model, image.shape), 0.25)
    slabs = iter_tiled_predictions(lambda box: image[(None, *box)], image.shape, plan, runner,
                                   batch, progress=False)  # fmt: skip
    return np.concatenate([p[1] for _, p in slabs])


def monai_probs(model, image: np.ndarray, roi, batch: int, device, amp: bool) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(image).to(device)
    x = x[:, None] if len(roi) == 2 else x[None, None]
    context = torch.autocast(device.type, torch.float16) if amp else torch.no_grad()
    with torch.inference_mode(), context:
        probs = sliding_window_inference(x, roi, batch, model, 0.25, "gaussian").float()
    probs = probs.softmax(1)
    return (probs[:, 1] if len(roi) == 2 else probs[0, 1]).cpu().numpy()


def compare(reference: np.ndarray, probs: np.ndarray) -> dict:
    same = float(np.mean((reference > 0.5) == (probs > 0.5)))
    return {"labels_equal": round(same, 5), "max_dp": float(np.abs(reference - probs).max())}


def stage_inference(s: Suite, dims: int) -> None:
    from unet_seg.inference.runner import ModelRunner, RunnerOptions

    torch.manual_seed(0)
    features = FEATURES_2D if dims == 2 else FEATURES_3D
    model = UNet(dims, 1, 2, features, padding="same", norm=None, dropout=0.0).eval()
    if dims == 2:
        shape, roi, batch = ((2, 128, 128) if s.tiny else (16, 512, 512)), (256, 256), 4
    else:
        shape, roi, batch = ((16, 64, 64) if s.tiny else (64, 256, 256)), (64, 128, 128), 1
    roi = tuple(min(r, n) for r, n in zip(roi, shape[-dims:], strict=True))
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    gflop = useful_gflop(model, shape[1:], count=shape[0]) if dims == 2 else useful_gflop(
        model, shape)  # fmt: skip
    stage = f"inference_{dims}d"
    choice = RunnerOptions(str(s.device), precision="auto").resolve(model)
    print(json.dumps({"stage": stage, "auto_precision": choice[0].precision,
                      "reason": choice[1]}), flush=True)  # fmt: skip
    reference = None
    runtimes = ["torch", "compile"] if dims == 2 else ["torch"]
    for precision in precisions(s, dims):
        for channels_last in (True, False):
            for runtime in runtimes:
                if runtime == "compile" and (precision != "float32" or not channels_last):
                    continue  # compile: one variant, its time is mostly the compilation
                if s.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(s.device)
                runner = ModelRunner(model, s.device, precision=precision, runtime=runtime,
                                     channels_last=channels_last)  # fmt: skip
                first, best, probs = s.best_time(lambda r=runner: tiled(model, r, image, batch))
                reference = probs if reference is None else reference
                extra = compare(reference, probs) | {"first_call_s": round(first, 3)}
                if s.device.type == "cuda":
                    extra["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
                s.add(stage, f"ours {precision} {runtime}{' cl' if channels_last else ''}", best,
                      gflop, **extra)  # fmt: skip
    model_dev = model.to(s.device)
    for amp in (False, True) if s.device.type == "cuda" else (False,):
        if s.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(s.device)
        _, best, probs = s.best_time(
            lambda a=amp: monai_probs(model_dev, image, roi, batch, s.device, a)
        )
        extra = compare(reference, probs)
        if s.device.type == "cuda":
            extra["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        s.add(stage, f"MONAI sliding window{' amp' if amp else ''}", best, gflop, **extra)


def stage_train(s: Suite, dims: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    if dims == 2:
        model = UNet(2, 1, 2, (16, 32, 64, 128), padding="valid", norm="batch", dropout=0.0)
        size, batch = ((92, 92), 2) if s.tiny else ((188, 188), 8)
    else:
        model = UNet(3, 1, 2, (16, 32, 64), padding="valid", norm="batch", dropout=0.0)
        size, batch = ((44, 44, 44), 1) if s.tiny else ((52, 68, 68), 2)
    model = model.to(s.device).train()
    x = torch.rand(batch, 1, *size, device=s.device)
    out_shape = model.output_shape(size)
    label = torch.randint(0, 2, (batch, *out_shape), device=s.device)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    gflop = counter.get_total_flops() / 1e9
    steps = 2 if s.tiny else 20
    for precision in precisions(s, dims)[:2]:
        for channels_last in (False, True):
            fmt = (torch.channels_last if dims == 2 else torch.channels_last_3d) if \
                channels_last else torch.contiguous_format  # fmt: skip
            model.to(memory_format=fmt)
            xin = x.contiguous(memory_format=fmt)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            dtype = torch.bfloat16 if precision == "bf16" else None

            def step(xin=xin, optimizer=optimizer, dtype=dtype) -> None:
                for _ in range(steps):
                    with torch.autocast(s.device.type, dtype or torch.float32,
                                        enabled=dtype is not None):  # fmt: skip
                        logits = model(xin)
                    loss = torch.nn.functional.cross_entropy(logits.float(), label)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

            _, best, _ = s.best_time(step, repeats=1)
            s.add(f"train_{dims}d", f"plain step {precision}{' cl' if channels_last else ''}",
                  best / steps, gflop, steps_per_s=round(steps / best, 2))  # fmt: skip


def markdown(s: Suite) -> str:
    lines = [f"# GPU suite: {device_label(s.device)}, torch {torch.__version__}", "",
             "matmul peaks (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in s.peaks.items()),
             "", "| stage | method | seconds | GFLOP/s | of float32 peak | of bf16 peak | "
             "other |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in s.rows:
        other = ", ".join(
            f"{k} {v}"
            for k, v in r.items()
            if k
            not in (
                "stage",
                "method",
                "seconds",
                "gflop",
                "gflops",
                "of_float32_peak",
                "of_bf16_peak",
            )
        )
        lines.append(
            f"| {r['stage']} | {r['method']} | {r['seconds']} | {r['gflops']} | "
            f"{r.get('of_float32_peak', '')} | {r.get('of_bf16_peak', '')} | {other} |"
        )
    return "\n".join(lines) + "\n"


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


STAGES = {
    "peaks": stage_peaks,
    "inference_2d": lambda s: stage_inference(s, 2),
    "inference_3d": lambda s: stage_inference(s, 3),
    "train_2d": lambda s: stage_train(s, 2),
    "train_3d": lambda s: stage_train(s, 3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=None, help="folder for gpu_suite.md / .jsonl")
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan, then run every stage tiny on the CPU")  # fmt: skip
    args = parser.parse_args()
    if args.dry_run:
        print("plan:", ", ".join(args.stages), "on", args.device, "->", args.out or "a temp dir")
        args.device = "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to check the script on the CPU")
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_suite_"))
    out.mkdir(parents=True, exist_ok=True)
    suite = Suite(device, tiny=args.dry_run)
    for name in args.stages:
        if name != "peaks" and not suite.peaks:
            stage_peaks(suite)
        STAGES[name](suite)
        print(f"# {name} done at {time.perf_counter() - suite.started:.0f} s", flush=True)
    (out / "gpu_suite.jsonl").write_text("".join(json.dumps(r) + "\n" for r in suite.rows))
    (out / "gpu_suite.md").write_text(markdown(suite))
    print(markdown(suite))
    print(f"written: {out / 'gpu_suite.md'}, {out / 'gpu_suite.jsonl'}")


if __name__ == "__main__":
    main()
