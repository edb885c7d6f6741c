"""NGFF metadata of the stores we write, as a reader that is not the writer sees it
(``ome-zarr``'s reader, which napari's OME-Zarr plugin uses): the recommended multiscales
fields, and label images marked as labels, with class colours and names."""

from __future__ import annotations

import numpy as np
import pytest

from tests.prediction.test_predict import TINY_2D, save_checkpoint
from tests.prediction.test_predict_zarr import config, make_input
from unet_seg.io.zarr.ngff import CLASS_COLOURS, class_label_mark
from unet_seg.io.zarr.output import ZarrOutput, write_zarr
from unet_seg.prediction.batch import predict

reader = pytest.importorskip("ome_zarr.reader")
ome_io = pytest.importorskip("ome_zarr.io")


def specs(path) -> tuple[list[str], dict]:
    """The spec names of the first node ``ome-zarr`` reads at ``path``, and its metadata."""
    node = next(iter(reader.Reader(ome_io.parse_url(str(path)))()))
    return [type(s).__name__ for s in node.specs], node.metadata


def ome_of(version: str) -> dict:
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    return {"version": version, "axes": axes, "scale": [2.0, 0.5, 0.5], "name": "x"}


def attrs_of(path, version: str) -> dict:
    import zarr

    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    return attrs if version == "0.4" else attrs["ome"]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_label_store_reads_as_labels_with_colours_and_class_names(tmp_path, version):
    path = tmp_path / "x_labels.ome.zarr"
    out = ZarrOutput(path, (4, 64, 64), np.uint8, (4, 64, 64), ome_of(version), True, {}, 3,
                     class_label_mark(3))  # fmt: skip
    out.abort(), out.open()
    out.write((slice(None),) * 3, np.ones((4, 64, 64), np.uint8))
    out.commit()
    names, metadata = specs(path)
    assert names == ["Label", "Multiscales"]
    assert metadata["color"][0] == [0.0, 0.0, 0.0, 0.0]  # the background is transparent
    assert metadata["color"][2] == pytest.approx([c / 255 for c in CLASS_COLOURS[1]] + [1.0])
    assert metadata["properties"] == {0: {"class": "background"}, 1: {"class": "class 1"},
                                      2: {"class": "class 2"}}  # fmt: skip
    (multiscale,) = attrs_of(path, version)["multiscales"]
    assert multiscale["type"] == "nearest"
    assert multiscale["metadata"]["method"] == "unet_seg.io.zarr.ngff.build_pyramid"


def test_raw_images_are_not_marked_as_labels(tmp_path):
    path = write_zarr(tmp_path / "raw.ome.zarr", np.ones((4, 64, 64), np.uint16),
                      ome=ome_of("0.5"))  # fmt: skip
    assert specs(path)[0] == ["Multiscales"]
    assert attrs_of(path, "0.5")["multiscales"][0]["type"] == "nearest"  # integers: by picking


def test_predicts_label_outputs_read_as_labels_and_probabilities_as_an_image(tmp_path, rng):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", TINY_2D, seed=0)
    source = make_input(tmp_path, rng.integers(0, 4000, (3, 40, 44)).astype(np.uint16))
    out = tmp_path / "out"
    summary = predict(config(input=source, output_dir=out, checkpoint=ckpt, tile_size=16,
                             **{"outputs.probabilities": True, "outputs.instances": True,
                                "instances.method": "cc"}))  # fmt: skip
    assert summary["ok"] == 1, summary["files"]
    assert specs(out / "raw_labels.ome.zarr")[0] == ["Label", "Multiscales"]
    assert specs(out / "raw_labels.ome.zarr")[1]["properties"][1] == {"class": "class 1"}
    assert specs(out / "raw_instances.ome.zarr")[0] == ["Label", "Multiscales"]
    names, metadata = specs(out / "raw_probs.ome.zarr")
    assert names == ["Multiscales", "OMERO"]  # an image, its channels named after the classes
    assert metadata["channel_names"] == ["background", "class 1"]
    assert attrs_of(out / "raw_probs.ome.zarr", "0.5")["multiscales"][0]["type"] == "mean"
    # Into the input's labels/ group: the source image besides the colours.
    into = predict(config(input=source, output_dir=tmp_path / "into", checkpoint=ckpt,
                          tile_size=16, **{"outputs.into_input": True}))  # fmt: skip
    assert into["ok"] == 1, into["files"]
    mark = attrs_of(source / "labels" / "unet-seg", "0.5")["image-label"]
    assert mark["source"] == {"image": "../../"} and len(mark["colors"]) == 2
