"""The datasets of ``bench_accuracy.py``: what every method trains on, how it validates, and the
test split it is scored on, which no method sees before scoring.

- ``sample_2d``: the ten images of ``data_samples/2d`` train (``nuclei_08``/``09`` validate, the
  planner's "last 20 % of the files"); test: 16 fresh 256 x 256 images from the sample generator
  with another seed (those of ``bench_instances.py``, 462 nuclei).
- ``sample_3d``: the volume of ``data_samples/3d`` trains (z 38-47 validate, the planner's last
  20 % of a single stack's slices); test: 4 fresh 48 x 96 x 96 volumes (``bench_instances.py``'s).
- ``isbi2012``: sections 0-24 train (20-24 validate), sections 25-29 are the test split, as in
  ``bench_plan_accuracy.py``; only sections 0-24 are written where the methods read.

Every test case keeps its raw intensities (each method normalises them its own way), its class
map and its objects (nuclei: the generator's ids; ISBI: the cells' face-connected components).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from unet_seg.config import PROJECT_ROOT
from unet_seg.data import samples
from unet_seg.io import Volume, read_volume, write_volume

SAMPLES = PROJECT_ROOT / "data_samples"
ISBI = PROJECT_ROOT.parent / "shared" / "datasets" / "isbi2012"
DATASETS = ("sample_2d", "sample_3d", "isbi2012")
VAL_FRACTION = 0.2  # the planner's (unet_seg.planning.rules.validation): the last 20 %


@dataclass(frozen=True)
class TestCase:
    """One scored image: ``image`` raw ``(*spatial)``, ``classes`` and ``objects`` int
    ``(*spatial)`` (0 = no object)."""

    name: str
    image: np.ndarray
    classes: np.ndarray
    objects: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """Training data on disk and the held-out test cases.

    ``images``/``labels``: a folder of files or one stack (all any method reads for training);
    ``val``: the validation files' names (a folder) or ``[start, stop)`` slices (a stack);
    ``label_map``: stored value -> class; ``object_class``: the class whose components are the
    objects (Rand error, VI, AP); ``dice_class``: the class whose Dice is reported;
    ``membranes``: Rand error is the primary figure (else AP@0.5).
    """

    name: str
    spatial_dims: int
    images: Path
    labels: Path
    val: tuple
    spacing: tuple[float, ...]
    test: list[TestCase]
    label_map: dict[int, int] | None = None
    object_class: int = 1
    dice_class: int = 1
    membranes: bool = False
    num_classes: int = 2

    @property
    def primary(self) -> str:
        """The figure the issue's goals compare on."""
        return "rand_error" if self.membranes else "ap50"


def _fresh_nuclei(shape: tuple[int, ...], rngs: list[np.random.Generator]) -> list[TestCase]:
    """Test cases made like the samples, with generators the samples never used."""
    cases = []
    for i, rng in enumerate(rngs):
        if len(shape) == 2:
            objects, profile = samples.nuclei(shape, (8.0, 14.0), 40, rng)
            image = np.round(samples.fluorescence(profile, rng, 1.5) * 255).astype(np.uint8)
        else:
            objects, profile = samples.nuclei(shape, (7.0, 11.0), 30, rng, z_scale=0.5)
            blur = (0.75, 1.5, 1.5)
            image = np.round(samples.fluorescence(profile, rng, blur) * 65535).astype(np.uint16)
        classes = samples.separated_mask(objects).astype(np.int64)
        cases.append(TestCase(f"test_{i:02d}", image, classes, objects.astype(np.int64)))
    return cases


def sample_2d() -> Dataset:
    rngs = np.random.default_rng(2012).spawn(16)  # bench_instances.py's test images
    return Dataset(
        "sample_2d",
        2,
        SAMPLES / "2d/images",
        SAMPLES / "2d/labels",
        ("nuclei_08", "nuclei_09"),
        (0.5, 0.5),
        _fresh_nuclei((256, 256), rngs),
    )


