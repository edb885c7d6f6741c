"""Every kind of OME-Zarr store we write (an image conversion, class labels, instance ids,
probabilities), NGFF 0.4 and 0.5, validated against the NGFF JSON schemas that ``ngff-zarr``
bundles: a validator independent of the writer, which builds its metadata with
``ome-zarr-models``. Images are held to the strict schema (the recommended ``name``, ``type``
and ``metadata`` of ``multiscales``), class label maps to the strict label schema (colours)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from tests.prediction.test_predict import TINY_2D, save_checkpoint
from tests.prediction.test_predict_zarr import config, make_input
from unet_seg.io import Volume, write_volume
from unet_seg.io.zarr.convert import convert_to_ome_zarr
from unet_seg.io.zarr.ngff import class_label_mark, class_names
from unet_seg.io.zarr.output import ZarrOutput
from unet_seg.prediction.batch import predict

validate = pytest.importorskip("ngff_zarr.validate").validate
VERSIONS = ["0.4", "0.5"]


def attributes(path) -> dict:
    """The group attributes at ``path`` as stored (0.5 keeps them under ``ome``)."""
    return dict(zarr.open_group(str(path), mode="r").attrs)


def ome_part(attrs: dict, version: str) -> dict:
    return attrs if version == "0.4" else attrs["ome"]


def check(path, version: str, kind: str) -> dict:
    """Validate the store at ``path`` as ``kind`` (``image``, ``labels``: a class map,
    ``instances``: ids) and return its NGFF metadata."""
    attrs = attributes(path)
    validate(attrs, version=version, model="image", strict=True)
    if kind != "image":
        validate(attrs, version=version, model="label", strict=kind == "labels")
    return ome_part(attrs, version)


def ome_of(version: str) -> dict:
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    return {"version": version, "axes": axes, "scale": [2.0, 0.5, 0.5], "name": "x"}


def test_the_validator_is_not_the_writer_and_refuses_what_the_spec_refuses():
    import inspect

    import ngff_zarr.validate as module

    # JSON schemas and jsonschema: nothing of ome-zarr-models, which writes our metadata.
    assert "ome_zarr_models" not in inspect.getsource(module)
    assert "jsonschema" in inspect.getsource(module)
    image = {"multiscales": [{"version": "0.4", "axes": [{"name": "y"}, {"name": "x"}],
                              "datasets": []}]}  # fmt: skip
    with pytest.raises(Exception, match=r"\[\] should be non-empty|too short"):
        validate(image, version="0.4", model="image")


@pytest.mark.parametrize("version", VERSIONS)
def test_the_stores_we_write_pass_the_ngff_schemas(tmp_path, version):
    converted = convert_to_ome_zarr(
        write_volume(tmp_path / "raw.tif", Volume(np.ones((3, 40, 44), np.uint16))),
        tmp_path / "raw.ome.zarr", version=version,
    )  # fmt: skip
    meta = check(converted, version, "image")
    assert meta["multiscales"][0]["name"] == "raw.tif"

    labels = ZarrOutput(tmp_path / "x_labels.ome.zarr", (4, 32, 32), np.uint8, (4, 32, 32),
                        ome_of(version), True, {}, 3, class_label_mark(3))  # fmt: skip
    instances = ZarrOutput(tmp_path / "x_instances.ome.zarr", (4, 32, 32), np.uint32,
                           (4, 32, 32), ome_of(version), True, {}, 3, {})  # fmt: skip
    ome = {**ome_of(version), "channel_names": class_names(3)}
    probs = ZarrOutput(tmp_path / "x_probs.ome.zarr", (3, 4, 32, 32), np.uint8, (1, 4, 32, 32),
                       ome, False, {}, 3)  # fmt: skip
    for store in (labels, instances, probs):
        store.abort(), store.open()
        store.write((slice(None),) * len(store.shape), np.ones(store.shape, store.dtype))
        store.commit()
    assert check(labels.path, version, "labels")["image-label"]["colors"][0]["rgba"][3] == 0
    assert "image-label" in check(instances.path, version, "instances")
    channels = check(probs.path, version, "image")["omero"]["channels"]
    assert [c["label"] for c in channels] == ["background", "class 1", "class 2"]
    assert channels[0]["window"]["max"] == 255.0  # uint8 probabilities: p * 255


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_predicts_outputs_pass_the_ngff_schemas(tmp_path, rng, version):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", TINY_2D, seed=0)
    data = rng.integers(0, 4000, (3, 40, 44)).astype(np.uint16)
    source = make_input(tmp_path, data, version=version)
    out = tmp_path / "out"
    outputs = {"outputs.probabilities": True, "outputs.instances": True,
               "instances.method": "cc", "probability_dtype": "float16"}  # fmt: skip
    summary = predict(
        config(input=source, output_dir=out, checkpoint=ckpt, tile_size=16, **outputs)
    )
    assert summary["ok"] == 1, summary["files"]
    check(source, version, "image")
    assert "colors" in check(out / "raw_labels.ome.zarr", version, "labels")["image-label"]
    check(out / "raw_instances.ome.zarr", version, "instances")
    channels = check(out / "raw_probs.ome.zarr", version, "image")["omero"]["channels"]
    assert [c["label"] for c in channels] == class_names(TINY_2D["num_classes"])
    assert channels[1]["window"]["max"] == 1.0  # float probabilities
    # Labels written into the input's own labels/ group.
    into = predict(config(input=source, output_dir=tmp_path / "into", checkpoint=ckpt,
                          tile_size=16, **{"outputs.into_input": True}))  # fmt: skip
    assert into["ok"] == 1, into["files"]
    label_meta = check(source / "labels" / "unet-seg", version, "labels")
    assert label_meta["image-label"]["source"] == {"image": "../../"}
    assert ome_part(attributes(source / "labels"), version)["labels"] == ["unet-seg"]
