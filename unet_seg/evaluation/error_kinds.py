"""What kind of mistake each unmatched object is: merged, split, missed or extra.

AP says how many objects were found; these counts say why the others were not, in the terms of
the nuclei benchmarks (Caicedo et al. 2019, "Evaluation of deep learning strategies for nucleus
segmentation in fluorescence images"). An object *holds* another when more than half of the other
lies inside it (so each object is held by at most one of the other image). At IoU 0.5:

- ``merges``: predicted objects that hold two or more true objects (touching objects joined);
- ``splits``: true objects that hold two or more predicted objects (one object cut in pieces);
- ``missed``: unmatched true objects that are neither split nor held by a merge;
- ``extra``: unmatched predicted objects that are neither merges nor pieces of a split.

Swapping prediction and truth swaps ``merges`` with ``splits`` and ``missed`` with ``extra``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from unet_seg.evaluation.instances import Overlaps, matched_pairs, overlaps

MATCH_IOU = 0.5


@dataclass(frozen=True)
class ErrorKinds:
    """Counts of each kind of mistake; they add up over images (pooled counts)."""

    merges: int = 0
    splits: int = 0
    missed: int = 0
    extra: int = 0

    def __add__(self, other: ErrorKinds) -> ErrorKinds:
        mine, theirs = self.row(), other.row()
        return ErrorKinds(**{kind: mine[kind] + theirs[kind] for kind in mine})

    @staticmethod
    def kinds() -> tuple[str, ...]:
        """The names of the counts, in their order."""
        return tuple(f.name for f in fields(ErrorKinds))

    def row(self) -> dict[str, int]:
        """``{"merges": .., "splits": .., "missed": .., "extra": ..}``."""
        return asdict(self)


def error_kinds(pred: np.ndarray, gt: np.ndarray) -> ErrorKinds:
    """The mistakes of predicted object ids against true ones, label images ``(*spatial)`` of the
    same shape (0 = background)."""
    return kinds_of(overlaps(pred, gt))


def kinds_of(table: Overlaps) -> ErrorKinds:
    """:func:`error_kinds` from the overlapping pairs of a prediction and its truth."""
    ti, pi, inter = table.true_index, table.pred_index, table.intersection
    pred_holds = 2 * inter > table.true_area[ti]  # more than half the true object in the pred
    true_holds = 2 * inter > table.pred_area[pi]
    merging = _per_object(pi[pred_holds], table.n_pred) >= 2
    splitting = _per_object(ti[true_holds], table.n_true) >= 2
    merged_true = _per_object(ti[pred_holds & merging[pi]], table.n_true) > 0
    piece_pred = _per_object(pi[true_holds & splitting[ti]], table.n_pred) > 0
    matched = matched_pairs(table, MATCH_IOU)  # the pairs AP@0.5 counts as found
    true_found = _per_object(ti[matched], table.n_true) > 0
    pred_found = _per_object(pi[matched], table.n_pred) > 0
    return ErrorKinds(
        merges=int(merging.sum()),
        splits=int(splitting.sum()),
        missed=int((~true_found & ~merged_true & ~splitting).sum()),
        extra=int((~pred_found & ~merging & ~piece_pred).sum()),
    )


def _per_object(indices: np.ndarray, count: int) -> np.ndarray:
    """How many of ``indices`` (object indices of pairs) name each of ``count`` objects."""
    return np.bincount(indices, minlength=count)
