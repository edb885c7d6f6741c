"""Training on one's own data: the folder template, run names from the data, nnU-Net raw datasets
(2D and 3D, channel files, dataset.json), ImageJ/OME hyperstacks; tiny datasets made in tmp_path."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from hydra.errors import InstantiationException

from tests.test_configs import compose_train
from unet_seg.config import CONFIG_DIR
from unet_seg.data.datamodule import SegmentationDataModule
from unet_seg.data.nnunet import nnunet_datamodule, read_dataset
from unet_seg.data.pairs import pair_files
from unet_seg.data.training_data import TrainingData
from unet_seg.io import Volume, read_volume, write_volume
from unet_seg.training.train import build_datamodule, follow_the_data, train

QUICK = ["trainer.accelerator=cpu", "trainer.devices=1", "debug=fast_dev_run", "augment=none"]
TINY_3D = ["model.features=[4,8]", "model.norm=null", "data.patch_size=[20,28,28]"]
TINY_2D = ["model.features=[4,8]", "model.norm=null", "data.patch_size=[28,28]"]


def blobs(rng, shape, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose intensity follows a label map of ``classes`` values."""
    label = rng.integers(0, classes, size=shape).astype(np.uint8)
    image = (label * 100 + rng.integers(0, 30, size=shape)).astype(np.uint16)
    return image, label


def nnunet_dataset(root: Path, rng, spatial: tuple[int, ...], channels: int, ending: str,
                   labels: dict | None = None, cases: int = 3) -> Path:  # fmt: skip
    labels = labels or {"background": 0, "cell": 1, "membrane": 2, "ignore": 3}
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    spacing = (2.0, 0.5, 0.5)[-len(spatial) :]
    values = [v for v in labels.values() if isinstance(v, int)]
    for case in range(cases):
        image, label = blobs(rng, spatial, max(values) + 1)
        name = f"case_{case:03d}"
        for channel in range(channels):
            data = (image + 7 * channel).astype(np.uint8 if ending == ".png" else np.uint16)
            write_volume(root / "imagesTr" / f"{name}_{channel:04d}{ending}",
                         Volume(data, spacing=spacing))  # fmt: skip
        write_volume(root / "labelsTr" / f"{name}{ending}", Volume(label, spacing=spacing))
    meta = {"channel_names": {str(c): f"stain{c}" for c in range(channels)}, "labels": labels,
            "numTraining": cases, "file_ending": ending}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_folder_template_lists_every_data_module_key():
    template = yaml.safe_load((CONFIG_DIR / "data" / "folder.yaml").read_text())
    module = set(inspect.signature(SegmentationDataModule).parameters) - {"augment", "settings"}
    # cv comes from the run's own cv: group (folds span data configs), not from data/.
    parameters = module | set(inspect.signature(TrainingData).parameters) - {"cv"}
    assert set(template) - {"_target_"} == parameters


@pytest.mark.parametrize(
    ("images", "name"),
    [("/d/cells/images", "cells"), ("/d/cells/*.tif", "cells"), ("/d/cells/imagesTr", "cells"),
     ("/d/embryo.ome.tif", "embryo"), ("/d/vol.nii.gz", "vol")],
)  # fmt: skip
def test_run_name_comes_from_the_data(tmp_path, images, name):
    cfg = compose_train(tmp_path, "experiment=own_2d", f"data.images={images}", "data.labels=x")
    assert cfg.name == name
    assert cfg.publish_checkpoint == str(tmp_path / "runs" / name / "model.ckpt")


