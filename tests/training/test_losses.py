"""Losses against hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch

from unet_seg.training.losses import SegmentationLoss, soft_dice_loss, weighted_cross_entropy


def _tiny() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two classes on a 1x2x2 image; logits ``(1, 2, 2, 2)``, target and weight ``(1, 2, 2)``."""
    logits = torch.tensor([[[[0.0, 1.0], [2.0, 0.0]], [[1.0, 0.0], [0.0, 3.0]]]])
    target = torch.tensor([[[1, 0], [0, 1]]])
    weight = torch.tensor([[[1.0, 2.0], [0.5, 4.0]]])
    return logits, target, weight


def _manual_ce(logits, target, weight, keep) -> float:
    total, count = 0.0, 0
    for y in range(2):
        for x in range(2):
            if not keep[y][x]:
                continue
            z = logits[0, :, y, x].tolist()
            log_p = z[target[0, y, x]] - math.log(sum(math.exp(v) for v in z))
            total += -weight[0, y, x].item() * log_p
            count += 1
    return total / count


def test_weighted_ce_equals_manual_formula() -> None:
    logits, target, weight = _tiny()
    expected = _manual_ce(logits, target, weight, [[1, 1], [1, 1]])
    assert weighted_cross_entropy(logits, target, weight).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_unit_weights_give_plain_cross_entropy() -> None:
    logits, target, _ = _tiny()
    plain = torch.nn.functional.cross_entropy(logits, target)
    ones = torch.ones_like(target, dtype=torch.float32)
    assert weighted_cross_entropy(logits, target, ones).item() == pytest.approx(plain.item())
    assert weighted_cross_entropy(logits, target, None).item() == pytest.approx(plain.item())


def test_ignored_voxels_do_not_count() -> None:
    logits, target, weight = _tiny()
    target[0, 1, 1] = -1
    expected = _manual_ce(logits, target, weight, [[1, 1], [1, 0]])
    assert weighted_cross_entropy(logits, target, weight).item() == pytest.approx(
        expected, rel=1e-6
    )
    # Changing the logits of an ignored voxel changes neither loss.
    changed = logits.clone()
    changed[0, :, 1, 1] = torch.tensor([-7.0, 9.0])
    for fn in (
        lambda lg: weighted_cross_entropy(lg, target, weight),
        lambda lg: soft_dice_loss(lg, target),
    ):
        assert fn(changed).item() == pytest.approx(fn(logits).item(), abs=1e-7)


def test_all_ignored_gives_zero_with_gradient() -> None:
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), -1)
    loss = weighted_cross_entropy(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_dice_of_perfect_prediction_is_zero_loss() -> None:
    target = torch.tensor([[[0, 1, 1], [1, 0, 0]]])
    logits = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 200.0 - 100.0
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(logits, target, include_background=True).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_dice_hand_computed() -> None:
    # Foreground probabilities p = softmax over 2 classes of (0, z) = sigmoid(z).
    z = torch.tensor([0.0, 2.0, -1.0, 1.0])
    logits = torch.stack([torch.zeros(4), z]).reshape(1, 2, 2, 2)
    target = torch.tensor([[[1, 1], [0, 0]]])
    p = torch.sigmoid(z)
    g = torch.tensor([1.0, 1.0, 0.0, 0.0])
    expected = 1 - (2 * (p * g).sum() + 1e-5) / (p.sum() + g.sum() + 1e-5)
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_combined_loss_is_weighted_sum_and_3d_works() -> None:
    logits = torch.randn(2, 3, 4, 5, 6)
    target = torch.randint(0, 3, (2, 4, 5, 6))
    weight = torch.rand(2, 4, 5, 6) + 0.5
    loss = SegmentationLoss(ce_weight=0.5, dice_weight=2.0)(logits, target, weight)
    expected = 0.5 * weighted_cross_entropy(logits, target, weight) + 2.0 * soft_dice_loss(
        logits, target
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    no_map = SegmentationLoss(use_weight_map=False)(logits, target, weight)
    assert no_map.item() == pytest.approx(weighted_cross_entropy(logits, target).item(), rel=1e-6)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="not both 0"):
        SegmentationLoss(ce_weight=0.0, dice_weight=0.0)
    with pytest.raises(ValueError, match="do not match"):
        weighted_cross_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 3, dtype=torch.long))
