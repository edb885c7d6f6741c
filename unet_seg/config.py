"""Where the Hydra configs live, the OmegaConf resolvers they use, and config -> plain values.

The entry points find ``conf/`` next to the package (the README installs in editable mode), so they
work from any working directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "conf"


def config_dir() -> str:
    """Absolute path of ``conf/``; ``FileNotFoundError`` if the install does not carry it."""
    if not (CONFIG_DIR / "train.yaml").is_file() and not (CONFIG_DIR / "summary.yaml").is_file():
        raise FileNotFoundError(
            f"unet-seg configs not found at {CONFIG_DIR}: install the project in editable mode "
            "(pip install -e .) from a checkout that has conf/"
        )
    return str(CONFIG_DIR)


def plain(value: Any) -> Any:
    """A Hydra/OmegaConf value as plain Python containers, resolved.

    Hyperparameters, checkpoints (loaded with ``weights_only=True``) and pickled dataloader
    workers must hold no config nodes.
    """
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def register_resolvers() -> None:
    """``${project_root:}`` gives the checkout, so sample data paths work from any directory."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


register_resolvers()
