"""Where predict writes each input's outputs, decided for the whole batch before any work, and
whether outputs already there are complete.

- Inputs from more than one folder keep their folders: outputs go to ``output_dir`` plus the
  input's folder relative to the inputs' common folder, so ``a/x.tif`` and ``b/x.tif`` never
  share ``x_labels.tif``.
- Two inputs that would still write the same file (``x.tif`` and ``x.TIF``; ``x.png`` and
  ``x.tif``, whose probabilities are both ``x_probs.tif``) are refused before any work, naming
  both; names are compared without case, as macOS and Windows file systems do.
- "Skip existing" skips an input only when every output exists *and* opens with the expected
  shape; anything else is predicted again.
- Zarr / OME-Zarr inputs write zarr stores; with ``outputs.into_input`` their label images go
  into the input's ``labels/`` group (:data:`LABEL_NAMES`).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from unet_seg.errors import UsageError
from unet_seg.inference.inputs import open_input
from unet_seg.io import open_volume
from unet_seg.io.atomic import MARK
from unet_seg.io.channel_files import InputFiles, describe, first_file, is_store, naming_path
from unet_seg.io.files import format_suffix, output_path, stem
from unet_seg.io.zarr.ngff import label_group_path
from unet_seg.io.zarr.store import ZarrVolume
from unet_seg.models.protocol import SegmentationNetwork

LABEL_NAMES = {"labels": "unet-seg", "instances": "unet-seg-instances"}  # in an image's labels/
OUTPUT_ENDINGS = ("_labels", "_probs", "_instances", "_objects", "_preview")
# The outputs that are volumes with a shape to check; the preview (a PNG) and the objects
# table (a CSV) are only pictures of and notes on them.
VOLUME_KINDS = ("labels", "probabilities", "instances")


def output_paths(source: InputFiles, out_dir: Path, outputs: dict) -> dict[str, Path]:
    """Output file per enabled kind (``labels``, ``probabilities``, ``instances``, ``preview``;
    ``objects``, the instances' table, only with ``instances``), named after the input file or
    the case of channel files (:func:`~unet_seg.io.channel_files.naming_path`)."""
    path = naming_path(source)
    suffix = format_suffix(path)
    names = {
        "labels": output_path(path, out_dir, "_labels"),
        "probabilities": output_path(path, out_dir, "_probs", ".tif" if suffix == ".png" else None),
        "instances": output_path(path, out_dir, "_instances"),
        "objects": output_path(path, out_dir, "_objects", ".csv"),
        "preview": output_path(path, out_dir, "_preview", ".png"),
    }
    enabled = {kind for kind in names if outputs.get(kind)}
    if "instances" not in enabled:
        enabled.discard("objects")
    return {kind: name for kind, name in names.items() if kind in enabled}


def is_output(path: Path, out_dir: Path) -> bool:
    """``path`` is one of our outputs in ``out_dir`` (or its mirrored subfolders)."""
    root, parent = out_dir.resolve(), path.parent.resolve()
    inside = parent == root or root in parent.parents
    return inside and stem(path).endswith(OUTPUT_ENDINGS)


def scratch_path(path: Path, kind: str = "labels", suffix: str | None = None) -> Path:
    """A hidden temporary name beside ``path`` for a scratch output that is never renamed: the
    label map only the preview needs (``kind="labels"``), the blocks' local instance ids
    (``"instances"``) or the seeded watershed's probability maps (``"seeds"``)."""
    suffix = suffix or format_suffix(path)
    return path.with_name(f".{path.name}.{MARK}-{kind}-{uuid.uuid4().hex[:8]}{suffix}")


def plan_outputs(
    files: list[InputFiles], out_dir: Path, outputs: dict
) -> dict[InputFiles, dict[str, Path]]:
    """``{input: {kind: output}}`` for the batch (see the module docstring); an input is a file
    or a case's channel files (:mod:`unet_seg.io.channel_files`).

    Raises:
        UsageError: two inputs would write the same output (the message names both).
    """
    parents = {first_file(f).resolve().parent for f in files}
    common = Path(os.path.commonpath([str(p) for p in parents])) if len(parents) > 1 else None
    plan: dict[InputFiles, dict[str, Path]] = {}
    owners: dict[str, InputFiles] = {}
    for path in files:
        parent = first_file(path).resolve().parent
        folder = out_dir / parent.relative_to(common) if common else out_dir
        targets = output_paths(path, folder, outputs)
        for target in targets.values():
            key = str(target).lower()
            other = owners.setdefault(key, path)
            if other != path:
                raise UsageError(
                    f"{describe(other)} and {describe(path)} would both write {target}: rename "
                    "one, or predict them into different output folders"
                )
        plan[path] = _chunked_targets(path, targets, outputs)
    return plan


def _files_complete(targets: dict[str, Path], spatial: tuple[int, ...], classes: int) -> bool:
    """Every output exists and opens with its expected shape (``spatial``; probabilities
    ``(classes, *spatial)``): a partial or foreign file under an output's name is not skipped."""
    for kind, target in targets.items():
        if kind not in VOLUME_KINDS:  # a picture, a table: no shape to check
            if not target.is_file():
                return False
            continue
        expected = (classes, *spatial) if kind == "probabilities" else tuple(spatial)
        try:
            if not target.exists() or open_volume(target).shape != expected:
                return False
        except (OSError, ValueError):
            return False
    return True


def _chunked_targets(path: InputFiles, targets: dict[str, Path], outputs: dict) -> dict[str, Path]:
    """Targets of a zarr input: a preview only with the labels (it is drawn from their store);
    with ``outputs.into_input`` the label images go into the input's ``labels/`` group (the
    preview stays in the output folder)."""
    if not is_store(path):
        if outputs.get("into_input"):
            raise UsageError(f"{describe(path)}: outputs.into_input needs an .ome.zarr input")
        return targets
    targets = {k: v for k, v in targets.items() if k != "preview" or "labels" in targets}
    if outputs.get("into_input"):
        if format_suffix(path) != ".ome.zarr":
            raise UsageError(f"{path}: outputs.into_input needs an .ome.zarr input")
        for kind in ("labels", "instances"):
            if kind in targets:
                targets[kind] = label_group_path(path, LABEL_NAMES[kind])
    return targets


def is_complete(path: InputFiles, targets: dict, model: SegmentationNetwork, options: Any) -> bool:
    """Every output of ``path`` exists and opens with its expected shape (zarr stores too):
    a partial or foreign output under an output's name is predicted again."""
    if not all(t.exists() for t in targets.values()):  # zarr outputs are directories
        return False
    _, source, layout = open_input(path, model, options)
    spatial, classes = layout.spatial_shape(source.shape), int(model.num_classes)
    if is_store(path):  # zarr stores, some named without a suffix
        try:
            return all(
                ZarrVolume(t).shape == ((classes, *spatial) if k == "probabilities" else spatial)
                for k, t in targets.items()
                if k in VOLUME_KINDS  # the PNG and the CSV: there, checked above
            )
        except (OSError, ValueError):  # a foreign or broken store: predict again
            return False
    return _files_complete(targets, spatial, classes)
