"""``unet-seg-* --help``: usage and main options from ``conf/hydra/help/``, without importing
torch, Lightning or Hydra, and the same text that Hydra's own ``--help`` renders."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from unet_seg.cli.launch import render_help
from unet_seg.config import config_dir

COMMANDS = ("train", "predict", "evaluate", "summary", "export", "tune", "convert", "plan")


def test_help_imports_neither_torch_nor_lightning_nor_hydra():
    code = (
        "import contextlib, io, json, sys\n"
        "texts = {}\n"
        f"for name in {COMMANDS!r}:\n"
        "    module = __import__(f'unet_seg.cli.{name}', fromlist=['main'])\n"
        "    sys.argv = [f'unet-seg-{name}', '--help']\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            module.main()\n"
        "        except SystemExit as stop:\n"
        "            assert stop.code == 0, stop.code\n"
        "    texts[name] = out.getvalue()\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'hydra') if m in sys.modules]\n"
        "print(json.dumps({'texts': texts, 'heavy': heavy}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["heavy"] == []
    for name, text in report["texts"].items():
        assert text.startswith(f"unet-seg-{name}: ")
        assert "Usage examples:" in text and "Main options:" in text
        assert "${" not in text  # every interpolation resolved


@pytest.mark.parametrize("command", ["train", "predict", "convert"])
def test_hydra_renders_the_same_help(command, monkeypatch, capsys):
    import hydra

    module = __import__(f"unet_seg.cli.{command}", fromlist=["run"])
    monkeypatch.setattr(sys, "argv", [f"unet-seg-{command}", "--help"])
    app = hydra.main(version_base="1.3", config_path=config_dir(), config_name=command)(module.run)
    with pytest.raises(SystemExit) as stop:
        app()
    assert stop.value.code in (None, 0)
    assert capsys.readouterr().out.rstrip("\n") == render_help(command).rstrip("\n")


def main_options(text: str) -> list[str]:
    """The keys (before ``=``) of the 'Main options' block, in order."""
    block = text.split("Main options:")[1]
    return re.findall(r"^ +([\w.]+)=", block, flags=re.MULTILINE)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_main_option_exists(command):
    """A key in the help that the config does not have would send users into Hydra errors."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(command)
    tree = OmegaConf.to_container(cfg, resolve=False)  # ${hydra:...} needs a running app
    keys = main_options(render_help(command))
    assert len(keys) >= 2
    for key in keys:
        if (Path(config_dir()) / key).is_dir():  # a config group: data=NAME, model=NAME
            continue
        node = tree
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, (
                f"unet-seg-{command} --help names {key}, which the config lacks"
            )
            node = node[part]
