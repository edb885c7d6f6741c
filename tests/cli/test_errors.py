"""Every console script answers a user's mistake with one line on stderr and no traceback:
exit 2 for a command that cannot work as given, 1 for a file that failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hydra.errors import ConfigCompositionException

from tests.prediction.test_predict import TINY_2D, save_checkpoint
from unet_seg.cli import evaluate as evaluate_cli
from unet_seg.cli import predict as predict_cli
from unet_seg.cli import summary as summary_cli
from unet_seg.cli import train as train_cli
from unet_seg.cli import tune as tune_cli
from unet_seg.cli.errors import one_line
from unet_seg.errors import InputNotFoundError
from unet_seg.io import write_volume

SCRIPTS = {"predict": predict_cli, "evaluate": evaluate_cli, "summary": summary_cli,
           "train": train_cli, "tune": tune_cli}  # fmt: skip


class Hostile:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with a model, an image and the kinds of broken files users have."""
    save_checkpoint(tmp_path / "model.ckpt", TINY_2D)
    image = np.random.default_rng(0).integers(0, 1000, (40, 50)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", image)
    data = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "trunc.tif").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "garbage.ckpt").write_bytes(b"garbage" * 10)
    torch.save({"x": Hostile()}, tmp_path / "hostile.ckpt")
    return tmp_path


