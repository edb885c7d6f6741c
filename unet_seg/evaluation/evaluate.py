"""Compare a folder of predictions with ground truth: per file and overall, to CSV and JSON.

Files pair up by key: the name without its format suffix and without ``pred_suffix`` /
``gt_suffix`` (``stack_labels.tif`` in both folders is key ``stack``). Segments for Rand error,
VI and the instance figures (AP, precision/recall/F1, panoptic quality, and the counts of merges,
splits, missed and extra objects: :mod:`unet_seg.evaluation.error_kinds`) are the instance files
(``*_instances``) where both folders have them, else the connected components of
``foreground_class``. Overall figures are the mean over files and, pooled over every voxel or
object at once, Dice/IoU and the instance figures. ``evaluate(cfg)`` runs ``unet-seg-evaluate``;
with ``report`` it also writes ``report.html`` (:mod:`unet_seg.viz.report`), whose overlays lie
on each file's image ``<key><image_suffix>`` in ``image_dir`` (default ``gt_dir``), if it has one.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from unet_seg.config import whole
from unet_seg.data.labels import OBJECTS
from unet_seg.errors import InputNotFoundError, UsageError
from unet_seg.evaluation.contingency import contingency
from unet_seg.evaluation.error_kinds import ErrorKinds
from unet_seg.evaluation.instances import AP_THRESHOLDS, MatchCounts, pool, scores
from unet_seg.evaluation.metrics import confusion_counts, dice_iou, pixel_error
from unet_seg.evaluation.predicted_classes import boundary_label_map
from unet_seg.evaluation.slabwise import (
    LabelReading,
    PairFiles,
    PairResult,
    evaluate_files,
    figures,
    slice_labels,
)
from unet_seg.io import open_volume
from unet_seg.io.atomic import write_json_atomic, write_text_atomic
from unet_seg.io.files import files_by_key, is_image, stem
from unet_seg.viz.report import ReportBuilder

log = logging.getLogger(__name__)


def _keyed(folder: Path, suffix: str) -> dict[str, Path]:
    """``{key: path}`` of the supported files in ``folder`` whose stem ends with ``suffix``.

    Raises:
        UsageError: two files have the same key (``a_labels.tif`` and ``a_labels.nii.gz``, or
            ``a.tif`` and ``a.TIF``): which one to score is not ours to guess.
    """
    if not folder.is_dir():
        raise InputNotFoundError(f"{folder}: no such folder")
    # is_image: a file, or a zarr store (a directory)
    return files_by_key([p for p in sorted(folder.iterdir()) if is_image(p)], suffix)


def _suffix_hint(folder: Path, key: str) -> str:
    """``": found a_masks.tif, pass gt_suffix=_masks"`` where ``folder`` holds a file named
    ``key`` with another suffix (Cellpose's ``_masks``, ...), else ``""``."""
    for path in sorted(folder.iterdir()):
        rest = stem(path)[len(key) :] if stem(path).startswith(key) else None
        if is_image(path) and rest is not None and (not rest or rest[0] in "_-."):
            return f": found {path.name}, pass gt_suffix={rest or repr('')}"
    return ""


def _numbers(cfg: Any) -> tuple[int, int, int]:
    """``(num_classes, foreground_class, report_slices)`` of ``cfg``; ``UsageError`` naming the
    option that is not a whole number in its range."""
    num_classes = whole("num_classes (background and a class)", cfg.num_classes, 2)
    foreground = whole("foreground_class", cfg.foreground_class)
    if not 0 <= foreground < num_classes:
        raise UsageError(f"foreground_class must be one of the classes 0..{num_classes - 1}, "
                         f"got {foreground}")  # fmt: skip
    slices = whole("report_slices", cfg.get("report_slices", 3), 1)
    return num_classes, foreground, slices


def _instance_roles(cfg: Any, pred_ids: Path, truth_ids: Path | None) -> dict[Path, str]:
    """``{instance file: what it is, with the option that chose it}`` of a pair; the truth's
    object ids read from its labels (``gt_label_map=objects``) are no instance file."""
    roles = {pred_ids: f"the prediction's instance file (pred_instance_suffix="
                       f"{cfg.pred_instance_suffix})"}  # fmt: skip
    if truth_ids is not None:
        chosen = f"gt_instance_suffix={cfg.gt_instance_suffix or repr('')}"
        if cfg.get("gt_instance_dir"):
            chosen += f", gt_instance_dir={cfg.gt_instance_dir}"
        roles[truth_ids] = f"the ground truth's instance file ({chosen})"
    return roles


def _as_instance_file_error(err: Exception, roles: Mapping[Path, str]) -> str:
    """The message of ``err``, said as the instance file's where it is about one (it starts with
    that file's name): ``"<path>: the prediction's instance file (...): <problem>"``."""
    text = str(err)
    for path, role in roles.items():
        if text.startswith(f"{path}: "):
            return f"{path}: {role}: {text.removeprefix(f'{path}: ')}"
    return text


def _label_map(cfg: Any, key: str) -> dict[Any, int] | str | None:
    """``cfg[key]`` as a plain ``{stored value: class}`` dict, or ``"objects"`` (object-id
    masks: every id is class 1); None when unset."""
    value = cfg.get(key)
    if value is None or value == OBJECTS:
        return value
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if not isinstance(value, dict) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in value.values()
    ):
        raise UsageError(
            f"{key} must map stored label values to class numbers, or be {OBJECTS!r}, got {value!r}"
        )
    return value


