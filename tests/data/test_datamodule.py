"""SegmentationDataModule: batches, splits, mirroring, seeding, label maps, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from unet_seg.config import CONFIG_DIR
from unet_seg.data.datamodule import SegmentationDataModule
from unet_seg.io import Volume, write_volume
from unet_seg.normalization import normalize_percentile


def data_config(name: str, **overrides):
    """``conf/data/<name>.yaml`` with the project's paths resolved, as Hydra would compose it."""
    cfg = OmegaConf.create(
        {
            "paths": OmegaConf.load(CONFIG_DIR / "paths/default.yaml"),
            "data": OmegaConf.load(CONFIG_DIR / f"data/{name}.yaml"),
        }
    )
    cfg.paths.runs_dir = "runs"  # needs hydra:runtime otherwise; not used by data
    for key, value in overrides.items():
        cfg.data[key] = value
    return cfg.data


def make_module(name: str, **overrides) -> SegmentationDataModule:
    module = instantiate(data_config(name, **overrides))
    module.prepare_data()
    module.setup("fit")
    return module


@pytest.fixture(scope="module")
def sample_2d() -> SegmentationDataModule:
    return make_module("sample_2d", patch_size=[92, 92], batch_size=3, samples_per_epoch=6)


def test_2d_batches(sample_2d):
    for loader in (sample_2d.train_dataloader(), sample_2d.val_dataloader()):
        batch = next(iter(loader))
        assert set(batch) == {"image", "label", "weight"}
        assert batch["image"].shape == (3, 1, 92, 92) and batch["image"].dtype == torch.float32
        assert batch["label"].shape == (3, 92, 92) and batch["label"].dtype == torch.int64
        assert batch["weight"].shape == (3, 92, 92) and batch["weight"].dtype == torch.float32
        assert set(batch["label"].unique().tolist()) <= {0, 1}
        assert torch.all(batch["weight"] == 1.0)  # weight_map: null
    assert len(sample_2d.train_dataloader()) == 2  # 6 patches per epoch / 3
    # 2 validation images of 256 x 256 in 92-pixel windows: 3 x 3 each
    assert len(sample_2d.val_set) == 18


def test_split_by_file_is_disjoint(sample_2d):
    train = {r.name for r in sample_2d.train_set.regions}
    val = {r.name for r in sample_2d.val_set.regions}
    assert val == {"nuclei_08", "nuclei_09"}
    assert len(train) == 8 and not train & val


def test_image_is_percentile_normalised(sample_2d, samples_dir):
    from unet_seg.io import read_volume

    raw = read_volume(samples_dir / "2d/images/nuclei_08.tif").array
    region = sample_2d.val_set.regions[0]
    np.testing.assert_allclose(region.image[0], normalize_percentile(raw, 1.0, 99.8), rtol=1e-6)


def test_same_seed_same_batches_other_seed_other_batches(sample_2d):
    def first_batch(seed):
        torch.manual_seed(seed)
        return next(iter(sample_2d.train_dataloader()))

    a, b, c = first_batch(3), first_batch(3), first_batch(4)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert not torch.equal(a["image"], c["image"])
    # consecutive epochs draw new patches
    torch.manual_seed(3)
    loader = sample_2d.train_dataloader()
    epoch1, epoch2 = next(iter(loader)), next(iter(loader))
    assert not torch.equal(epoch1["image"], epoch2["image"])


def test_workers_are_seeded_reproducibly():
    module = make_module(
        "sample_2d", patch_size=[60, 60], batch_size=2, samples_per_epoch=4, num_workers=2
    )

    def batches(seed):
        torch.manual_seed(seed)
        return [b["image"] for b in module.train_dataloader()]

    first, again = batches(7), batches(7)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # the two workers draw different patches


def test_3d_batches_and_split_by_slice():
    module = make_module("sample_3d", patch_size=[44, 44, 44], samples_per_epoch=2)
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (2, 1, 44, 44, 44)
    assert batch["label"].shape == batch["weight"].shape == (2, 44, 44, 44)
    assert batch["label"].dtype == torch.int64
    assert set(batch["label"].unique().tolist()) <= {0, 1}
    assert [r.name for r in module.train_set.regions] == ["image[0:32]"]
    assert [r.name for r in module.val_set.regions] == ["image[32:48]"]
    assert module.train_set.regions[0].shape == (32, 96, 96)
    val = next(iter(module.val_dataloader()))
    assert val["image"].shape == (2, 1, 44, 44, 44)


