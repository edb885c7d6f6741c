"""``unet-seg-tune``: the validation split found from the checkpoint, the result stored in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from unet_seg.config import config_dir
from unet_seg.data import samples
from unet_seg.instances.methods import TUNED_KEY, stored_tuning
from unet_seg.io import Volume, write_volume
from unet_seg.training.module import SegmentationModule
from unet_seg.tuning.write_back import class_roles, tune_command

TINY = {"spatial_dims": 2, "in_channels": 1, "num_classes": 3, "features": [4, 8],
        "padding": "valid", "norm": None, "dropout": 0.0}  # fmt: skip


def sample_data(root: Path) -> dict:
    """Three 64 x 64 nuclei images with labels and instances; the last validates."""
    for i, rng in enumerate(np.random.default_rng(5).spawn(3)):
        inst, profile = samples.nuclei((64, 64), (6.0, 9.0), 6, rng)
        image = np.round(samples.fluorescence(profile, rng, 1.5) * 255).astype(np.uint8)
        write_volume(root / "images" / f"n{i}.tif", Volume(image))
        write_volume(root / "labels" / f"n{i}.tif", Volume(samples.separated_mask(inst)))
        write_volume(root / "instances" / f"n{i}.tif", Volume(inst.astype(np.uint16)))
    return {"images": str(root / "images"), "labels": str(root / "labels"),
            "instances": str(root / "instances"), "spatial_dims": 2, "num_classes": 2,
            "patch_size": [36, 36], "val_names": ["n2"], "target": "boundary"}  # fmt: skip


def save_checkpoint(path: Path, data: dict | None) -> Path:
    module = SegmentationModule(model=TINY)
    content = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
               "pytorch-lightning_version": "2.4.0"}  # fmt: skip
    if data is not None:
        content["datamodule_hyper_parameters"] = data
    torch.save(content, path)
    return path


def config(**overrides):
    args = [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("tune", overrides=[*args, "progress=false", "device=cpu"])


def test_tune_stores_plain_values_that_load_with_weights_only(tmp_path):
    ckpt = save_checkpoint(tmp_path / "model.ckpt", sample_data(tmp_path / "data"))
    result = tune_command(config(checkpoint=ckpt, methods="[cc,seeded]"))
    assert result["method"] in ("cc", "seeded") and set(result["methods"]) == {"cc", "seeded"}
    assert result["roles"] == class_roles("boundary", 1)
    assert 0.0 <= result["score"] <= 1.0
    assert result["tta"] is False  # predicted without TTA, as predict does by default
    loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert loaded[TUNED_KEY] == result == stored_tuning(ckpt)
    assert "state_dict" in loaded  # the rest is kept
    SegmentationModule.load_from_checkpoint(ckpt)  # and Lightning still restores the module


def test_tune_records_whether_it_predicted_with_tta(tmp_path):
    ckpt = save_checkpoint(tmp_path / "model.ckpt", sample_data(tmp_path / "data"))
    plain = tune_command(config(checkpoint=ckpt, methods="[cc]", output=tmp_path / "a.ckpt"))
    tta = tune_command(config(checkpoint=ckpt, methods="[cc]", output=tmp_path / "b.ckpt",
                              tta=True))  # fmt: skip
    assert plain["tta"] is False and tta["tta"] is True
    assert stored_tuning(tmp_path / "b.ckpt")["tta"] is True


def test_tune_command_line_says_which_predictions_the_values_fit(tmp_path, capsys):
    from unet_seg.cli import tune as tune_cli

    ckpt = save_checkpoint(tmp_path / "model.ckpt", sample_data(tmp_path / "data"))
    tune_cli.run(config(checkpoint=ckpt, methods="[cc]", tta=True))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"unet-seg-tune: cc stored in {ckpt} (for unet-seg-predict tta=true)"


def test_tune_to_another_file_and_with_overridden_data(tmp_path):
    data = sample_data(tmp_path / "data")
    ckpt = save_checkpoint(tmp_path / "model.ckpt", {**data, "images": "/moved/away"})
    with pytest.raises(FileNotFoundError, match="/moved/away"):
        tune_command(config(checkpoint=ckpt, methods="[cc]"))
    out = tmp_path / "tuned.ckpt"
    cfg = config(checkpoint=ckpt, methods="[cc]", output=out, **{"data.images": data["images"]})
    tune_command(cfg)
    assert stored_tuning(out)["method"] == "cc" and stored_tuning(ckpt) is None


def test_tune_needs_data_settings(tmp_path):
    ckpt = save_checkpoint(tmp_path / "model.ckpt", None)
    with pytest.raises(ValueError, match="no data settings"):
        tune_command(config(checkpoint=ckpt))
    with pytest.raises(FileNotFoundError, match="not found"):
        tune_command(config(checkpoint=tmp_path / "none.ckpt"))


def test_tune_rejects_an_unknown_method_or_objective_before_reading_data(tmp_path):
    ckpt = save_checkpoint(tmp_path / "model.ckpt", {**sample_data(tmp_path / "d"), "images": "/x"})
    with pytest.raises(ValueError, match=r"method must be one of .* got 'foo'"):
        tune_command(config(checkpoint=ckpt, methods="[cc,foo]"))
    with pytest.raises(ValueError, match=r"objective must be one of .* got 'bar'"):
        tune_command(config(checkpoint=ckpt, objective="bar"))
    # a tile of 0 is refused as predict refuses it, not taken for the default
    for tile, message in (("0", "tile_size must be a whole number >= 1, got 0"),
                          ("[64,0]", "tile_size must be a whole number >= 1, got 0"),
                          ("abc", "tile_size must be a whole number >= 1, got 'abc'")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            tune_command(config(checkpoint=ckpt, tile_size=tile))


def test_class_roles():
    assert class_roles("classes", 0) == {"foreground_class": 0, "background_class": 1,
                                         "interior_class": 0}  # fmt: skip
    assert class_roles("classes", 2)["background_class"] == 0


def test_tuning_after_training_tunes_only_what_the_run_published(tmp_path):
    from omegaconf import OmegaConf

    from unet_seg.cli.train import tune_published
    from unet_seg.training.train import TrainingRun

    published = save_checkpoint(tmp_path / "model.ckpt", sample_data(tmp_path / "data"))
    best = tmp_path / "run" / "best.ckpt"
    cfg = OmegaConf.create({"tune_instances": "ap", "publish_checkpoint": str(published)})
    nothing = TrainingRun({}, None, None)  # e.g. fast_dev_run: no best, nothing published
    assert tune_published(cfg, nothing) is None and stored_tuning(published) is None
    worse = TrainingRun({}, best, None)  # a better model was there already: not published
    assert tune_published(cfg, worse) is None and stored_tuning(published) is None
    made = TrainingRun({}, best, published)
    assert tune_published(OmegaConf.merge(cfg, {"tune_instances": None}), made) is None
    assert stored_tuning(published) is None
    result = tune_published(cfg, made)
    assert result["objective"] == "ap" and stored_tuning(published) == result