def evaluate_pair(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    foreground_class: int = 1,
    pred_instances: np.ndarray | None = None,
    gt_instances: np.ndarray | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Figures of one prediction ``(*spatial)`` against its truth, and its ``(K, 3)`` counts."""
    row, counts, _ = pair_figures(
        pred, gt, num_classes, foreground_class, pred_instances, gt_instances
    )
    return row, counts


def pair_figures(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    foreground_class: int = 1,
    pred_instances: np.ndarray | None = None,
    gt_instances: np.ndarray | None = None,
) -> tuple[dict[str, float], np.ndarray, dict[float, MatchCounts]]:
    """:func:`evaluate_pair` and the object matching counts per IoU threshold, for pooling: the
    whole images at once (``unet-seg-evaluate`` reads files slab by slab,
    :mod:`~unet_seg.evaluation.slabwise`, to the same figures)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    counts = confusion_counts(pred, gt, num_classes)
    if pred_instances is None or gt_instances is None:
        pred_instances = ndi.label(pred == foreground_class, output=np.int32)[0]
        gt_instances = ndi.label(gt == foreground_class, output=np.int32)[0]
    # Ids of files may be any values, sparse and huge: the contingency table never allocates
    # by the largest id, and is counted slab by slab.
    row, matches = figures(counts, 0, 0, contingency(pred_instances, gt_instances))
    row["pixel_error"] = pixel_error(pred, gt)
    return row, counts, matches


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _add_pictures(
    report: ReportBuilder,
    key: str,
    files: PairFiles,
    reading: LabelReading,
    result: PairResult,
    image: Path | None,
) -> None:
    """The report's thumbnails of one pair, over its image when it has one that fits; only the
    slices shown are read (strided), from the per-plane counts of the evaluation."""
    shape = result.shape
    foreground, errors = result.foreground, result.wrong
    if len(shape) == 2:  # one picture: the plane's rows were counted one by one
        foreground, errors = [int(foreground.sum())], [int(errors.sum())]

    def read(z: int | None, step: int) -> tuple[np.ndarray, np.ndarray]:
        return slice_labels(files, reading, z, step)

    for source in (image, None) if image is not None else (None,):
        try:
            with ExitStack() as stack:
                lazy = stack.enter_context(open_volume(source)) if source is not None else None
                report.add_slices(key, shape, foreground, errors, read, lazy)
            return
        except Exception as err:  # pictures are extra: they never fail the evaluation
            log.warning("%s: report %s: %s", key, "without image" if source else "no pictures", err)


def evaluate(cfg: Any) -> dict:
    """Evaluate ``cfg.pred_dir`` against ``cfg.gt_dir``; writes ``evaluation.csv`` and
    ``evaluation.json`` into ``cfg.output_dir`` (default: ``pred_dir``) and returns the summary.

    A pair that cannot be read or compared is reported by name (``summary["failed"]``), and so is
    ground truth without a prediction.
    """
    num_classes, foreground, report_slices = _numbers(cfg)
    pred_dir, gt_dir = Path(cfg.pred_dir), Path(cfg.gt_dir)
    preds, gts = _keyed(pred_dir, cfg.pred_suffix), _keyed(gt_dir, cfg.gt_suffix)
    pred_inst = _keyed(pred_dir, cfg.pred_instance_suffix) if cfg.pred_instance_suffix else {}
    # A separate instance folder may name its files like the labels (suffix ""); in gt_dir an
    # empty suffix would take the label files themselves, so there it means "none".
    if cfg.get("gt_instance_dir"):
        gt_inst = _keyed(Path(cfg.gt_instance_dir), cfg.gt_instance_suffix or "")
    else:
        gt_inst = _keyed(gt_dir, cfg.gt_instance_suffix) if cfg.gt_instance_suffix else {}
    if not preds:
        raise InputNotFoundError(f"{pred_dir}: no predictions named *{cfg.pred_suffix}.<format>")
    label_maps = {side: _label_map(cfg, f"{side}_label_map") for side in ("pred", "gt")}
    if label_maps["pred"] is None and (found := boundary_label_map(pred_dir)) is not None:
        label_maps["pred"] = found
        log.info("%s: labels of a data.target=boundary model (0 background, 1 interior, "
                 "2 boundary), scored as objects: pred_label_map=%s", pred_dir, found)  # fmt: skip
    reading = LabelReading(num_classes, foreground, label_maps["pred"], label_maps["gt"])
    report = ReportBuilder(report_slices) if cfg.get("report") else None
    image_dir = Path(cfg.get("image_dir") or gt_dir)
    images = _keyed(image_dir, cfg.get("image_suffix") or "") if report is not None else {}
    rows, failed, total, matches = [], [], np.zeros((num_classes, 3), np.int64), []
    bar = tqdm(sorted(preds.items()), desc="evaluate", unit="file",
               disable=None if cfg.get("progress") is None else not cfg.progress)  # fmt: skip
    for key, pred_path in bar:
        roles: dict[Path, str] = {}  # the pair's instance files, to name them as such
        try:
            if key not in gts:
                raise FileNotFoundError(
                    f"no ground truth {key}{cfg.gt_suffix}.* in {gt_dir}{_suffix_hint(gt_dir, key)}"
                )
            # Object-id truth (gt_label_map=objects) is its own instance truth.
            truth_ids = gt_inst.get(key, gts[key] if label_maps["gt"] == OBJECTS else None)
            instances = key in pred_inst and truth_ids is not None
            roles = _instance_roles(cfg, pred_inst.get(key), gt_inst.get(key)) if instances else {}
            files = PairFiles(pred_path, gts[key], *((pred_inst[key], truth_ids)
                              if instances else ()))  # fmt: skip
            result = evaluate_files(files, reading)
            row, counts, match = result.row, result.counts, result.matches
        except Exception as err:  # one bad pair must not stop the evaluation; reported by name
            # Reported once: in the summary and by the CLI on stderr.
            error = _as_instance_file_error(err, roles)
            failed.append({"prediction": str(pred_path), "error": f"{type(err).__name__}: {error}"})
            continue
        total += counts
        matches.append(match)
        rows.append({"file": key, "segments": "instances" if instances else "components", **row})
        if report is not None:
            image = images.get(key)  # with gt_suffix '' the truth itself has the key: no image
            _add_pictures(report, key, files, reading, result, image if image != gts[key] else None)
    for key in sorted(set(gts) - set(preds)):  # truth that nothing predicted: not silently dropped
        missing = f"no prediction {key}{cfg.pred_suffix}.* in {pred_dir}"
        failed.append({"ground_truth": str(gts[key]), "error": missing})
    metrics = [k for k in rows[0] if k not in ("file", "segments")] if rows else []
    # Rand error and VI are nan for files without objects; they are left out of the mean.
    overall = {m: _nanmean([r[m] for r in rows]) for m in metrics}
    dice, iou = dice_iou(total)
    pooled = {f"dice_{k}": float(dice[k]) for k in range(num_classes)}
    pooled |= {f"iou_{k}": float(iou[k]) for k in range(num_classes)}
    if matches:  # every object of every file counts once
        pooled |= scores(pool(matches))
        pooled |= {kind: sum(r[kind] for r in rows) for kind in ErrorKinds.kinds()}
    summary = {
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "ap_thresholds": list(AP_THRESHOLDS),
        "files": rows,
        "mean": overall,  # the mean over files of each figure
        "pooled": pooled,  # over all voxels / objects at once
        "evaluated": len(rows),
        "failed": failed,
    }
    out_dir = Path(cfg.output_dir) if cfg.get("output_dir") else pred_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["file", "segments", *metrics], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if rows:
        writer.writerow({"file": "mean", "segments": "", **overall})
        writer.writerow({"file": "pooled", "segments": "", **pooled})
    write_text_atomic(out_dir / "evaluation.csv", text.getvalue())
    write_json_atomic(out_dir / "evaluation.json", summary)  # NaN (no objects) as null
    if report is not None:
        sort = f"dice_{foreground}"  # the pictures: worst Dice first
        path = report.write(out_dir / "report.html", summary, sort, num_classes=num_classes)
        log.info("report written to %s", path)
    return summary
