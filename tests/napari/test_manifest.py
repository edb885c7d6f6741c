"""The npe2 manifest: valid, found through the package's entry point, every command importable."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

import unet_seg.napari

npe2 = pytest.importorskip("npe2", reason="the napari extra is not installed")
MANIFEST = Path(unet_seg.napari.__file__).with_name("napari.yaml")


def test_the_manifest_is_valid_and_its_commands_import():
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "unet-seg"
    manifest.validate_imports()  # raises naming a python_name that does not import
    commands = {c.id for c in manifest.contributions.commands}
    assert {r.command for r in manifest.contributions.readers} <= commands
    assert [s.key for s in manifest.contributions.sample_data] == ["nuclei_2d", "nuclei_stack",
                                                                    "nuclei_3d"]  # fmt: skip


def test_napari_finds_it_through_the_entry_point():
    found = [e for e in entry_points(group="napari.manifest") if e.name == "unet-seg"]
    assert [e.value for e in found] == ["unet_seg.napari:napari.yaml"]
