"""Block-wise prediction with ``cluster=slurm`` on a real single-node SLURM: dask-jobqueue
submits the worker job with ``sbatch``, the job's Dask worker takes the blocks, and the labels
equal those of the in-process run; a job SLURM refuses, or a missing submit command, is a
usage error at once, not a wait for workers that never come."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from tests.prediction.test_predict_zarr import make_input, save_checkpoint
from unet_seg.blockwise.engine import make_cluster
from unet_seg.config import config_dir
from unet_seg.errors import UsageError
from unet_seg.io.zarr.store import open_zarr
from unet_seg.prediction.batch import predict

pytest.importorskip("dask_jobqueue")
TINY_2D = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [4, 8],
           "padding": "valid", "norm": None, "dropout": 0.0}  # fmt: skip


def config(args: list[str]):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("predict", overrides=args)


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_cluster_labels_equal_in_process(tmp_path, slurm):
    ckpt = save_checkpoint(tmp_path / "model2d.ckpt", TINY_2D, seed=4)
    data = np.random.default_rng(2).integers(0, 4000, (4, 64, 48)).astype(np.uint16)
    source = make_input(tmp_path, data)
    common = [f"input={source}", f"checkpoint={ckpt}", "tile_size=24", "block_size=[2,32,32]",
              "progress=false"]  # fmt: skip
    assert predict(config([*common, f"output_dir={tmp_path / 'ref'}"]))["failed"] == 0
    expected = open_zarr(tmp_path / "ref" / "raw_labels.ome.zarr")[...]

    logs = tmp_path / "jobs"
    # One small job on the node: 1 core, 2 GB, 10 minutes (the defaults ask for a real node).
    on_slurm = [f"output_dir={tmp_path / 'out'}", "cluster=slurm", "cluster.jobs=1",
                f"cluster.job.queue={slurm.partition}", "cluster.job.cores=1",
                "cluster.job.memory=2GB", "cluster.job.walltime=00:10:00",
                f"cluster.job.log_directory={logs}", "cluster.wait_for_workers=180"]  # fmt: skip
    entry = predict(config([*common, *on_slurm]))["files"][0]
    assert entry["status"] == "ok", (entry, slurm.logs())
    assert entry["blocks"]["computed"] == entry["blocks"]["total"] > 1
    labels = open_zarr(tmp_path / "out" / "raw_labels.ome.zarr")[...]
    np.testing.assert_array_equal(labels, expected)
    # Closing the engine cancelled the worker's job: nothing is left in the queue.
    end = time.monotonic() + 60
    while slurm.run("squeue", "-h", "-o", "%i %T").strip() and time.monotonic() < end:
        time.sleep(1)
    assert slurm.run("squeue", "-h", "-o", "%i %T").strip() == ""
    # The worker really ran as a SLURM job: its job wrote its output log in the log directory.
    outputs = list(logs.glob("*.out")) + list(logs.glob("*.err"))
    assert outputs and any("dask_worker" in p.read_text() or "distributed" in p.read_text()
                           for p in outputs), [p.name for p in outputs]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "command"), [("slurm", "sbatch"), ("pbs", "qsub"), ("lsf", "bsub")]
)
def test_a_missing_submit_command_is_a_usage_error(tmp_path, monkeypatch, kind, command):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scheduler's commands at all
    with pytest.raises(UsageError, match=rf"cluster={kind}: '{command}' not found"):
        make_cluster(config([f"cluster={kind}"]).cluster)


@pytest.mark.slow
@pytest.mark.slurm
def test_a_job_slurm_refuses_is_a_usage_error_with_its_reason(slurm):
    # The defaults ask for 8 cores and 32 GB; the node has 2 CPUs.
    with pytest.raises(UsageError, match=r"sbatch refuses the worker job .*not available"):
        make_cluster(config(["cluster=slurm", "cluster.jobs=1"]).cluster)
    assert slurm.run("squeue", "-h").strip() == ""  # nothing was submitted
