"""Starting a command: ``--help`` straight from its help template, everything else through Hydra
(with :mod:`unet_seg.cli.errors` turning problems into one line and an exit code).

Hydra renders ``--help`` only after composing the config and listing every option of every config
group, which took about 2 s here although the templates in ``conf/hydra/help/`` use neither.
Rendering the same template with OmegaConf alone answers in the time Python takes to start, and
imports neither Hydra nor torch nor Lightning; ``--hydra-help``, ``--cfg job`` and every run still
go through Hydra.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from unet_seg.cli.exit_codes import exit_interrupted
from unet_seg.config import config_dir

HELP_FLAGS = ("--help", "-h")


def render_help(command: str) -> str:
    """The text of ``conf/hydra/help/<command>.yaml``'s template, its ``${hydra.help.*}`` filled."""
    template = OmegaConf.load(Path(config_dir()) / "hydra" / "help" / f"{command}.yaml")
    return str(OmegaConf.create({"hydra": {"help": template}}).hydra.help.template)


def launch(
    command: str, name: str, task: Callable[[Any], Any], argv: Sequence[str] | None = None
) -> None:
    """Run ``task(cfg)`` as the Hydra app ``conf/<command>.yaml`` under the console-script name
    ``name``, or print its help and exit."""
    args = sys.argv[1:] if argv is None else argv
    if any(flag in args for flag in HELP_FLAGS):
        print(render_help(command))
        raise SystemExit(0)
    try:
        import hydra

        from unet_seg.cli.errors import run_console_script

        app = hydra.main(version_base="1.3", config_path=config_dir(), config_name=command)(task)
        run_console_script(name, app)
    except KeyboardInterrupt:  # before the task's own handler: importing, composing the config
        exit_interrupted(name)
