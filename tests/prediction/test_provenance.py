"""What ran the network is in the run's summary; a rerun in another precision predicts again."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytorch_lightning as pl
import tifffile
import torch
from hydra import compose, initialize_config_dir

from unet_seg.config import config_dir
from unet_seg.prediction.batch import predict
from unet_seg.prediction.provenance import SUMMARY_NAME, runner_record
from unet_seg.training.module import SegmentationModule

TINY_2D = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [4, 8],
           "padding": "same", "norm": None, "dropout": 0.0}  # fmt: skip


def test_runner_record_names_runtime_precision_threads_and_memory_format():
    runner = SimpleNamespace(runtime="compile", precision="bf16",
                             memory_format=torch.channels_last)  # fmt: skip
    record = runner_record(runner, "requested")
    assert record == {"runtime": "compile", "precision": "bf16", "precision_reason": "requested",
                      "threads": torch.get_num_threads(), "channels_last": True}  # fmt: skip


def test_the_summary_records_the_runner_and_precision_is_in_the_fingerprint(tmp_path):
    torch.manual_seed(0)
    module = SegmentationModule(model=TINY_2D, normalization={"low": 1.0, "high": 99.8})
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, ckpt)  # fmt: skip
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "in.tif", rng.integers(0, 4000, (2, 32, 40), dtype=np.uint16))
    threads = torch.get_num_threads()

    def run(precision: str) -> dict:
        overrides = [f"input={tmp_path / 'in.tif'}", f"output_dir={tmp_path / 'out'}",
                     f"checkpoint={ckpt}", f"precision={precision}", "threads=1",
                     "progress=false", "outputs.preview=false"]  # fmt: skip
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return predict(compose("predict", overrides=overrides))

    try:
        summary = run("float32")
        assert summary["runner"] == {"runtime": "torch", "precision": "float32",
                                     "precision_reason": "requested", "threads": 1,
                                     "channels_last": True}  # fmt: skip
        written = json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())
        assert written["runner"] == summary["runner"]
        assert run("float32")["skipped"] == 1
        again = run("bf16")  # other outputs: predicted again, not kept as stale
        assert (again["ok"], again["runner"]["precision"]) == (1, "bf16")
    finally:
        torch.set_num_threads(threads)