def test_bad_patch_size():
    # Hydra wraps the ValueError; the message still says what is wrong
    with pytest.raises(InstantiationException, match=r"patch_size \[188\] has 1 entries but"):
        instantiate(data_config("sample_2d", patch_size=[188]))
    with pytest.raises(
        ValueError, match=r"patch_size \[64, 64\] has 2 entries but spatial_dims is 3"
    ):
        SegmentationDataModule("i.nii.gz", "l.nii.gz", spatial_dims=3, patch_size=[64, 64])
    with pytest.raises(ValueError, match="positive integers"):
        SegmentationDataModule("i.tif", "l.tif", patch_size=[64, -1])


@pytest.mark.parametrize("width", [0, -1.0, float("nan"), float("inf"), "2"])
def test_bad_boundary_settings_are_named(width):
    with pytest.raises(ValueError, match=r"boundary_width must be a number > 0 .*, got"):
        SegmentationDataModule("i.tif", "l.tif", patch_size=64, boundary_width=width)
    with pytest.raises(ValueError, match=r"object_class must be one of the classes 0\.\.1, got 2"):
        SegmentationDataModule("i.tif", "l.tif", patch_size=64, object_class=2)


@pytest.mark.parametrize(
    "setting,value",
    [("batch_size", 0), ("batch_size", 2.5), ("samples_per_epoch", 0), ("num_workers", -1)],
)
def test_bad_counts_are_named(setting, value):
    with pytest.raises(ValueError, match=rf"{setting} must be a whole number.*got {value}"):
        SegmentationDataModule("i.tif", "l.tif", patch_size=64, **{setting: value})


# --------------------------------------------------------------------- small synthetic files


def _stack(tmp_path: Path, rng) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """An ISBI-like stack: 6 sections, labels 255 = interior, 0 = membrane."""
    image = rng.integers(0, 256, size=(6, 20, 30)).astype(np.uint8)
    label = np.where(rng.random((6, 20, 30)) < 0.25, 0, 255).astype(np.uint8)
    return (
        write_volume(tmp_path / "vol.tif", image),
        write_volume(tmp_path / "lab.tif", label),
        image,
        label,
    )


def _stack_module(tmp_path, rng, **kwargs) -> SegmentationDataModule:
    image_path, label_path, _, _ = _stack(tmp_path, rng)
    args = {
        "images": image_path,
        "labels": label_path,
        "spatial_dims": 2,
        "patch_size": [16, 16],
        "batch_size": 2,
        "samples_per_epoch": 4,
        "val_slices": [4, 6],
        "label_map": {255: 0, 0: 1},
    }
    module = SegmentationDataModule(**{**args, **kwargs})
    module.setup("fit")
    return module


def test_stack_label_map_and_slice_split(tmp_path, rng):
    module = _stack_module(tmp_path, rng)
    _, _, image, label = _stack(tmp_path, np.random.default_rng(0))
    assert [r.name for r in module.train_set.regions] == [f"vol[{z}]" for z in range(4)]
    assert [r.name for r in module.val_set.regions] == ["vol[4]", "vol[5]"]
    region = module.val_set.regions[1]
    np.testing.assert_array_equal(region.label, (label[5] == 0).astype(np.int64))  # membrane = 1
    # the stack is normalised as a whole, as inference does, not slice by slice
    np.testing.assert_allclose(region.image[0], normalize_percentile(image)[5], rtol=1e-6)