def sample_3d() -> Dataset:
    rngs = [np.random.default_rng(2012), *np.random.default_rng(2013).spawn(3)]
    z = 48
    val = (int(z * (1 - VAL_FRACTION)), z)
    return Dataset(
        "sample_3d",
        3,
        SAMPLES / "3d/image.nii.gz",
        SAMPLES / "3d/label.nii.gz",
        val,
        (1.0, 0.5, 0.5),
        _fresh_nuclei((48, 96, 96), rngs),
    )


def isbi2012(workdir: Path) -> Dataset:
    """Sections 0-24 written to ``workdir`` (all the methods read), 25-29 kept as the test."""
    if not (ISBI / "train-volume.tif").is_file():
        raise FileNotFoundError(f"{ISBI / 'train-volume.tif'}: ISBI 2012 data not found")
    volume = tifffile.imread(ISBI / "train-volume.tif")
    labels = tifffile.imread(ISBI / "train-labels.tif")
    workdir.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(workdir / "isbi_train.tif", volume[:25])
    tifffile.imwrite(workdir / "isbi_train_labels.tif", labels[:25])
    test = []
    for z in range(25, 30):
        classes = np.where(labels[z] == 0, 1, 0).astype(np.int64)  # 1 = membrane, 0 = cell
        cells = ndi.label(classes == 0)[0].astype(np.int64)
        test.append(TestCase(f"section_{z}", volume[z], classes, cells))
    return Dataset(
        "isbi2012",
        2,
        workdir / "isbi_train.tif",
        workdir / "isbi_train_labels.tif",
        (20, 25),
        (1.0, 1.0),
        test,
        label_map={255: 0, 0: 1},
        object_class=0,
        dice_class=1,
        membranes=True,
    )


def load(name: str, workdir: Path) -> Dataset:
    """The dataset ``name`` (one of :data:`DATASETS`)."""
    if name == "sample_2d":
        return sample_2d()
    if name == "sample_3d":
        return sample_3d()
    if name == "isbi2012":
        return isbi2012(workdir / "isbi2012")
    raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def as_cases(data: Dataset, out: Path) -> tuple[Path, Path, list[str], list[str]]:
    """The training data as one file per case (what a tool that splits by case, nnU-Net, needs):
    ``(images, labels, train names, validation names)``, labels holding class numbers.

    A folder is used as it is; a 2D stack gives one case per section; a 3D stack two slabs along
    z, the second the validation slices."""
    if data.images.is_dir():
        names = sorted(p.name.split(".")[0] for p in data.images.iterdir())
        return data.images, data.labels, [n for n in names if n not in data.val], list(data.val)
    images, labels = out / "images", out / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    if data.spatial_dims == 2:
        stack = tifffile.imread(data.images)
        label = _mapped(tifffile.imread(data.labels), data.label_map)
        for z in range(len(stack)):
            tifffile.imwrite(images / f"section_{z:02d}.tif", stack[z])
            tifffile.imwrite(labels / f"section_{z:02d}.tif", label[z])
        start, stop = data.val
        names = [f"section_{z:02d}" for z in range(len(stack))]
        return images, labels, names[:start], names[start:stop]
    image, label = read_volume(data.images), read_volume(data.labels)
    start = data.val[0]
    classes = _mapped(label.array, data.label_map)
    for name, part in (("slab_train", slice(0, start)), ("slab_val", slice(start, None))):
        write_volume(images / f"{name}.nii.gz", Volume(image.array[part], spacing=image.spacing))
        write_volume(labels / f"{name}.nii.gz", Volume(classes[part], spacing=image.spacing))
    return images, labels, ["slab_train"], ["slab_val"]


def _mapped(label: np.ndarray, label_map: dict[int, int] | None) -> np.ndarray:
    if label_map is None:
        return label.astype(np.uint8)
    out = np.zeros(label.shape, np.uint8)
    for value, cls in label_map.items():
        out[label == value] = cls
    return out
