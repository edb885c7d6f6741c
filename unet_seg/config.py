"""Where the Hydra configs live, the OmegaConf resolvers they use, and config -> plain values.

A checkout keeps the configs at its top level (``conf/``); a wheel installs the same files as the
package ``unet_seg.conf`` (``setup.py`` maps one onto the other). The entry points look in the
installed package first, then in the checkout, so they work from any working directory.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from unet_seg.errors import UsageError

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
# The installed package's copy first: beside site-packages a top-level conf/ may be anyone's.
CONFIG_DIRS = (PACKAGE_DIR / "conf", PROJECT_ROOT / "conf")
CONFIG_DIR = next((d for d in CONFIG_DIRS if (d / "train.yaml").is_file()), CONFIG_DIRS[-1])


def config_dir() -> str:
    """Absolute path of the configs; ``FileNotFoundError`` if the install does not carry them."""
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise FileNotFoundError(
            f"unet-seg configs not found in {' or '.join(map(str, CONFIG_DIRS))}: install the "
            "package from a wheel or a checkout (pip install .), which ships conf/"
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


# Folder names that say nothing about the data; the run is named after their parent instead.
_GENERIC_FOLDERS = {"images", "imagestr", "imagests", "imgs", "img", "raw", "data", "train"}
_DOUBLE_SUFFIXES = (".nii.gz", ".ome.tif", ".ome.tiff", ".ome.zarr")


def data_name(_root_: Any) -> str:
    """A run name from the config's data: the nnU-Net dataset (``data.root``), else the folder of
    ``data.images`` (``/data/cells/images`` -> ``cells``, ``/data/cells/*.tif`` -> ``cells``)
    or the stem of a single image file."""
    data = _root_.get("data") or {}
    source = data.get("root") or data.get("images")
    if isinstance(source, ListConfig | list | tuple):
        source = source[0]
    parts = Path(str(source)).parts
    wildcard = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))
    path = (Path(*parts[:wildcard]) if wildcard else Path()).absolute()
    while path.name.lower() in _GENERIC_FOLDERS and path.parent != path:
        path = path.parent
    name = path.name
    for suffix in _DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix and wildcard == len(parts) else name


def register_resolvers() -> None:
    """``${project_root:}`` gives the checkout, so sample data paths work from any directory;
    ``${data_name:}`` names a run after its data (:func:`data_name`)."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("data_name"):
        OmegaConf.register_new_resolver("data_name", data_name)


register_resolvers()


def whole(name: str, value: Any, least: int | None = None) -> int:
    """``value`` of option ``name`` as an int: the one check of whole-number options.

    ``UsageError`` naming the option where it is not a whole number (``"abc"``, ``1.5``,
    ``true``) or, with ``least``, where it is below ``least``.
    """
    wanted = "a whole number" if least is None else f"a whole number >= {least}"
    number = None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):  # numpy's too
        number = int(value)
    elif (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and float(value).is_integer()):  # fmt: skip
        number = int(value)
    if number is None or (least is not None and number < least):
        raise UsageError(f"{name} must be {wanted}, got {value!r}")
    return number


def real(name: str, value: Any) -> float:
    """``value`` of option ``name`` as a float; ``UsageError`` naming the option where it is not
    a number."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        raise UsageError(f"{name} must be a number, got {value!r}") from None
