"""Block-wise prediction on a Dask LocalCluster with 2 workers: equality with in-process, a
corrupt chunk reported by block index, resume after ``kill -9`` of the client, a worker killed
mid-file survived; jobqueue configs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from scipy import ndimage as ndi

from tests.blockwise.test_allocator import needs_mallinfo2
from tests.prediction.test_predict_zarr import make_input, save_checkpoint
from unet_seg.blockwise.engine import jobqueue_cluster
from unet_seg.config import PROJECT_ROOT, config_dir
from unet_seg.io.zarr.store import open_zarr
from unet_seg.prediction.batch import predict

distributed = pytest.importorskip("distributed")
TINY_2D = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [4, 8],
           "padding": "valid", "norm": None, "dropout": 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    """One 2-worker LocalCluster for the module (processes, one thread each, no dashboard):
    starting one, and the workers' first import of torch, costs seconds."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def scheduler(cluster):
    return cluster.scheduler_address


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # seed 4: about 14% of the stack is class 1, in thousands of objects across blocks
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model2d.ckpt", TINY_2D, seed=4)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(2).integers(0, 4000, (6, 90, 75)).astype(np.uint16)


def overrides(source, out, ckpt, address=None) -> list[str]:
    args = [f"input={source}", f"output_dir={out}", f"checkpoint={ckpt}", "tile_size=24",
            "block_size=[2,32,32]", "progress=false"]  # fmt: skip
    if address:
        args += ["cluster=address", f"cluster.address={address}"]
    return args


def config(args):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("predict", overrides=args)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, ckpt, data):
    tmp = tmp_path_factory.mktemp("inproc")
    source = make_input(tmp, data)
    assert predict(config(overrides(source, tmp / "out", ckpt)))["failed"] == 0
    return open_zarr(tmp / "out" / "raw_labels.ome.zarr")[...]


def test_two_workers_equal_in_process_and_stitch_like_scipy(
    tmp_path, scheduler, ckpt, data, in_process
):
    source = make_input(tmp_path, data)
    args = overrides(source, tmp_path / "out", ckpt, scheduler)
    args += ["outputs.instances=true", "instances.method=cc", "instances.min_size=0"]
    entry = predict(config(args))["files"][0]
    assert entry["status"] == "ok" and entry["blocks"]["computed"] == entry["blocks"]["total"] > 4
    labels = open_zarr(tmp_path / "out" / "raw_labels.ome.zarr")[...]
    np.testing.assert_array_equal(labels, in_process)
    # A 2D model: the stack's instances are 3D objects, joined across blocks and slices.
    expected, count = ndi.label(in_process == 1)
    assert entry["instances"] == count > 3
    instances = open_zarr(tmp_path / "out" / "raw_instances.ome.zarr")[...]
    np.testing.assert_array_equal(instances, expected)


def _found_worker() -> bool:
    from unet_seg.blockwise.task import _current_worker

    return _current_worker() is not None


def test_a_client_run_warm_up_finds_its_worker(scheduler):
    """Outside a task ``get_worker`` fails; a runner cached there must still be the worker's
    (its GPU pinning), so the process's worker is found in ``client.run`` too."""
    with distributed.Client(scheduler) as client:
        assert list(client.run(_found_worker).values()) == [True, True]


@pytest.mark.slow  # two predictions of 27 blocks each, ~30 s on 2 cores
def test_seeded_instances_on_two_workers_equal_in_process(tmp_path, scheduler, ckpt, data):
    """The flood pass runs on the workers too, each block with its halo of maps and seeds."""
    seeded = ["outputs.instances=true", "instances.method=seeded", "instances.seed_threshold=0.7",
              "instances.halo=6"]  # fmt: skip
    results = []
    for name, address in (("inproc", None), ("cluster", scheduler)):
        source = make_input(tmp_path / name, data)
        entry = predict(config(overrides(source, tmp_path / name / "out", ckpt, address) + seeded))
        assert entry["files"][0]["status"] == "ok"
        results.append(open_zarr(tmp_path / name / "out" / "raw_instances.ome.zarr")[...])
    assert results[0].max() > 3
    np.testing.assert_array_equal(results[1], results[0])
    # The per-object table: measured on the workers, block by block, and the same.
    tables = [
        (tmp_path / name / "out" / "raw_objects.csv").read_text() for name in ("inproc", "cluster")
    ]
    assert tables[1] == tables[0] and len(tables[0].splitlines()) == len(np.unique(results[0]))


def _tensor_from_heap_after_a_block(checkpoint: str) -> tuple[str | None, int]:
    from tests.blockwise.test_allocator import mmapped_while_holding
    from unet_seg.blockwise.task import RunnerSpec, runner_for

    runner_for(RunnerSpec(checkpoint))
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), mmapped_while_holding(8 * 2**20)


@needs_mallinfo2
def test_workers_reuse_freed_tensor_memory_despite_the_nanny(scheduler, ckpt):
    """The nanny pins malloc's trim threshold, which mmaps (and page-faults) every activation;
    a worker that has loaded its model serves them from the heap again (1.1-1.2x in-process)."""
    with distributed.Client(scheduler) as client:
        found = client.run(_tensor_from_heap_after_a_block, str(ckpt))
    assert list(found.values()) == [("65536", 0), ("65536", 0)]


