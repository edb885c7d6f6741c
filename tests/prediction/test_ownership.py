"""Predict replaces only outputs it wrote: a user's file or store under an output's name is
refused with one line (``overwrite=true`` replaces it), and a shared output folder loses nothing
of another program's."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.cli.test_errors import predict_args, run_script
from tests.prediction.test_predict import TINY_2D, save_checkpoint
from tests.prediction.test_predict import config as predict_config
from tests.prediction.test_predict_zarr import TINY_3D, make_input
from unet_seg.errors import UsageError
from unet_seg.io.zarr.output import write_zarr
from unet_seg.prediction.batch import predict
from unet_seg.prediction.ownership import REGISTER_NAME, OutputRegister


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("own")
    save_checkpoint(folder / "model.ckpt", TINY_2D)
    save_checkpoint(folder / "model3d.ckpt", TINY_3D)
    image = np.random.default_rng(0).integers(0, 1000, (40, 50)).astype(np.uint16)
    tifffile.imwrite(folder / "a.tif", image)
    return folder


def config(files: Path, out: Path, **overrides):
    return predict_config(input=files / "a.tif", output_dir=out, checkpoint=files / "model.ckpt",
                          **{"outputs.preview": False, **overrides})  # fmt: skip


def test_a_users_file_at_an_output_name_is_refused_then_replaced_on_request(
    files, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_labels.tif").write_bytes(b"my own analysis")
    args = predict_args(files, output_dir=out)
    code, lines = run_script("predict", args, monkeypatch, capsys)
    assert code == 2 and lines == [
        f"unet-seg-predict: {out / 'a_labels.tif'}: exists and was not written by unet-seg; "
        "move it away, or pass overwrite=true to replace it"
    ]
    assert (out / "a_labels.tif").read_bytes() == b"my own analysis"
    assert predict(config(files, out, overwrite=True))["ok"] == 1
    assert tifffile.imread(out / "a_labels.tif").shape == (40, 50)


def test_a_users_zarr_store_at_an_output_name_is_left_whole(files, tmp_path):
    data = np.random.default_rng(1).integers(0, 1000, (6, 24, 24)).astype(np.uint16)
    source = make_input(tmp_path, data)  # raw.ome.zarr
    out = tmp_path / "out"
    theirs = write_zarr(out / "raw_labels.ome.zarr", np.ones((2, 2), np.uint8), chunks=(2, 2))
    before = sorted(p.relative_to(theirs) for p in Path(theirs).rglob("*"))
    cfg = predict_config(input=source, output_dir=out, checkpoint=files / "model3d.ckpt")
    with pytest.raises(UsageError, match=r"raw_labels\.ome\.zarr: exists and was not written"):
        predict(cfg)
    assert sorted(p.relative_to(theirs) for p in Path(theirs).rglob("*")) == before


def test_our_own_outputs_are_replaced_by_a_run_with_other_settings(files, tmp_path):
    out = tmp_path / "out"
    assert predict(config(files, out))["ok"] == 1
    again = predict(config(files, out, tta=True))  # other settings: predicted again, not refused
    assert again["ok"] == 1 and again["skipped"] == 0
    assert predict(config(files, out, tta=True))["skipped"] == 1


def test_our_output_swapped_for_a_users_file_is_refused(files, tmp_path):
    out = tmp_path / "out"
    predict(config(files, out))
    time.sleep(0.01)
    tifffile.imwrite(out / "a_labels.tif", np.zeros((40, 50), np.uint8))  # same name, theirs
    with pytest.raises(UsageError, match=r"a_labels\.tif: exists and was not written"):
        predict(config(files, out, tta=True))


def test_an_output_a_killed_run_published_is_still_ours(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = {"labels": out / "a_labels.tif"}
    OutputRegister(out).claim(target)  # the run was killed after this, before it settled
    tifffile.imwrite(target["labels"], np.zeros((40, 50), np.uint8))
    with open(out / REGISTER_NAME, "a") as register:
        register.write('{"event": "settled", "pa')  # and a line torn by the kill
    assert predict(config(files, out))["ok"] == 1


def test_outputs_an_older_version_listed_in_its_summary_are_ours(files, tmp_path):
    out = tmp_path / "out"
    predict(config(files, out))
    (out / REGISTER_NAME).unlink()  # versions before the register kept only the summary
    assert predict(config(files, out, tta=True))["ok"] == 1
    summary = json.loads((out / "predict_summary.json").read_text())
    summary.pop("provenance")
    (out / "predict_summary.json").write_text(json.dumps(summary))
    (out / REGISTER_NAME).unlink()
    with pytest.raises(UsageError, match="not written by unet-seg"):
        predict(config(files, out))


def test_a_shared_output_folder_loses_nothing_of_another_programs(files, tmp_path):
    out = tmp_path / "shared"
    theirs = [out / ".tmp-ab12cd34-notes.json", out / ".a_labels.tif.partial-0123abcd",
              out / ".old-0123abcd-other.zarr" / "zarr.json",
              out / "sub" / ".unet-seg-tmp-ab12cd34-x.json",  # ours by name, but not our folder
              out / "cache" / "chunk.0123456789abcdef0123456789abcdef.partial"]  # fmt: skip
    old = time.time() - 3600
    for path in theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("theirs")
        os.utime(path, (old, old))
    assert predict(config(files, out))["ok"] == 1
    assert all(p.read_text() == "theirs" for p in theirs)