def test_whole_mode_mirror_pads_at_borders(tmp_path, rng):
    module = _stack_module(
        tmp_path,
        rng,
        val_mode="whole",
        val_size=[24, 36],
        label_map=None,
        labels=write_volume(tmp_path / "l.tif", (np.indices((6, 20, 30))[2] % 2).astype(np.uint8)),
    )
    item = module.val_set[0]
    region = module.val_set.regions[0]
    expected = np.pad(region.image[0], ((2, 2), (3, 3)), mode="reflect")
    np.testing.assert_array_equal(item["image"][0].numpy(), expected)
    # a larger image is cropped around its centre
    crop = _stack_module(
        tmp_path, rng, val_mode="whole", val_size=[8, 10], label_map={0: 0, 255: 1}
    )
    np.testing.assert_array_equal(
        crop.val_set[0]["image"][0].numpy(), crop.val_set.regions[0].image[0, 6:14, 10:20]
    )


@pytest.mark.parametrize("lazy", [False, True])
def test_training_labels_need_two_classes(tmp_path, rng, lazy, caplog):
    # a label_map that sends both stored values to one class: nothing to learn
    with pytest.raises(ValueError, match=r"lab\.tif: every labelled training voxel is class 0"):
        _stack_module(tmp_path, rng, lazy=lazy, label_map={255: 0, 0: 0})
    with pytest.raises(ValueError, match=r"lab\.tif: the training labels hold no labelled"):
        _stack_module(tmp_path, rng, lazy=lazy, label_map={255: -1, 0: -1})
    # ignored voxels do not count as a class, a positive ignore_index included
    with pytest.raises(ValueError, match="every labelled training voxel is class 1"):
        _stack_module(tmp_path, rng, lazy=lazy, label_map={255: 5, 0: 1}, ignore_index=5)
    # a boundary target of labels without objects is all background
    with pytest.raises(ValueError, match="every labelled training voxel is class 0"):
        _stack_module(tmp_path, rng, lazy=lazy, label_map={255: 0, 0: 0}, target="boundary")
    # the validation slices alone holding class 1 is not enough: training never sees it
    label = np.zeros((6, 20, 30), np.uint8)
    label[4:, :5] = 1
    write_volume(tmp_path / "one.tif", label)
    with pytest.raises(ValueError, match="every labelled training voxel is class 0"):
        _stack_module(tmp_path, rng, lazy=lazy, labels=tmp_path / "one.tif", label_map=None)
    # a class missing from otherwise usable labels is a warning naming it
    caplog.clear()
    module = _stack_module(tmp_path, rng, lazy=lazy, num_classes=3)
    assert len(module.train_set.regions) == 4
    assert "no training voxel is class [2]" in caplog.text


@pytest.mark.parametrize("lazy", [False, True])
def test_float_labels_must_hold_whole_numbers(tmp_path, rng, lazy):
    label = (np.indices((6, 20, 30))[2] % 2).astype(np.float32)
    write_volume(tmp_path / "whole.tif", label)  # 0.0 / 1.0: read as classes 0 and 1
    module = _stack_module(tmp_path, rng, lazy=lazy, labels=tmp_path / "whole.tif", label_map=None)
    patch = module.val_set.regions[0].patch((0, 0), (20, 30), "reflect")["label"]
    np.testing.assert_array_equal(patch, label[4])
    label[5, 3, 4] = 0.5  # truncated to class 0 before: now named
    write_volume(tmp_path / "half.tif", label)
    for label_map in (None, "objects"):
        with pytest.raises(ValueError, match=r"half\.tif: labels must be integers; .*\[0\.5\]"):
            _stack_module(tmp_path, rng, lazy=lazy, labels=tmp_path / "half.tif",
                          label_map=label_map)  # fmt: skip
    # object ids of a boundary target too (named vol.tif to pair with the image)
    write_volume(tmp_path / "ids" / "vol.tif", label)
    with pytest.raises(ValueError, match=r"vol\.tif: object ids must be integers; .*\[0\.5\]"):
        _stack_module(tmp_path, rng, lazy=lazy, labels=tmp_path / "whole.tif", label_map=None,
                      instances=tmp_path / "ids", target="boundary")  # fmt: skip


def test_augment_is_called_with_the_sample_and_an_rng(tmp_path, rng):
    calls = []

    def flip(sample, generator):
        calls.append(generator)
        assert sample["image"].shape == (1, 16, 16) and sample["label"].shape == (16, 16)
        return {key: np.flip(value, -1) for key, value in sample.items()} | {
            "weight": 2 * sample["weight"]
        }

    module = _stack_module(tmp_path, rng, augment=flip)
    batch = next(iter(module.train_dataloader()))
    assert len(calls) == 2 and all(isinstance(g, np.random.Generator) for g in calls)
    assert torch.all(batch["weight"] == 2.0)
    val = next(iter(module.val_dataloader()))  # validation is never augmented
    assert torch.all(val["weight"] == 1.0) and len(calls) == 2