def _fail_block(index: int) -> None:
    """Run on every worker: block ``index`` raises (a lost GPU, a bad node...)."""
    from unet_seg.blockwise import task

    original = getattr(task.predict_block, "original", task.predict_block)

    def failing(read, blocks, block, *args):
        if block.index == index:
            raise RuntimeError("simulated failure")
        return original(read, blocks, block, *args)

    failing.original = original
    task.predict_block = failing


def _restore() -> None:
    from unet_seg.blockwise import task

    task.predict_block = getattr(task.predict_block, "original", task.predict_block)


def test_failing_block_is_reported_and_the_others_finish(tmp_path, scheduler, ckpt, data):
    source = make_input(tmp_path, data)
    with distributed.Client(scheduler) as client:
        client.run(_fail_block, 4)
        try:
            entry = predict(config(overrides(source, tmp_path / "out", ckpt, scheduler)))
        finally:
            client.run(_restore)
    entry = entry["files"][0]
    assert entry["status"] == "failed"
    assert "1 of 9 blocks failed: block 4 at (0, 1, 1): RuntimeError" in entry["error"]
    assert entry["blocks"] == {"total": 9, "computed": 8, "skipped": 0, "failed": 1}
    assert not (tmp_path / "out" / "raw_labels.ome.zarr").exists()


def test_rerun_after_kill_computes_only_missing_blocks(tmp_path, scheduler, ckpt, data, in_process):
    source = make_input(tmp_path, data)
    args = overrides(source, tmp_path / "out", ckpt, scheduler)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "unet_seg.cli.predict", *args], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    records = tmp_path / "out" / ".raw_labels.ome.zarr.unet-seg-partial" / ".unet_seg_blocks"
    deadline = time.monotonic() + 120
    while not list(records.glob("0*.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no block was recorded"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the client dies mid-run
    proc.wait()
    entry = predict(config(args))["files"][0]
    blocks = entry["blocks"]
    assert entry["status"] == "ok" and blocks["skipped"] >= 1
    assert blocks["computed"] + blocks["skipped"] == blocks["total"]
    np.testing.assert_array_equal(open_zarr(tmp_path / "out" / "raw_labels.ome.zarr")[...],
                                  in_process)  # fmt: skip


def test_a_worker_killed_mid_file_is_survived(tmp_path, cluster, ckpt, data, in_process):
    """``kill -9`` of every worker mid-file (so also the one holding the job): their nannies
    start new ones, the blocks they held (and the job they share) are computed again there,
    and the labels equal an undisturbed run. (The job used to be scattered data, which no
    worker can recompute: every block of the file was cancelled as 'already forgotten'.)
    The module's cluster, so the last test to use it: its workers are new ones afterwards."""
    source = make_input(tmp_path, data)
    records = tmp_path / "out" / ".raw_labels.ome.zarr.unet-seg-partial" / ".unet_seg_blocks"
    pids = [nanny.process.pid for nanny in cluster.workers.values()]  # the workers' processes
    assert len(pids) == 2
    killed = threading.Event()

    def kill_after_three_blocks() -> None:
        deadline = time.monotonic() + 120
        while len(list(records.glob("0*.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed.set()

    threading.Thread(target=kill_after_three_blocks, daemon=True).start()
    entry = predict(config(overrides(source, tmp_path / "out", ckpt,
                                     cluster.scheduler_address)))["files"][0]  # fmt: skip
    assert killed.is_set()
    assert entry["status"] == "ok", entry.get("error")
    assert entry["blocks"]["computed"] == entry["blocks"]["total"]
    np.testing.assert_array_equal(open_zarr(tmp_path / "out" / "raw_labels.ome.zarr")[...],
                                  in_process)  # fmt: skip


@pytest.mark.parametrize(("address", "status"), [(None, 404), (":0", 200)])
def test_a_null_dashboard_address_means_no_dashboard(address, status):
    """``cluster.dashboard_address: null`` is documented as off: no dashboard pages, and Dask's
    default port 8787 left alone (the scheduler's health check still answers)."""
    from omegaconf import OmegaConf

    from unet_seg.blockwise.engine import make_cluster

    cfg = OmegaConf.create({"kind": "local", "n_workers": 0, "dashboard_address": address})
    with make_cluster(cfg) as cluster:
        link = cluster.dashboard_link
        assert ":8787/" not in link
        try:
            got = urllib.request.urlopen(link, timeout=10).status
        except urllib.error.HTTPError as err:
            got = err.code
        assert got == status
        health = urllib.request.urlopen(link.replace("/status", "/health"), timeout=10)
        assert health.status == 200


@pytest.mark.parametrize(
    "kind,directive", [("slurm", "#SBATCH"), ("pbs", "#PBS"), ("lsf", "#BSUB")]
)
def test_jobqueue_configs_render_job_scripts(kind, directive):
    cfg = config([f"cluster={kind}", "cluster.job.walltime=01:00:00", "cluster.job.cores=4"])
    cluster = jobqueue_cluster(cfg.cluster)  # not scaled: no job is submitted
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert script.count(directive) >= 3 and "distributed.cli.dask_worker" in script
    assert "--nthreads 4" in script


def test_local_cluster_config_composes():
    cfg = config(["cluster=local", "cluster.n_workers=2"])
    assert cfg.cluster.kind == "local" and cfg.cluster.n_workers == 2
    assert config([]).cluster.kind == "none"
    assert Path(config_dir(), "cluster", "address.yaml").is_file()
