"""Planning the nnU-Net raw datasets the data tests make, end to end: fingerprint, plan, files,
and a data module built from the written experiment."""

from __future__ import annotations

import pytest

from tests.data.test_own_data import nnunet_dataset
from tests.planning.test_experiment_file import compose_planned
from unet_seg.planning.fingerprint import Fingerprint
from unet_seg.planning.run import plan_and_write

MACHINE = {"device": "cpu", "memory_gib": 2}


@pytest.mark.parametrize(
    ("spatial", "channels", "ending", "dims"),
    [((20, 28, 28), 2, ".nii.gz", 2), ((40, 44), 1, ".png", 2), ((24, 32, 32), 1, ".nii.gz", 3)],
)
def test_nnunet_raw_datasets_are_planned(tmp_path, rng, spatial, channels, ending, dims):
    root = nnunet_dataset(tmp_path / "Dataset007_Cells", rng, spatial, channels, ending)
    cfg = {"data": {"root": str(root)}, "budget": "10min", "machine": MACHINE,
           "out_dir": str(tmp_path / "plans")}  # fmt: skip
    planned = plan_and_write(cfg, "cells")
    fp = Fingerprint.read(planned.fingerprint_path)
    assert fp.channels == channels and fp.source["num_classes"] == 3
    assert fp.labels["kind"] == "classes" and fp.labels["values"] == [0, 1, 2]  # 3: ignored
    assert 0.0 < fp.labels["ignored_fraction"] < 0.5
    settings = planned.plan.settings()
    # (20, 28, 28) at 2.0 x 0.5 x 0.5: too few slices for a net that keeps z; 24 slices suffice
    assert settings["model.spatial_dims"] == dims
    assert settings["model.inplane_pooling"] == (len(spatial) == 3 and dims == 3)
    run_cfg = compose_planned(tmp_path / "plans", "cells", tmp_path)
    assert run_cfg.data._target_ == "unet_seg.data.nnunet.nnunet_datamodule"
    assert run_cfg.data.root == str(root) and run_cfg.data.spatial_dims == dims

    from unet_seg.training.train import build_datamodule, build_module, follow_the_data

    datamodule = build_datamodule(run_cfg)
    follow_the_data(run_cfg, datamodule)
    assert (run_cfg.model.in_channels, run_cfg.model.num_classes) == (channels, 3)
    assert all(s > 0 for s in build_module(run_cfg).model.output_shape(run_cfg.data.patch_size))
