"""Segmentation losses on logits: the paper's weighted cross-entropy, soft Dice, and their sum.

Shapes: ``logits`` ``(N, K, *spatial)``, ``target`` int64 ``(N, *spatial)`` with class indices in
``[0, K)`` or ``ignore_index``, ``weight`` float ``(N, *spatial)``. Voxels equal to
``ignore_index`` contribute nothing to any loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -1


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> None:
    if (
        logits.ndim < 3
        or logits.shape[0] != target.shape[0]
        or logits.shape[2:] != target.shape[1:]
    ):
        raise ValueError(
            f"logits (N, K, *spatial) {tuple(logits.shape)} do not match target (N, *spatial) "
            f"{tuple(target.shape)}"
        )
    if weight is not None and weight.shape != target.shape:
        raise ValueError(
            f"weight {tuple(weight.shape)} does not match target {tuple(target.shape)}"
        )


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean over non-ignored voxels of ``weight(x) * -log softmax(logits)(x)[target(x)]``.

    This is the energy of the U-Net paper (eq. 1) with its weight map ``w(x)``; dividing by the
    number of counted voxels (not by the sum of weights) keeps the map's border emphasis.
    Returns a scalar; 0 if every voxel is ignored.
    """
    _check_shapes(logits, target, weight)
    per_voxel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    if weight is not None:
        per_voxel = per_voxel * weight
    count = valid.sum()
    if count == 0:
        return per_voxel.sum() * 0.0  # keeps the graph so backward() still works
    return per_voxel[valid].sum() / count


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    include_background: bool = False,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """``1 - mean_k Dice_k`` with soft (softmax) predictions, pooled over batch and space.

    ``Dice_k = (2 sum p_k g_k + smooth) / (sum p_k + sum g_k + smooth)``; a perfect one-hot
    prediction gives exactly 0. Class 0 (background) is left out unless ``include_background``
    (with two classes the background Dice mostly rewards the easy majority class).
    """
    _check_shapes(logits, target, None)
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = (target != ignore_index).unsqueeze(1)
    onehot = F.one_hot(target.clamp(min=0), num_classes).movedim(-1, 1).to(probs.dtype)
    probs = probs * valid
    onehot = onehot * valid
    dims = (0, *range(2, logits.ndim))
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    if not include_background and num_classes > 1:
        dice = dice[1:]
    return 1.0 - dice.mean()


class SegmentationLoss(nn.Module):
    """``ce_weight * weighted_cross_entropy + dice_weight * soft_dice_loss``.

    Built from plain config values (``conf/loss/*.yaml``) so a checkpoint's hyperparameters restore
    it. ``use_weight_map=False`` ignores the batch's weight map (plain cross-entropy).
    """

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 0.0,
        use_weight_map: bool = True,
        ignore_index: int = IGNORE_INDEX,
        include_background: bool = False,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ValueError(
                f"ce_weight and dice_weight must be >= 0 and not both 0, got {ce_weight}, "
                f"{dice_weight}"
            )
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.use_weight_map = use_weight_map
        self.ignore_index = ignore_index
        self.include_background = include_background
        self.smooth = smooth

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scalar loss of ``logits`` ``(N, K, *s)``, ``target`` and ``weight`` ``(N, *s)``."""
        loss = logits.new_zeros(())
        if self.ce_weight:
            w = weight if self.use_weight_map else None
            loss = loss + self.ce_weight * weighted_cross_entropy(
                logits, target, w, self.ignore_index
            )
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(
                logits, target, self.ignore_index, self.include_background, self.smooth
            )
        return loss
