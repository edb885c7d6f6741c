"""Cross-validation folds: which cases (or which slabs of them) each fold validates on.

``cv: {folds: K, fold: k, seed, test_names}`` (``conf/train.yaml``) replaces the data config's
validation split: the cases (image/label pairs, by stem) outside ``test_names`` are shuffled by
``seed`` and dealt into K folds of sizes differing by at most one; fold k validates on its
cases and trains on the others. The assignment depends only on the case names and ``seed``,
never on the order files are listed in. A dataset of fewer cases than folds is cut instead:
every image (every slice a 2D network trains on) into K slabs along its longest axis, fold k
validating on slab k of each. ``test_names`` stay out of every fold, training and validation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unet_seg.config import whole
from unet_seg.data.pairs import pair_name
from unet_seg.errors import UsageError


@dataclass(frozen=True)
class FoldSpec:
    """The ``cv`` settings, checked: ``folds`` >= 2, ``0 <= fold < folds``."""

    folds: int
    fold: int = 0
    seed: int = 0
    test_names: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cv: Mapping[str, Any]) -> FoldSpec:
        """``UsageError`` naming ``cv.<key>`` for a value that cannot work."""
        folds = whole("cv.folds", cv.get("folds"), 2)
        fold = whole("cv.fold", cv.get("fold", 0), 0)
        if fold >= folds:
            raise UsageError(
                f"cv.fold={fold}: folds are numbered 0..{folds - 1} (cv.folds={folds})"
            )
        seed = whole("cv.seed", cv.get("seed", 0), 0)
        return cls(folds, fold, seed, tuple(str(n) for n in cv.get("test_names") or ()))

    def record(self) -> dict[str, Any]:
        """Plain values, for hyperparameters and ``folds.json``."""
        return {**dataclasses.asdict(self), "test_names": list(self.test_names)}


def assign_folds(names: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """``{case name: fold}``: the sorted names shuffled by ``seed`` and dealt round-robin, so
    fold sizes differ by at most one and every case is in exactly one fold."""
    order = sorted(set(names))
    if len(order) != len(names):
        raise ValueError(f"case names must be unique, got {sorted(names)}")
    permutation = np.random.default_rng(seed).permutation(len(order))
    return {order[int(i)]: position % folds for position, i in enumerate(permutation)}


def fold_cases(names: Sequence[str], spec: FoldSpec) -> tuple[list[str], list[str]] | None:
    """``(train names, val names)`` of fold ``spec.fold``, the test names left out of both; None
    when there are fewer cases than folds (then :func:`slab_ranges` splits each image).

    Raises:
        ValueError: a test name that is not a case, or no case left outside the test split.
    """
    missing = sorted(set(spec.test_names) - set(names))
    if missing:
        raise ValueError(f"cv.test_names {missing} are not among the cases {sorted(names)}")
    cases = [n for n in names if n not in set(spec.test_names)]
    if not cases:
        raise ValueError("cv.test_names leave no case to train on")
    if len(cases) < spec.folds:
        return None
    folds = assign_folds(cases, spec.folds, spec.seed)
    val = [n for n in cases if folds[n] == spec.fold]
    return [n for n in cases if folds[n] != spec.fold], val


def slab_ranges(size: int, folds: int) -> list[range]:
    """``folds`` consecutive ranges covering ``0..size``, lengths differing by at most one.

    Raises:
        ValueError: ``size`` below ``folds`` (a slab would be empty).
    """
    if size < folds:
        raise ValueError(f"{size} voxels cannot be cut into {folds} slabs")
    edges = [size * k // folds for k in range(folds + 1)]
    return [range(edges[k], edges[k + 1]) for k in range(folds)]


def slab_regions(regions: Sequence[Any], spec: FoldSpec, role: str) -> list[Any]:
    """The parts of in-memory ``regions`` (:class:`~unet_seg.data.regions.Region`) that fold
    ``spec.fold`` gives ``role``: for ``"val"`` slab ``fold`` of each region's longest axis
    (the first of equally long ones), for ``"train"`` the parts before and after it. Names get
    ``{axis}[start:stop]`` appended; image ``(C, *spatial)``, label, weight and instances
    ``(*spatial)`` are cut alike."""
    parts = []
    for region in regions:
        axis = int(np.argmax(region.shape))
        try:
            slab = slab_ranges(region.shape[axis], spec.folds)[spec.fold]
        except ValueError as err:
            raise ValueError(f"{region.name}: cv.folds={spec.folds} slabs: {err}") from None
        if role == "val":
            pieces = [slab]
        else:
            pieces = [range(0, slab.start), range(slab.stop, region.shape[axis])]
        for piece in (p for p in pieces if len(p)):
            index = (slice(None),) * axis + (slice(piece.start, piece.stop),)
            parts.append(
                dataclasses.replace(
                    region,
                    image=region.image[(slice(None), *index)],
                    label=region.label[index],
                    weight=None if region.weight is None else region.weight[index],
                    instances=None if region.instances is None else region.instances[index],
                    name=f"{region.name}{'zyx'[-region.label.ndim :][axis]}"
                    f"[{piece.start}:{piece.stop}]",
                )
            )
    return parts


def split_pairs(pairs: Sequence[tuple[Any, Any]], spec: FoldSpec) -> tuple[list, list, bool]:
    """``(train pairs, val pairs, slabs)`` of fold ``spec.fold`` over image/label ``pairs``
    (cases named by :func:`~unet_seg.data.pairs.pair_name`); ``slabs``: fewer cases than folds,
    so both lists hold every case outside the test split and :func:`slab_regions` cuts them."""
    names = [pair_name(*pair) for pair in pairs]
    split = fold_cases(names, spec)
    kept = [p for p, n in zip(pairs, names, strict=True) if n not in set(spec.test_names)]
    if split is None:
        return kept, kept, True
    val = set(split[1])
    return (
        [p for p in kept if pair_name(*p) not in val],
        [p for p in kept if pair_name(*p) in val],
        False,
    )


def fold_record(pairs: Sequence[tuple[Any, Any]], spec: FoldSpec) -> dict[str, Any]:
    """What ``folds.json`` keeps of a fold: the settings, the mode (``cases`` or ``slabs``) and
    the case names it trains and validates on and keeps out as test."""
    train, val, slabs = split_pairs(pairs, spec)
    record = {
        **spec.record(),
        "mode": "slabs" if slabs else "cases",
        "train": [pair_name(*p) for p in train],
        "val": [pair_name(*p) for p in val],
        "test": sorted(spec.test_names),
    }
    if slabs:
        record["slabs"] = (
            f"fewer cases ({len(train)}) than folds: every image cut into {spec.folds} slabs "
            f"along its longest axis, slab {spec.fold} validates"
        )
    return record
