"""Training on a real single-node SLURM: ``trainer=ddp`` with two ``srun`` tasks as the two
ranks, and a preemption (SIGUSR1) that Lightning's SLURM environment answers by saving
``hpc_ckpt_1.ckpt`` and requeueing the job, which then resumes from it and finishes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unet_seg.config import PROJECT_ROOT
from unet_seg.training.module import SegmentationModule

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
# A narrow sample_2d run on CPU: small batches, no worker processes, no overlays or TensorBoard.
QUICK = ["experiment=sample_2d", "model.features=[4,8,16,32]", "trainer.accelerator=cpu",
         "trainer.precision=32-true", "data.num_workers=0", "logger=csv",
         "callbacks.overlays=null", "+trainer.num_sanity_val_steps=0"]  # fmt: skip


@pytest.fixture(autouse=True)
def _needs_samples(samples_dir: Path) -> None:
    if not (samples_dir / "2d" / "images").is_dir():
        pytest.skip("data_samples/ not generated (python -m unet_seg.data.samples)")


# The documented recipe (docs/guides/training.md): the run directory named after the job, not
# the time, so every rank, and a requeued job, writes and finds the same folder.
RUN_DIR = "hydra.run.dir=${paths.runs_dir}/${name}/slurm-${oc.env:SLURM_JOB_ID}"


def train_command(runs: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "unet_seg.cli.train", *QUICK, RUN_DIR, f"paths.runs_dir={runs}",
            *overrides]  # fmt: skip


def test_ddp_two_srun_tasks_train_and_the_checkpoint_predicts(tmp_path, slurm):
    runs = tmp_path / "runs"
    limits = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2",
              "+trainer.limit_val_batches=1"]  # fmt: skip
    train = train_command(runs, "trainer=ddp", "trainer.devices=2", *limits)
    # --ntasks-per-node, not -n: Lightning refuses SLURM_NTASKS > 1 without SLURM_NTASKS_PER_NODE.
    command = ["srun", "-N1", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem=4G",
               f"--chdir={tmp_path}", "--time=00:10:00", "--job-name=ddp-test", *train]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:] + slurm.logs()
    # Two SLURM tasks are the two ranks: Lightning read them from SLURM, spawning none itself.
    assert "distributed_backend=gloo" in output
    assert "MEMBER: 1/2" in output and "MEMBER: 2/2" in output, output[-3000:]
    # One run directory for both ranks, named after the job.
    (out,) = [p for p in (runs / "sample_2d").iterdir() if p.is_dir()]
    assert out.name.startswith("slurm-") and out.name[6:].isdigit()
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["global_step"] == 2 and summary["best_checkpoint"]

    module = SegmentationModule.load_from_checkpoint(
        summary["best_checkpoint"], map_location="cpu", weights_only=True
    ).eval()
    assert module.hparams.model["features"] == [4, 8, 16, 32]
    image = torch.rand(1, 1, 140, 140)
    with torch.no_grad():
        logits = module(image)
    # Valid padding: the output is the input less the network's margin, 2 classes, finite.
    assert logits.shape[:2] == (1, 2) and logits.shape[2] == logits.shape[3] < 140
    assert bool(torch.isfinite(logits).all())


def _wait_for(path_glob: Path, timeout: float) -> list[Path]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = sorted(path_glob.parent.glob(path_glob.name))
        if found:
            return found
        time.sleep(0.5)
    return []


def test_sigusr1_saves_requeues_and_resumes(tmp_path, slurm):
    runs = tmp_path / "runs"
    log = tmp_path / "job.log"
    epochs = 4
    train = train_command(runs, f"trainer.max_epochs={epochs}", "data.samples_per_epoch=16",
                          "data.val_names=[nuclei_08]")  # fmt: skip
    # As docs/guides/training.md has it: srun in the batch script, one task, --requeue.
    script = f"#!/bin/bash\nexport PYTHONPATH={PROJECT_ROOT}\nsrun {shlex.join(train)}\n"
    options = ["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=4G",
               "--time=00:15:00", "--requeue", "--open-mode=append", f"--output={log}",
               f"--chdir={tmp_path}", "--job-name=preempt-test"]  # fmt: skip
    job = slurm.sbatch(script, *options)
    out = runs / "sample_2d" / f"slurm-{job}"
    # After the first epoch's checkpoint, as SLURM would before the time limit (--signal=USR1@s):
    # to the job's steps, that is the srun'd training.
    assert _wait_for(out / "checkpoints" / "epoch000*.ckpt", 300), (
        log.read_text() if log.exists() else ""
    ) + slurm.logs()
    slurm.run("scancel", "--signal=USR1", job)
    hpc = out / "hpc_ckpt_1.ckpt"
    assert _wait_for(hpc, 60), log.read_text()
    state = slurm.wait(job, 600)
    text = log.read_text()
    assert state == "COMPLETED", text[-3000:] + slurm.logs()
    assert slurm.job_fields(job)["Restarts"] == "1"
    assert "Requeued SLURM job" in text or "requeing job" in text, text[-3000:]
    saved_epoch = torch.load(hpc, map_location="cpu", weights_only=False)["epoch"]
    assert 1 <= saved_epoch < epochs
    assert f"Restoring states from the checkpoint path at {hpc}" in text, text[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["epochs"] == epochs and summary["best_checkpoint"]
    assert np.isfinite(summary["metrics"]["val/dice"])