def run_script(name: str, args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """Run a console script in this process; its exit code and the lines it wrote to stderr."""
    monkeypatch.setattr(sys, "argv", [f"unet-seg-{name}", *args])
    with pytest.raises(SystemExit) as exit_info:
        SCRIPTS[name].main()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err.splitlines()


def predict_args(files: Path, **overrides: str) -> list[str]:
    values = {"input": files / "a.tif", "checkpoint": files / "model.ckpt",
              "output_dir": files / "out", "progress": "false", **overrides}  # fmt: skip
    return [f"{key}={value}" for key, value in values.items()]


@pytest.mark.parametrize(
    ("name", "args", "code", "says"),
    [
        ("predict", ["foo=bar"], 2, "Could not override 'foo'"),
        ("predict", ["input=["], 2, "no viable alternative"),
        ("predict", ["checkpoint=???"], 2, "Missing mandatory value: checkpoint"),
        ("predict", ["input={files}/nothing_here"], 2, "nothing_here: no image files found"),
        ("predict", ["input={files}/notes.txt"], 1, "notes.txt: unsupported file type .txt"),
        ("predict", ["checkpoint={files}/missing.ckpt"], 2, "missing.ckpt not found"),
        ("predict", ["checkpoint={files}/garbage.ckpt"], 1, "garbage.ckpt: not a PyTorch"),
        ("predict", ["checkpoint={files}/hostile.ckpt"], 1, "hostile.ckpt: refused"),
        ("predict", ["input={files}/cut"], 1, "failed: {files}/cut/trunc.tif: "),
        ("evaluate", ["pred_dir={files}/none", "output_dir={files}"], 2, "none: no such folder"),
        ("summary", ["input_size=100"], 2, "input size 100 on axis 0 does not fit"),
        ("summary", ["model=nope"], 2, "Available options in 'model': unet_paper"),
        ("train", ["data=nope", "paths.runs_dir={files}/runs"], 2, "Could not find 'data/nope'"),
        ("train", ["trainer.max_epochs=abc", "paths.runs_dir={files}/runs"], 2,
         "trainer.max_epochs must be a whole number >= -1, got 'abc'"),
        ("train", ["experiment=own_2d", "data.images={files}/a.tif", "data.labels={files}/a.tif",
                   "data.label_map=ids", "paths.runs_dir={files}/runs"], 2,
         "data: label_map must map stored values to classes, or be 'objects', got 'ids'"),
        ("predict", ["cluster=address"], 2, "cluster=address needs cluster.address=tcp://"),
        ("predict", ["outputs.instances=true", "instances.method=magic"], 2,
         "instances.method must be one of"),
        ("predict", ["outputs.instances=true", "instances.min_size=-3"], 2,
         "instances.min_size must be >= 0 voxels, got -3"),
        ("predict", ["outputs.instances=true", "instances.min_distance=0"], 2,
         "instances.min_distance must be >= 1 voxel, got 0"),
        ("predict", ["batch_size=abc"], 2, "batch_size must be a whole number, got 'abc'"),
        ("predict", ["tile_size=[64,q]"], 2, "tile_size must be a whole number >= 1, got 'q'"),
        ("predict", ["overlap=lots"], 2, "overlap must be a number, got 'lots'"),
        ("predict", ["channel=1.5"], 2, "channel must be a whole number, got 1.5"),
        ("predict", ["channel=-1"], 2, "channel must be >= 0 (or null: all channels), got -1"),
        ("predict", ["tile_size=0"], 2, "tile_size must be a whole number >= 1, got 0"),
        ("predict", ["overlap=1.5"], 2, "overlap must be in [0, 1), got 1.5"),
        ("predict", ["block_size=[a,8,8]"], 2, "block_size must be a whole number, got 'a'"),
        ("predict", ["outputs.instances=true", "instances.min_size=abc"], 2,
         "instances.min_size must be a whole number, got 'abc'"),
        ("predict", ["outputs.instances=true", "instances.seed_threshold=high"], 2,
         "instances.seed_threshold must be a number, got 'high'"),
        ("tune", ["checkpoint={files}/missing.ckpt"], 2, "missing.ckpt not found"),
        ("tune", ["checkpoint={files}/model.ckpt"], 2, "stores no data settings"),
        ("tune", ["checkpoint={files}/garbage.ckpt"], 1, "garbage.ckpt: not a PyTorch"),
        ("tune", ["checkpoint={files}/model.onnx"], 2,
         "model.onnx: tune the training checkpoint (.ckpt) it was exported from"),
        ("tune", ["checkpoint={files}/model.ckpt", "tile_size=0"], 2,
         "tile_size must be a whole number >= 1, got 0"),
        ("summary", ["input_size=abc"], 2, "input_size must be a whole number >= 1, got 'abc'"),
        ("summary", ["input_size=[-5,5]"], 2, "input_size must be a whole number >= 1, got -5"),
        ("evaluate", ["pred_dir={files}", "gt_dir={files}", "num_classes=0"], 2,
         "num_classes (background and a class) must be a whole number >= 2, got 0"),
        ("train", ["experiment=sample_2d", "data.batch_size=0", "paths.runs_dir={files}/runs"], 2,
         "data: batch_size must be a whole number >= 1, got 0"),
        ("train", ["experiment=sample_2d", "data.patch_size=[101,101]",
                   "paths.runs_dir={files}/runs"], 2,
         "data.patch_size [101, 101] does not suit the network: input size 101 on axis 0"),
        ("train", ["experiment=sample_2d", "data.boundary_width=nan",
                   "paths.runs_dir={files}/runs"], 2,
         "data: boundary_width must be a number > 0 (voxels of the finest axis), got nan"),
    ],
)  # fmt: skip
def test_one_line_per_problem(
    files: Path, monkeypatch, capsys, name: str, args: list[str], code: int, says: str
) -> None:
    args = [a.format(files=files) for a in args]
    if name == "predict":
        args = predict_args(files, **dict(a.split("=", 1) for a in args))
    got, lines = run_script(name, args, monkeypatch, capsys)
    assert got == code, lines
    problems = [line for line in lines if line.startswith(f"unet-seg-{name}: ")]
    assert len(problems) == len(lines) == 1, lines
    assert says.format(files=files) in problems[0]
    assert "Traceback" not in problems[0] and "HYDRA_FULL_ERROR" not in problems[0]


@pytest.mark.parametrize(
    ("name", "args"),
    [("predict", ["checkpoint={files}/model.ckpt", "output_dir={files}/out"]),
     ("train", ["experiment=sample_2d", "paths.runs_dir={files}/runs"])],
)  # fmt: skip
def test_samples_missing_from_an_install_say_how_to_make_them(
    files: Path, monkeypatch, capsys, name: str, args: list[str]
) -> None:
    """A wheel installs no data_samples/: the default commands name the folder they looked in
    and how to write the samples, in one line."""
    missing = files / "site-packages-like" / "data_samples"
    args = [a.format(files=files) for a in args] + [f"paths.data_dir={missing}"]
    got, lines = run_script(name, args, monkeypatch, capsys)
    assert got != 0 and len(lines) == 1, lines
    assert str(missing) in lines[0]
    assert "`python -m unet_seg.data.samples --out DIR` writes them" in lines[0]
    assert "paths.data_dir=DIR" in lines[0]


def test_traceback_flag_and_hydra_full_error(files: Path, monkeypatch, capsys) -> None:
    args = predict_args(files, checkpoint=str(files / "missing.ckpt"), traceback="true")
    monkeypatch.setattr(sys, "argv", ["unet-seg-predict", *args])
    with pytest.raises(InputNotFoundError, match=r"missing\.ckpt"):
        predict_cli.main()
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["unet-seg-predict", "foo=bar"])
    with pytest.raises(ConfigCompositionException):
        predict_cli.main()


