"""``export(cfg)``: what ``unet-seg-export`` runs (``conf/export.yaml``); tests call it directly."""

from __future__ import annotations

import logging
import string
from pathlib import Path
from typing import Any

from unet_seg.errors import UsageError
from unet_seg.export.bioimageio import PackageInfo, export_bioimageio
from unet_seg.export.onnx import export_onnx
from unet_seg.export.torchscript import export_torchscript
from unet_seg.models.checkpoint import checkpoint_target, network_from_checkpoint, read_checkpoint
from unet_seg.models.ensemble import EnsembleNetwork, check_members, resolve_checkpoints
from unet_seg.models.exported import TUNED_KEY

log = logging.getLogger(__name__)
FORMATS = ("torchscript", "onnx", "bioimageio")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx", "bioimageio": ".bioimageio.zip"}
# The bioimage.io spec's rule for a package's name: these characters, 5 to 128 of them.
NAME_ALPHABET = string.ascii_letters + string.digits + "_+- ()"
NAME_LENGTH = (5, 128)


def package_name(stem: str, given: str | None = None) -> str:
    """The bioimage.io package's display name: ``given`` (``bioimageio.name``) as it is,
    refused naming the option where it breaks the spec's rule; else ``U-Net <stem>`` with each
    character the spec does not allow made ``_`` (``epoch000-dice0.9120`` ->
    ``U-Net epoch000-dice0_9120``), cut to the spec's length."""
    if given is not None:
        bad = sorted({c for c in given if c not in NAME_ALPHABET})
        if bad or not NAME_LENGTH[0] <= len(given) <= NAME_LENGTH[1]:
            raise UsageError(
                f"bioimageio.name={given!r}: a package name is {NAME_LENGTH[0]} to "
                f"{NAME_LENGTH[1]} letters, digits, spaces and _+-() (not {''.join(bad)!r})"
            )
        return given
    name = "".join(c if c in NAME_ALPHABET else "_" for c in f"U-Net {stem}")
    return name[: NAME_LENGTH[1]]


def export_name(checkpoint: str | Path) -> str:
    """``runs/<name>/model.ckpt`` -> ``<name>``; any other ``<stem>.ckpt`` -> ``<stem>``."""
    path = Path(checkpoint)
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def _load_checkpoint(checkpoint: str | Path):
    """``(network, percentiles, tuning, target)`` of a training checkpoint, read once;
    ``tuning``: unet-seg-tune's result (None if untuned), which predict uses as with the
    ``.ckpt``; ``target``: the data.target it learnt, so evaluate can read a boundary model's
    labels from the export."""
    if Path(checkpoint).suffix != ".ckpt":
        raise ValueError(f"{checkpoint}: export needs a training checkpoint (.ckpt)")
    content = read_checkpoint(checkpoint)
    model, norm = network_from_checkpoint(content, checkpoint)
    return model, norm, content.get(TUNED_KEY), checkpoint_target(content)


def _load_members(checkpoint: Any) -> tuple:
    """:func:`_load_checkpoint` of ``checkpoint``, or for several (a list, a model folder of
    folds: :func:`~unet_seg.models.ensemble.resolve_checkpoints`) their
    :class:`~unet_seg.models.ensemble.EnsembleNetwork`, which returns the log of the mean
    softmax (logits, as every export does); their shared tuning and target, if any."""
    paths = resolve_checkpoints(checkpoint)
    loaded = [_load_checkpoint(path) for path in paths]
    if len(loaded) == 1:
        return loaded[0]
    names = [str(p) for p in paths]
    check_members([m for m, *_ in loaded], names, [n for _, n, *_ in loaded])
    for path, (*_, target) in zip(names[1:], loaded[1:], strict=True):
        if target != loaded[0][3]:
            raise UsageError(f"{names[0]} and {path} cannot be ensembled: they learnt other "
                             f"targets ({loaded[0][3]} vs {target})")  # fmt: skip
    tunings = [tuning for *_, tuning, _ in loaded]
    tuning = tunings[0] if all(t == tunings[0] for t in tunings) else None
    log.info("ensemble of %d checkpoints: %s", len(paths), ", ".join(names))
    return EnsembleNetwork([m for m, *_ in loaded]).eval(), loaded[0][1], tuning, loaded[0][3]


def ensemble_name(checkpoint: Any) -> str:
    """The file stem of an export of ``checkpoint``: :func:`export_name` of one checkpoint;
    of several, ``<folder>_ensemble`` for a model folder, else ``<first>_ensemble``."""
    if isinstance(checkpoint, str | Path) and not Path(checkpoint).is_dir():
        return export_name(checkpoint)
    items = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint)
    paths = resolve_checkpoints(checkpoint)
    if len(paths) == 1:
        return export_name(paths[0])
    first = Path(str(items[0]))
    return f"{first.name if first.is_dir() else export_name(first)}_ensemble"


def _test_image(path: str | None):
    if not path:
        return None
    from unet_seg.io import read_volume

    return read_volume(path).array


def export(cfg: Any) -> dict[str, Path]:
    """Export ``cfg.checkpoint`` in ``cfg.format`` into ``cfg.output_dir``; returns
    ``{format: written file}``. Files are written atomically."""
    formats = FORMATS if cfg.format == "all" else (str(cfg.format),)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"format must be one of {', '.join(FORMATS)} or all, got {cfg.format!r}")
    name = cfg.name or ensemble_name(cfg.checkpoint)
    bio = cfg.bioimageio
    # Checked before anything is written: a bad name must not leave half the formats behind.
    title = package_name(name, bio.get("name")) if "bioimageio" in formats else ""
    model, norm, tuning, target = _load_members(cfg.checkpoint)
    if isinstance(model, EnsembleNetwork) and "bioimageio" in formats:
        raise UsageError("format=bioimageio packages one U-Net; export an ensemble (several "
                         "checkpoints) as torchscript or onnx")  # fmt: skip
    out_dir = Path(cfg.output_dir)
    written = {}
    for fmt in formats:
        path = out_dir / f"{name}{SUFFIXES[fmt]}"
        if fmt == "torchscript":
            export_torchscript(model, norm, path, tuning, target)
        elif fmt == "onnx":
            export_onnx(model, norm, path, tuning, target)
        else:
            info = PackageInfo(
                name=title, description=str(bio.description), authors=list(bio.authors),
                license=str(bio.license), tags=list(bio.tags),
                class_names=list(bio.class_names) if bio.class_names else None,
            )  # fmt: skip
            image = _test_image(bio.test_image)
            export_bioimageio(model, norm, path, info, image, tuning, target)
        log.info("%s: wrote %s", fmt, path)
        written[fmt] = path
    return written