def test_weight_map_is_computed_once_per_region(tmp_path, rng, monkeypatch, samples_dir):
    seen = []

    def fake_weight_map(labels, w0=10.0, sigma=5.0, spacing=None, **kwargs):
        seen.append((labels.shape, w0, sigma, spacing))
        return labels.astype(np.float32) * w0 + 1

    from unet_seg.data import weightmap

    monkeypatch.setattr(weightmap, "unet_weight_map", fake_weight_map)
    module = _stack_module(tmp_path, rng, weight_map={"w0": 3.0, "sigma": 2.0})
    assert len(seen) == 6 and seen[0] == ((20, 30), 3.0, 2.0, (1.0, 1.0))
    # spacing is relative to the finest axis: sigma stays in in-plane pixels
    module3d = SegmentationDataModule(
        samples_dir / "3d/image.nii.gz",
        samples_dir / "3d/label.nii.gz",
        spatial_dims=3,
        patch_size=8,
        val_slices=[40, 48],
        weight_map={"w0": 1.0},
    )
    module3d.setup()
    assert seen[-1] == ((8, 96, 96), 1.0, 5.0, (2.0, 1.0, 1.0))
    for item in (module.val_set[0], module.train_set[0]):
        torch.testing.assert_close(item["weight"], item["label"].float() * 3 + 1)