@pytest.mark.parametrize("name", ["predict", "evaluate"])
def test_unwritable_output_folder(files: Path, readonly_dir: Path, monkeypatch, capsys, name: str):
    if name == "predict":
        args = predict_args(files, output_dir=str(readonly_dir))
    else:
        (files / "preds").mkdir()
        tifffile.imwrite(files / "preds" / "a_labels.tif", np.zeros((4, 5), np.uint8))
        args = [f"pred_dir={files / 'preds'}", f"gt_dir={files / 'preds'}",
                f"output_dir={readonly_dir}", "progress=false"]  # fmt: skip
    code, lines = run_script(name, args, monkeypatch, capsys)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(f"unet-seg-{name}: {readonly_dir}")
    assert lines[0].endswith(("Read-only file system", "Permission denied")), lines
    assert list(readonly_dir.iterdir()) == []


def test_env_is_restored_after_a_run(files: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    run_script("predict", ["foo=bar"], monkeypatch, capsys)
    assert "HYDRA_FULL_ERROR" not in os.environ


def test_one_line_of_an_os_error() -> None:
    err = PermissionError(13, "Permission denied", "/data/out")
    assert one_line(err) == "/data/out: Permission denied"


def test_console_script_in_a_subprocess() -> None:
    # The real entry point: exit code, one line, and no traceback from the interpreter.
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, "-m", "unet_seg.cli.summary", "input_size=100"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "unet-seg-summary: input size 100 on axis 0 does not fit a 5-level U-Net in valid mode "
        "(every pooled feature map must have an even size); nearest valid sizes: 188"
    ]


def test_ctrl_c_before_the_task_reports_errors(tmp_path, monkeypatch, capsys) -> None:
    # Ctrl-C while the task still imports torch (before reported_errors is active): one line, 130.
    def interrupted_while_importing(cfg) -> None:
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tune_cli, "run", interrupted_while_importing)
    code, err = run_script("tune", ["checkpoint=model.ckpt"], monkeypatch, capsys)
    assert (code, err) == (130, ["unet-seg-tune: interrupted"])


def test_training_problems_are_named_before_training_starts(tmp_path, monkeypatch, capsys):
    """A folder mixing grey and colour images, and a ckpt_path that is no training checkpoint:
    one line naming the file before any work (no traceback, no interrupted.ckpt left behind,
    never PyTorch's advice to turn the safe loader off)."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    mask = np.zeros((40, 44), np.uint8)
    mask[10:30, 12:30] = 1  # two classes: training would start
    for name in ("a", "b", "c"):
        write_volume(labels / f"{name}.tif", mask)
        write_volume(images / f"{name}.tif", np.zeros((40, 44), np.uint8))
    tifffile.imwrite(images / "c.tif", np.zeros((40, 44, 3), np.uint8), photometric="rgb")
    runs = tmp_path / "runs"
    common = ["experiment=own_2d", f"data.images={images}", f"data.labels={labels}",
              f"paths.runs_dir={runs}", "trainer.max_epochs=1"]  # fmt: skip
    code, lines = run_script("train", common, monkeypatch, capsys)
    assert code == 1 and len(lines) == 1, lines
    assert f"{images / 'c.tif'}: 3 channel(s), but {images / 'a.tif'} has 1" in lines[0]
    assert not list(runs.rglob("*.ckpt"))

    write_volume(images / "c.tif", np.zeros((40, 44), np.uint8))  # one kind again
    torch.save({"state_dict": {}}, tmp_path / "weights_only.ckpt")  # no epoch: not resumable
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes((tmp_path / "weights_only.ckpt").read_bytes()[:40])
    cases = [(images / "a.tif", "not a PyTorch checkpoint"), (cut, "not a readable checkpoint"),
             (tmp_path / "weights_only.ckpt", "not a training checkpoint to resume")]  # fmt: skip
    for bad, says in cases:
        code, lines = run_script("train", [*common, f"ckpt_path={bad}"], monkeypatch, capsys)
        assert code == 1 and len(lines) == 1, lines
        assert lines[0].startswith(f"unet-seg-train: {bad}: ") and says in lines[0], lines
        assert "weights_only=False" not in lines[0] and "Traceback" not in lines[0]
    assert not list(runs.rglob("*.ckpt"))