def test_nnunet_3d_two_channels_trains_with_classes_and_channels_from_the_data(tmp_path, rng):
    root = nnunet_dataset(tmp_path / "Dataset007_Cells", rng, (20, 28, 28), 2, ".nii.gz")
    cfg = compose_train(tmp_path, "experiment=own_3d", "data=nnunet", f"data.root={root}",
                        "data.val_names=[case_002]", *TINY_3D, *QUICK)  # fmt: skip
    assert cfg.name == "Dataset007_Cells"
    datamodule = build_datamodule(cfg)
    assert (datamodule.in_channels, datamodule.num_classes) == (2, 3)
    assert datamodule.cfg["label_map"] == {"0": 0, "1": 1, "2": 2, "3": -1}  # ignore: 3
    datamodule.setup("fit")
    regions = datamodule.train_set.regions
    assert [r.name for r in regions] == ["case_000", "case_001"]
    assert regions[0].image.shape == (2, 20, 28, 28) and regions[0].spacing == (2.0, 0.5, 0.5)
    # The second channel is the first plus 7 before normalisation: the channels were stacked.
    assert not np.allclose(regions[0].image[0], regions[0].image[1])
    metrics = train(cfg).metrics
    assert (cfg.model.in_channels, cfg.model.num_classes) == (2, 3)
    assert 0.0 <= metrics["val/dice"] <= 1.0


def test_nnunet_2d_png_dataset(tmp_path, rng):
    root = nnunet_dataset(tmp_path / "Dataset002_Nuclei", rng, (40, 44), 1, ".png",
                          labels={"background": 0, "nucleus": 1})  # fmt: skip
    cfg = compose_train(tmp_path, "experiment=own_2d", "data=nnunet", f"data.root={root}",
                        *TINY_2D, *QUICK)  # fmt: skip
    datamodule = build_datamodule(cfg)
    follow_the_data(cfg, datamodule)
    assert (cfg.model.in_channels, cfg.model.num_classes) == (1, 2)
    assert datamodule.cfg["label_map"] is None
    datamodule.setup("fit")
    assert {r.name for r in datamodule.val_set.regions} == {"case_002"}  # the last 20 %


@pytest.mark.parametrize(
    ("labels", "message"),
    [({"background": 0, "tumour": [1, 2]}, "region-based"),
     ({"background": 0, "cell": 2}, "consecutive")],
)  # fmt: skip
def test_nnunet_dataset_json_errors_name_the_file(tmp_path, rng, labels, message):
    root = nnunet_dataset(tmp_path / "D", rng, (8, 8), 1, ".tif", labels=labels, cases=1)
    with pytest.raises(ValueError, match=message) as error:
        read_dataset(root)
    assert "dataset.json" in str(error.value)


