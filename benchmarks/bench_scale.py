"""Block-wise prediction of OME-Zarr volumes, in-process and on a Dask LocalCluster.

One run prints, each as a ratio:

- equality: Dask ``local`` with 2 workers vs in-process: label mismatches (must be 0), max |dp|;
- scaling: 2 workers x 1 thread vs 1 worker x 1 thread (throughput; goal >= 1.7x on 2 cores);
- Dask overhead: 1 worker x 2 threads vs in-process with 2 torch threads (goal >= 0.9x);
- memory: peak RSS in-process and per worker for a 1024^2 vs a 4096^2 plane, same block size
  (goal <= 1.2x);
- resume: ``kill -9`` of the client, its scheduler and its workers at about half the blocks; the
  rerun must compute no more than the blocks not recorded plus one per worker, and give the
  same labels.

Inputs are seeded noise written as OME-Zarr, models random-weight small U-Nets (3D same-padding
for the throughput runs, 2D for the memory runs); each measurement runs in its own process.
Timings leave out what a run pays once, not per block: starting the cluster, loading the
model on each worker and the first forward pass of each window shape (one untimed warm-up run
of the same volume before the timed one). On a shared
machine, run under ``flock /tmp/unet-bench.lock`` and quote the load it prints.

Roofline: the throughput runs' effective GFLOP/s (2 x the 3D net's MACs on the volume) as a
fraction of the float32 matmul peak on all the machine's torch threads (``roofline.py``); the
last line is the JSON of all figures.

Run: ``python benchmarks/bench_scale.py [--shape 64 192 192] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import roofline

from unet_seg.peak_memory import peak_rss_mib

MODEL_3D = {"spatial_dims": 3, "in_channels": 1, "num_classes": 2, "features": [8, 16, 32],
            "padding": "same", "norm": None, "dropout": 0.0}  # fmt: skip
MODEL_2D = {**MODEL_3D, "spatial_dims": 2, "features": [8, 16]}


def save_checkpoint(path: Path, model_cfg: dict) -> Path:
    import pytorch_lightning as pl
    import torch

    from unet_seg.training.module import SegmentationModule

    torch.manual_seed(0)
    module = SegmentationModule(model=model_cfg, normalization={"low": 1.0, "high": 99.8})
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    return path


def write_input(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...]) -> Path:
    from unet_seg.io.zarr.output import ZarrOutput

    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    ome = {"version": "0.5", "axes": axes, "scale": (1.0,) * 3, "name": path.name}
    out = ZarrOutput(path, shape, np.uint16, chunks, ome, False, {"bench": list(shape)})
    out.open()
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], chunks[0]):  # a slab at a time: the 4096^2 plane stays small
        rows = min(chunks[0], shape[0] - z)
        out.write((slice(z, z + rows), slice(None), slice(None)),
                  rng.integers(0, 4000, (rows, *shape[1:]), dtype=np.uint16))  # fmt: skip
    return out.commit()


def config(source: Path, out: Path, ckpt: Path, **extra) -> object:
    from omegaconf import OmegaConf

    from unet_seg.config import CONFIG_DIR

    cfg = OmegaConf.load(CONFIG_DIR / "predict.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.merge_with({"input": str(source), "checkpoint": str(ckpt), "output_dir": str(out),
                    "progress": False, "overwrite": True, "cluster": {"kind": "none"}})  # fmt: skip
    cfg.merge_with(extra)
    return cfg


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints a JSON line."""
    from unet_seg.prediction.batch import predict

    extra = json.loads(args.extra)
    workers, threads = args.workers, args.threads
    cluster = None
    if workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                               dashboard_address=None)  # fmt: skip
        extra["cluster"] = {"kind": "address", "address": cluster.scheduler_address}
    else:
        import torch

        torch.set_num_threads(threads)
    cfg = config(Path(args.source), Path(args.out), Path(args.ckpt), **extra)
    if cluster is not None:
        from distributed import Client

        from unet_seg.blockwise.run import BlockOptions
        from unet_seg.blockwise.task import runner_for

        spec = BlockOptions.from_config(cfg).runner
        with Client(cluster) as client:  # imports and model on every worker, before the clock
            client.run(lambda: runner_for(spec) and None)
    if args.warm:  # steady state: every worker has run each window shape once (oneDNN set-up)
        predict(config(Path(args.source), Path(args.out) / "warm", Path(args.ckpt), **extra))
    start = time.perf_counter()
    summary = predict(cfg)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "entry": summary["files"][0],
              "rss_mb": peak_rss_mib()}  # fmt: skip
    if cluster is not None:
        with Client(cluster) as client:
            usage = client.run(peak_rss_mib)
        result["worker_rss_mb"] = max(usage.values())
        cluster.close()
    print("RESULT " + json.dumps(result))


