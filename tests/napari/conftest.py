"""Fixtures of the napari plugin's tests: a tiny checkpoint, a small stack, and a virtual display.

The viewer tests need an X display: :func:`display` starts ``Xvfb`` on a free display number
(``-displayfd``) for the session and points Qt at it (``QT_QPA_PLATFORM=xcb``), after checking
in a subprocess that Qt can open a window there (a missing Qt library aborts the process, which
must not take the test run with it). Without Xvfb, or where Qt cannot start, the tests that need
it skip and say why; ``.ci/setup`` installs the Debian packages when run as root.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from unet_seg.io import Volume, write_volume

TINY_2D = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [4, 8],
           "padding": "valid", "norm": None, "dropout": 0.0}  # fmt: skip
PROBE = "from qtpy.QtWidgets import QApplication, QWidget; a = QApplication([]); QWidget().show()"


def save_checkpoint(path: Path, model_cfg: dict) -> Path:
    """A checkpoint as Lightning writes it, of a seeded, untrained module."""
    from tests.prediction.test_predict import save_checkpoint as save_seeded

    return save_seeded(path, model_cfg, seed=0)


@pytest.fixture(scope="session")
def ckpt_2d(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny2d.ckpt", TINY_2D)


@pytest.fixture(scope="session")
def stack_file(tmp_path_factory) -> Path:
    """A (3, 40, 52) uint8 stack of blobs, ImageJ spacing (2, 0.5, 0.5) um."""
    rng = np.random.default_rng(0)
    image = (rng.random((3, 40, 52)) * 60).astype(np.uint8)
    image[:, 8:20, 10:30] += 150
    image[:, 26:36, 30:46] += 120
    path = tmp_path_factory.mktemp("stack") / "stack.tif"
    return write_volume(path, Volume(image, spacing=(2.0, 0.5, 0.5), metadata={"unit": "um"}))


@pytest.fixture(scope="session")
def display() -> Iterator[str]:
    """A virtual X display for Qt, or a skip naming what is missing."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no Xvfb for a virtual display (apt-get install xvfb; .ci/setup does as root)")
    read, write = os.pipe()
    server = subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", "1280x1024x24",
                               "-nolisten", "tcp"], pass_fds=(write,),
                              stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    env = {"DISPLAY": f":{number}", "QT_QPA_PLATFORM": "xcb"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    if probe.returncode != 0:
        server.kill()
        reason = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"Qt cannot open a window on Xvfb: {reason}")
    # Stopped when Python exits, not at the session's end: Qt exits the process as soon as
    # its X connection breaks, and the QApplication outlives the session's fixtures.
    atexit.register(server.kill)
    yield env["DISPLAY"]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def predict_config(**overrides):
    """``conf/predict.yaml`` as ``unet-seg-predict`` composes it, with ``overrides``."""
    from hydra import compose, initialize_config_dir

    from unet_seg.config import config_dir

    args = [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("predict", overrides=[*args, "progress=false"])


@pytest.fixture(scope="session")
def cli_outputs(tmp_path_factory, ckpt_2d, stack_file) -> Path:
    """What ``unet-seg-predict`` writes for ``stack_file``: labels, probabilities, instances
    (``cc``) and their object table, in a folder of their own."""
    from unet_seg.prediction.batch import predict

    out = tmp_path_factory.mktemp("cli")
    cfg = predict_config(input=stack_file, output_dir=out, checkpoint=ckpt_2d,
                         **{"outputs.probabilities": True, "outputs.instances": True,
                            "outputs.preview": False, "instances.method": "cc",
                            "instances.min_size": 1})  # fmt: skip
    assert predict(cfg)["ok"] == 1
    return out
