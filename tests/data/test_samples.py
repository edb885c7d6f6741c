"""Committed sample data: the documented layout, exact masks, reproducibility from the seed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_seg.data.samples import generate, main, separated_mask
from unet_seg.io import read_volume


def _relative(paths, root):
    return sorted(str(p.relative_to(root)) for p in paths)


def test_regenerating_reproduces_committed_files(tmp_path, samples_dir):
    written = generate(tmp_path, seed=0)
    committed = sorted(
        str(p.relative_to(samples_dir))
        for p in samples_dir.rglob("*")
        if p.suffix in (".tif", ".gz")
    )
    assert _relative(written, tmp_path) == committed
    for name in committed:
        new, old = read_volume(tmp_path / name), read_volume(samples_dir / name)
        assert new.array.dtype == old.array.dtype, name
        np.testing.assert_array_equal(new.array, old.array, err_msg=name)
        assert new.spacing == pytest.approx(old.spacing), name


def test_other_seed_gives_other_data(tmp_path, samples_dir, capsys):
    main(["--out", str(tmp_path), "--seed", "1"])
    assert "wrote 43 files" in capsys.readouterr().out
    a = read_volume(tmp_path / "2d/labels/nuclei_00.tif").array
    b = read_volume(samples_dir / "2d/labels/nuclei_00.tif").array
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_layout_shapes_and_values(samples_dir):
    images = sorted((samples_dir / "2d/images").glob("*.tif"))
    labels = sorted((samples_dir / "2d/labels").glob("*.tif"))
    assert [p.name for p in images] == [p.name for p in labels] and len(images) >= 8
    for image_path, label_path in zip(images, labels, strict=True):
        image, label = read_volume(image_path).array, read_volume(label_path).array
        assert image.shape == label.shape == (256, 256)
        assert set(np.unique(label)) == {0, 1}
        # decent contrast: nuclei are clearly brighter than background
        assert image[label == 1].mean() > image[label == 0].mean() + 4 * image[label == 0].std()
    image3d, label3d = (
        read_volume(samples_dir / "3d/image.nii.gz"),
        read_volume(samples_dir / "3d/label.nii.gz"),
    )
    assert image3d.array.shape == label3d.array.shape == (48, 96, 96)
    assert image3d.spacing == pytest.approx((1.0, 0.5, 0.5))
    assert set(np.unique(label3d.array)) == {0, 1}
    stack = read_volume(samples_dir / "stack/stack.tif")
    stack_labels = read_volume(samples_dir / "stack/stack_labels.tif").array
    instances = read_volume(samples_dir / "stack/stack_instances.tif").array
    assert stack.array.shape == stack_labels.shape == instances.shape == (16, 256, 256)
    assert stack.spacing == pytest.approx((2.0, 0.5, 0.5))
    assert set(np.unique(stack_labels)) == {0, 1}
    # the 0/1 label is the instance mask minus the seams between touching objects
    assert np.all(stack_labels <= (instances > 0))
    total = sum(p.stat().st_size for p in samples_dir.rglob("*") if p.is_file())
    assert total < 5e6


def test_touching_nuclei_are_separated_by_a_seam(samples_dir):
    instances = read_volume(samples_dir / "2d/instances/nuclei_00.tif").array.astype(np.int32)
    label = read_volume(samples_dir / "2d/labels/nuclei_00.tif").array
    np.testing.assert_array_equal(label, separated_mask(instances))
    touching = (ndi.grey_dilation(instances, size=3) != instances) & (instances > 0)
    assert touching.any(), "the sample should contain touching nuclei"
    # no 8-connected component of the 0/1 mask spans two nuclei
    components, _ = ndi.label(label, structure=np.ones((3, 3)))
    for component in range(1, components.max() + 1):
        assert len(np.unique(instances[components == component])) == 1


def test_separated_mask_on_two_touching_squares():
    instances = np.zeros((6, 8), np.int32)
    instances[1:5, 1:4] = 1
    instances[1:5, 4:7] = 2
    mask = separated_mask(instances)
    np.testing.assert_array_equal(mask[2], [0, 1, 1, 0, 0, 1, 1, 0])
    assert mask.sum() == 2 * 4 * 2