def measure(source, out, ckpt, workers=0, threads=2, warm=False, **extra) -> dict:
    cmd = [sys.executable, __file__, "--child", "--source", str(source), "--out", str(out),
           "--ckpt", str(ckpt), "--workers", str(workers), "--threads", str(threads),
           "--extra", json.dumps(extra), *(["--warm"] if warm else [])]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"measurement failed:\n{proc.stderr[-3000:]}")


def read(path: Path) -> np.ndarray:
    from unet_seg.io.zarr.store import open_zarr

    return open_zarr(path)[...]


def resume_after_kill(source, out, ckpt, block) -> dict:
    """Kill the whole run (client, scheduler, 2 workers) at about half the blocks, rerun."""
    args = [f"input={source}", f"output_dir={out}", f"checkpoint={ckpt}", "progress=false",
            f"block_size=[{','.join(map(str, block))}]", "overwrite=true", "cluster=local",
            "cluster.n_workers=2", "cluster.dashboard_address=null", "tile_size=48"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "unet_seg.cli.predict", *args], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    records = out / f".{source.name.replace('.ome.zarr', '')}_labels.ome.zarr.partial"
    records = records / ".unet_seg_blocks"
    total = None
    while proc.poll() is None:
        done = len(list(records.glob("0*.json"))) if records.is_dir() else 0
        if total is None and records.is_dir():
            from unet_seg.io.zarr.store import open_zarr

            shape = open_zarr(source).shape
            total = int(np.prod([-(-s // b) for s, b in zip(shape, block, strict=True)]))
        if total and done >= total // 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    recorded = len(list(records.glob("0*.json")))
    rerun = measure(source, out, ckpt, 0, 2, block_size=list(block), tile_size=48,
                    overwrite=False)  # fmt: skip
    return {"total": total, "recorded_at_kill": recorded, "rerun": rerun["entry"]["blocks"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 192, 192])
    parser.add_argument("--block", type=int, nargs=3, default=[16, 96, 96])
    parser.add_argument("--quick", action="store_true", help="smaller planes for the memory test")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("source", "out", "ckpt", "extra"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"load before: {os.getloadavg()}  cpus: {os.cpu_count()}")
    peaks = roofline.measure_peaks("cpu", quick=args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    ckpt3, ckpt2 = (
        save_checkpoint(tmp / "m3.ckpt", MODEL_3D),
        save_checkpoint(tmp / "m2.ckpt", MODEL_2D),
    )
    block = tuple(args.block)
    source = write_input(tmp / "vol.ome.zarr", tuple(args.shape), block)  # a chunk per block
    common = {"block_size": list(block), "tile_size": 48, "outputs": {"probabilities": True},
              "probability_dtype": "float32"}  # fmt: skip
    runs = {
        "in-process, 2 threads": measure(source, tmp / "a", ckpt3, 0, 2, True, **common),
        "dask 2 workers x 1 thread": measure(source, tmp / "b", ckpt3, 2, 1, True, **common),
        "dask 1 worker x 1 thread": measure(source, tmp / "c", ckpt3, 1, 1, True, **common),
        "dask 1 worker x 2 threads": measure(source, tmp / "d", ckpt3, 1, 2, True, **common),
    }
    blocks = runs["in-process, 2 threads"]["entry"]["blocks"]["total"]
    print(f"\nvolume {tuple(args.shape)}, {blocks} blocks of {block}, 3D same-padding U-Net")
    for name, r in runs.items():
        print(f"  {name:28s} {r['seconds']:7.1f} s  {blocks / r['seconds']:6.2f} blocks/s")
    a_labels, b_labels = (
        read(tmp / "a" / "vol_labels.ome.zarr"),
        read(tmp / "b" / "vol_labels.ome.zarr"),
    )
    a_probs, b_probs = (
        read(tmp / "a" / "vol_probs.ome.zarr"),
        read(tmp / "b" / "vol_probs.ome.zarr"),
    )
    t = {k: v["seconds"] for k, v in runs.items()}
    print(
        f"equality dask 2 workers vs in-process: {int((a_labels != b_labels).sum())} label "
        f"mismatches, max |dp| {float(np.abs(a_probs - b_probs).max()):.2e}"
    )
    scaling = t["dask 1 worker x 1 thread"] / t["dask 2 workers x 1 thread"]
    overhead = t["in-process, 2 threads"] / t["dask 1 worker x 2 threads"]
    print(f"scaling 2x1 vs 1x1 workers: {scaling:.2f}x (goal >= 1.7x)")
    print(f"overhead 1 worker x 2 threads vs in-process: {overhead:.2f}x throughput (goal >= 0.9x)")
    from unet_seg.models import UNet
    from unet_seg.models.roofline import useful_gflop

    gflop = useful_gflop(UNet(**MODEL_3D), tuple(args.shape))
    methods = {name: roofline.method_figures(gflop, seconds, peaks, blocks_per_s=round(
        blocks / seconds, 3)) for name, seconds in t.items()}  # fmt: skip
    print(roofline.roofline_table(peaks, methods))

    planes = (512, 2048) if args.quick else (1024, 4096)
    memory = {}
    for size in planes:
        plane = write_input(tmp / f"p{size}.ome.zarr", (2, size, size), (1, 512, 512))
        extra = {"block_size": [1, 512, 512], "tile_size": 256}
        own = measure(plane, tmp / f"m{size}", ckpt2, 0, 2, **extra)["rss_mb"]
        worker = measure(plane, tmp / f"w{size}", ckpt2, 1, 2, **extra)["worker_rss_mb"]
        memory[size] = (own, worker)
    small, big = planes
    print(f"\npeak RSS, 2D U-Net, blocks of 512^2: {small}^2 vs {big}^2 plane")
    for i, who in enumerate(("in-process", "dask worker")):
        print(
            f"  {who:12s} {memory[small][i]:7.0f} MB vs {memory[big][i]:7.0f} MB: "
            f"{memory[big][i] / memory[small][i]:.2f}x (goal <= 1.2x)"
        )

    resume = resume_after_kill(source, tmp / "k", ckpt3, block)
    missing = resume["total"] - resume["recorded_at_kill"]
    print(
        f"\nresume after kill -9 at {resume['recorded_at_kill']}/{resume['total']} blocks: rerun "
        f"computed {resume['rerun']['computed']} (missing {missing}, limit {missing + 2}), "
        f"skipped {resume['rerun']['skipped']}"
    )
    same = np.array_equal(read(tmp / "k" / "vol_labels.ome.zarr"), a_labels)
    print(f"  rerun labels equal the uninterrupted run: {same}")
    print(f"load after: {os.getloadavg()}")
    roofline.print_record(
        "scale",
        peaks,
        methods,
        shape=list(args.shape),
        block=list(block),
        quick=args.quick,
        scaling_2x1_vs_1x1=round(scaling, 3),
        overhead_1x2_vs_inprocess=round(overhead, 3),
        rss_mb={str(k): [round(v, 1) for v in m] for k, m in memory.items()},
        resume_computed=resume["rerun"]["computed"],
        resume_missing=missing,
        resume_labels_equal=bool(same),
    )


if __name__ == "__main__":
    main()