def test_nnunet_missing_channel_file_is_named(tmp_path, rng):
    root = nnunet_dataset(tmp_path / "D", rng, (8, 8), 2, ".tif", cases=2)
    (root / "imagesTr" / "case_001_0001.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"case_001_0001\.tif: missing"):
        nnunet_datamodule(root, spatial_dims=2, patch_size=[8, 8])
    with pytest.raises(FileNotFoundError, match=r"dataset\.json not found"):
        read_dataset(tmp_path)


def test_channel_files_pair_with_their_case(tmp_path):
    for name in ["a_0000", "a_0001", "b_0000", "b_0001", "single"]:
        (tmp_path / "img").mkdir(exist_ok=True)
        write_volume(tmp_path / "img" / f"{name}.tif", Volume(np.zeros((4, 4), np.uint8)))
    for name in ["a", "b", "single"]:
        (tmp_path / "lab").mkdir(exist_ok=True)
        write_volume(tmp_path / "lab" / f"{name}.tif", Volume(np.zeros((4, 4), np.uint8)))
    pairs = pair_files(tmp_path / "img", tmp_path / "lab")
    named = {label.stem: image for image, label in pairs}
    assert named["a"] == (tmp_path / "img" / "a_0000.tif", tmp_path / "img" / "a_0001.tif")
    assert named["single"] == tmp_path / "img" / "single.tif"
    (tmp_path / "img" / "b_0000.tif").unlink()
    with pytest.raises(ValueError, match="not numbered 0000, 0001"):
        pair_files(tmp_path / "img", tmp_path / "lab")


def _files(folder: Path, names: list[str]) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        write_volume(folder / f"{name}.tif", Volume(np.zeros((4, 4), np.uint8)))


def test_labels_named_as_other_tools_name_masks_pair_with_their_images(tmp_path):
    _files(tmp_path / "img", ["x", "y", "z"])
    _files(tmp_path / "lab", ["x_Label", "y-seg", "z", "z_masks"])  # z: the exact name wins
    pairs = pair_files(tmp_path / "img", tmp_path / "lab")
    assert [(image.stem, label.stem) for image, label in pairs] == [
        ("x", "x_Label"), ("y", "y-seg"), ("z", "z")
    ]  # fmt: skip
    _files(tmp_path / "img", ["w"])
    with pytest.raises(ValueError, match=r"img/w.tif: no label file named w\.\* \(or w_masks"):
        pair_files(tmp_path / "img", tmp_path / "lab")


def test_cellpose_layout_images_and_masks_in_one_folder(tmp_path, rng):
    folder = tmp_path / "cells"
    folder.mkdir()
    for name in ("a", "b", "c"):
        image, label = blobs(rng, (40, 48), 2)
        write_volume(folder / f"{name}.tif", Volume(image))
        suffix = "_cp_masks" if name == "b" else "_masks"
        write_volume(folder / f"{name}{suffix}.tif", Volume(label))
    pairs = pair_files(folder, folder)
    assert [(image.name, label.name) for image, label in pairs] == [
        ("a.tif", "a_masks.tif"), ("b.tif", "b_cp_masks.tif"), ("c.tif", "c_masks.tif")
    ]  # fmt: skip
    cfg = compose_train(tmp_path, "experiment=own_2d", f"data.images={folder}",
                        f"data.labels={folder}", "data.patch_size=[28,28]")  # fmt: skip
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    assert datamodule.in_channels == 1 and datamodule.num_classes == 2
    assert len(datamodule.train_set.regions) == 2 and len(datamodule.val_set.regions) == 1
    for name in ("a_masks", "b_cp_masks", "c_masks"):
        (folder / f"{name}.tif").unlink()
    with pytest.raises(ValueError, match="the images and labels are the same files; name each"):
        pair_files(folder, folder)


@pytest.mark.parametrize("lazy", [False, True])
def test_object_id_masks_give_class_and_instance_labels(tmp_path, lazy):
    """``label_map=objects``: Cellpose/StarDist masks of object ids; two touching objects keep
    the boundary between them in the boundary target, which components of the class would lose."""
    folder = tmp_path / "cells"
    folder.mkdir()
    ids = np.zeros((40, 48), np.uint16)
    ids[10:30, 8:24], ids[10:30, 24:40] = 5, 9  # touching along x = 23 | 24
    for name in ("a", "b"):
        write_volume(folder / f"{name}.tif", Volume((ids > 0).astype(np.uint16) * 900 + 50))
        write_volume(folder / f"{name}_masks.tif", Volume(ids))
    targets = {}
    for label_map in ("objects", "{0:0,5:1,9:1}"):
        cfg = compose_train(tmp_path, "experiment=own_2d", f"data.images={folder}",
                            f"data.labels={folder}", f"data.label_map={label_map}",
                            "data.target=boundary", "data.patch_size=[28,28]",
                            f"data.lazy={str(lazy).lower()}")  # fmt: skip
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
        (region,) = datamodule.val_set.regions
        box = (slice(0, 40), slice(0, 48))
        targets[label_map] = region.read_target(box) if lazy else region.label[box]
    objects = targets["objects"]
    assert set(np.unique(objects)) == {0, 1, 2}
    assert (objects[12:28, 22:26] == 2).all()  # the contact is boundary on both sides
    merged = targets["{0:0,5:1,9:1}"]  # the same classes without the ids: one component
    assert (merged[12:28, 22:26] == 1).all()
    np.testing.assert_array_equal(objects != 0, merged != 0)
    with pytest.raises(InstantiationException, match="label_map must map stored values to class"):
        build_datamodule(compose_train(tmp_path, "experiment=own_2d", f"data.images={folder}",
                                       f"data.labels={folder}", "data.label_map=ids"))  # fmt: skip


@pytest.mark.parametrize("kind", ["imagej", "ome"])
def test_hyperstack_channels_become_the_leading_axis_and_the_models_input(tmp_path, rng, kind):
    image, label = blobs(rng, (20, 28, 28), 2)
    zcyx = np.stack([image, image // 2, image + 5], axis=1)  # Fiji's ZCYX order
    folder = tmp_path / "embryo"
    (folder / "images").mkdir(parents=True)
    path = folder / "images" / ("stack.ome.tif" if kind == "ome" else "stack.tif")
    if kind == "ome":
        tifffile.imwrite(path, zcyx, ome=True, metadata={"axes": "ZCYX", "PhysicalSizeZ": 2.0})
    else:
        tifffile.imwrite(path, zcyx, imagej=True, metadata={"axes": "ZCYX", "spacing": 2.0})
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, np.moveaxis(zcyx, 1, 0))
    assert volume.spacing[0] == 2.0
    write_volume(folder / "labels" / path.name, Volume(label))
    cfg = compose_train(tmp_path, "experiment=own_3d", f"data.images={folder / 'images'}",
                        f"data.labels={folder / 'labels'}", "data.val_slices=[12,20]",
                        "data.patch_size=[8,28,28]", *TINY_3D[:2], "model.padding=same",
                        *QUICK)  # fmt: skip
    assert cfg.name == "embryo"
    datamodule = build_datamodule(cfg)
    assert datamodule.in_channels == 3
    metrics = train(cfg).metrics
    assert cfg.model.in_channels == 3 and 0.0 <= metrics["val/dice"] <= 1.0


def readme_recipes() -> list[str]:
    """The command lines of the "Your own data" block of the manual, ``docs/guides/own-data.md``
    (found from the checkout's root, the folder holding ``mkdocs.yml``, wherever this file sits)."""
    root = next(p for p in Path(__file__).resolve().parents if (p / "mkdocs.yml").is_file())
    text = (root / "docs" / "guides" / "own-data.md").read_text()
    block = text.split("## Your own data")[1].split("```bash")[1].split("```")[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def run_recipes(tmp_path: Path, samples_dir: Path, train_too: bool) -> list[str]:
    """Run the manual's own-data recipes from ``tmp_path`` (with ``data_samples`` linked
    there); each training command composes and builds its data, and trains one step if
    ``train_too``."""
    import shlex

    from unet_seg.data.to_nnunet import main as to_nnunet_main

    (tmp_path / "data_samples").symlink_to(samples_dir)
    recipes = readme_recipes()
    assert len(recipes) == 5
    names = []
    for line in recipes:
        words = shlex.split(line)
        if words[:3] == ["python", "-m", "unet_seg.data.to_nnunet"]:
            to_nnunet_main(words[3:])
            continue
        assert words[0] == "unet-seg-train"
        cfg = compose_train(tmp_path, *words[1:], *QUICK)
        names.append(cfg.name)
        datamodule = build_datamodule(cfg)
        boundary = cfg.data.get("target") == "boundary"  # object ids: 3 classes to learn
        assert datamodule.in_channels == 1 and datamodule.num_classes == (3 if boundary else 2)
        if train_too:
            assert 0.0 <= train(cfg).metrics["val/dice"] <= 1.0
        else:
            datamodule.setup("fit")
            assert datamodule.train_set.regions and datamodule.val_set.regions
    return names


def test_readme_recipes_compose_and_load_their_data(tmp_path, samples_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_recipes(tmp_path, samples_dir, False) == [
        "2d",
        "nuclei_objects",
        "image",
        "Dataset001_Nuclei",
    ]


@pytest.mark.slow
def test_readme_recipes_train(tmp_path, samples_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_recipes(tmp_path, samples_dir, True)