def test_foreground_oversampling(tmp_path):
    image = np.zeros((40, 40), np.uint8)
    label = np.zeros((40, 40), np.uint8)
    label[30:32, 5:7] = 1
    for name in ("a", "b"):
        write_volume(tmp_path / "img" / f"{name}.tif", image)
        write_volume(tmp_path / "lab" / f"{name}.tif", label)
    module = SegmentationDataModule(
        tmp_path / "img",
        tmp_path / "lab",
        patch_size=[5, 5],
        samples_per_epoch=16,
        batch_size=16,
        foreground_prob=1.0,
    )
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert torch.all(batch["label"][:, 2, 2] == 1)  # every patch centred on the object


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_map": {255: 0}}, r"lab\.tif: label values \[0\] are not in label_map"),
        ({"label_map": None}, r"lab\.tif: label values \[255\] are outside the classes 0\.\.1"),
        ({"val_slices": [4, 9]}, r"val_slices \[4, 9\] must lie within 0\.\.6"),
        ({"num_classes": 2, "label_map": {255: 0, 0: 2}}, r"lab\.tif.*\[2\] are outside"),
    ],
)
def test_label_errors_name_the_file(tmp_path, rng, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _stack_module(tmp_path, rng, **kwargs)


def test_pairing_errors(tmp_path, rng):
    two_classes = np.indices((8, 8))[1].astype(np.uint8) % 2
    for name in ("a", "b"):
        write_volume(tmp_path / "img" / f"{name}.tif", np.zeros((8, 8), np.uint8))
    write_volume(tmp_path / "lab" / "a.tif", two_classes)
    with pytest.raises(ValueError, match=r"b\.tif: no label file named b\.\*"):
        SegmentationDataModule(tmp_path / "img", tmp_path / "lab", patch_size=8).setup()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SegmentationDataModule(tmp_path / "nowhere", tmp_path / "lab", patch_size=8).prepare_data()
    write_volume(tmp_path / "lab" / "b.tif", np.zeros((8, 9), np.uint8))
    with pytest.raises(ValueError, match=r"b\.tif: image shape \(1, 8, 8\) does not match"):
        SegmentationDataModule(tmp_path / "img", tmp_path / "lab", patch_size=8).setup()
    write_volume(tmp_path / "lab" / "b.tif", two_classes)
    with pytest.raises(ValueError, match=r"val_names \['c'\] are not among"):
        SegmentationDataModule(tmp_path / "img", tmp_path / "lab", val_names=["c"]).setup()
    ok = SegmentationDataModule(tmp_path / "img", tmp_path / "lab", patch_size=8, val_fraction=0.5)
    ok.setup()
    assert [r.name for r in ok.val_set.regions] == ["b"]


def test_nifti_volume_of_a_3d_model_keeps_spacing(tmp_path, rng):
    image = rng.normal(size=(10, 12, 14)).astype(np.float32)
    write_volume(tmp_path / "i.nii.gz", Volume(image, spacing=(2.0, 1.0, 0.5)))
    write_volume(
        tmp_path / "l.nii.gz", Volume((image > 0).astype(np.uint8), spacing=(2.0, 1.0, 0.5))
    )
    module = SegmentationDataModule(
        tmp_path / "i.nii.gz",
        tmp_path / "l.nii.gz",
        spatial_dims=3,
        patch_size=[8, 8, 8],
        val_slices=[8, 10],
    )
    module.setup()
    assert module.train_set.regions[0].spacing == (2.0, 1.0, 0.5)
    np.testing.assert_array_equal(module.val_set.regions[0].label, (image[8:] > 0).astype(np.int64))


@pytest.mark.isbi
def test_isbi_loading(isbi_dir):
    cfg = data_config("isbi2012", patch_size=[92, 92], weight_map=None, samples_per_epoch=2)
    cfg.images, cfg.labels = str(isbi_dir / "train-volume.tif"), str(isbi_dir / "train-labels.tif")
    module = instantiate(cfg)
    module.setup("fit")
    assert [r.name for r in module.val_set.regions] == [f"train-volume[{z}]" for z in range(25, 30)]
    assert len(module.train_set.regions) == 25
    membrane = np.mean([r.label.mean() for r in module.train_set.regions])
    assert 0.15 < membrane < 0.30  # class 1 = membrane, about 22 % of the pixels
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (2, 1, 92, 92)
    assert set(batch["label"].unique().tolist()) <= {0, 1}


def test_real_augmenter_from_config():
    """conf/augment/default.yaml's Augmenter, passed as train() does: label values kept."""
    augment = instantiate(OmegaConf.load(CONFIG_DIR / "augment/default.yaml"))
    cfg = data_config("sample_2d", patch_size=[92, 92], batch_size=3, samples_per_epoch=3)
    module = instantiate(cfg, augment=augment)
    module.setup("fit")
    assert module.train_set.augment is augment
    torch.manual_seed(0)
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (3, 1, 92, 92) and batch["label"].dtype == torch.int64
    assert set(batch["label"].unique().tolist()) <= {0, 1}
    assert batch["weight"].shape == (3, 92, 92)


def test_membrane_sample_config_with_paper_weight_map():
    module = make_module("sample_membranes", patch_size=[60, 60], samples_per_epoch=2)
    assert [r.name for r in module.val_set.regions] == ["cells_03"]
    region = module.train_set.regions[0]
    # w = class balance + border term: highest on membranes squeezed between two cells
    assert region.weight.shape == region.label.shape == (256, 256)
    assert region.weight[region.label == 1].mean() > 2 * region.weight[region.label == 0].mean()
    batch = next(iter(module.train_dataloader()))
    assert batch["weight"].shape == (2, 60, 60) and float(batch["weight"].min()) > 0


def test_boundary_target_with_weight_map(samples_dir):
    module = make_module("sample_2d", patch_size=[92, 92], target="boundary",
                         weight_map={"w0": 10.0, "sigma": 5.0})  # fmt: skip
    assert module.num_classes == 3  # what the model must output: training follows it
    region = module.val_set.regions[0]
    instances = region.instances
    # Every instance keeps an interior, its boundary separates it from any touching neighbour.
    assert set(np.unique(region.label)) == {0, 1, 2}
    np.testing.assert_array_equal(region.label > 0, instances > 0)
    inner = region.label == 1
    shifted = np.zeros_like(instances)
    shifted[1:] = instances[:-1]
    assert not np.any(inner & (shifted > 0) & (shifted != instances))
    # The border term weighs the boundary and background pixels between interiors.
    assert region.weight.max() > 5 and region.weight[inner].max() < 5
    batch = next(iter(module.train_dataloader()))
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2}
