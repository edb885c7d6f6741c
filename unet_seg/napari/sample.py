"""napari sample data: the project's synthetic nuclei (:mod:`unet_seg.data.samples`), each as
its image with its class labels and its objects, at the files' spacing.

The checkout's ``data_samples/`` is used where it exists; an installed wheel has none, so the
samples are generated once (a few seconds, deterministic: seed 0) into the user's cache folder
(``$XDG_CACHE_HOME/unet-seg/data_samples``, else ``~/.cache/...``).
"""

from __future__ import annotations

import os
from pathlib import Path

from unet_seg.config import PROJECT_ROOT
from unet_seg.data.samples import generate
from unet_seg.io import read_volume
from unet_seg.napari.reader import LayerData, class_colours, geometry

CHECKOUT_SAMPLES = PROJECT_ROOT / "data_samples"
MARKER = Path("stack") / "stack.tif"  # written last by generate(): the samples are complete


def samples_dir() -> Path:
    """The folder of the samples, generated into the cache folder if nowhere else."""
    if (CHECKOUT_SAMPLES / MARKER).is_file():
        return CHECKOUT_SAMPLES
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "unet-seg" / "data_samples"
    if not (folder / MARKER).is_file():
        generate(folder)
    return folder


def _layers(image: Path, labels: Path, instances: Path | None, name: str) -> list[LayerData]:
    """The image, its class labels and (if any) its objects as napari layer data."""
    layers: list[LayerData] = []
    volume = read_volume(image)
    meta = geometry(volume.spacing, volume.metadata.get("unit"))
    layers.append((volume.array, {**meta, "name": name}, "image"))
    mask = read_volume(labels)
    layers.append((mask.array, {**meta, "name": f"{name} labels", "colormap": class_colours(2)},
                   "labels"))  # fmt: skip
    if instances is not None:
        layers.append((read_volume(instances).array, {**meta, "name": f"{name} objects"}, "labels"))
    return layers


def nuclei_2d() -> list[LayerData]:
    """One 256 x 256 image of fluorescent nuclei (0.5 um pixels), its mask and its objects."""
    root = samples_dir() / "2d"
    name = "nuclei_00.tif"
    return _layers(root / "images" / name, root / "labels" / name, root / "instances" / name,
                   "nuclei 2D")  # fmt: skip


def nuclei_stack() -> list[LayerData]:
    """A 16-slice stack of nuclei (2 x 0.5 x 0.5 um voxels), its mask and its objects."""
    root = samples_dir() / "stack"
    return _layers(root / "stack.tif", root / "stack_labels.tif", root / "stack_instances.tif",
                   "nuclei stack")  # fmt: skip


def nuclei_3d() -> list[LayerData]:
    """A 48 x 96 x 96 volume of nuclei (1 x 0.5 x 0.5 um voxels) and its mask."""
    root = samples_dir() / "3d"
    return _layers(root / "image.nii.gz", root / "label.nii.gz", None, "nuclei 3D")
