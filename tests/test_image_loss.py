"""segzoo.core.image_loss: the image-level loss, checked against hand computations on a 2x2 example."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from segzoo.core.errors import SegzooError
from segzoo.core.image_loss import absent_suppression, image_bce, image_level_loss, pool_scores

# one image, classes background / a / b, 2x2 pixels
SCORES = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]],
                        [[-1.0, 2.0], [0.0, 0.0]],
                        [[0.0, 0.0], [-2.0, -3.0]]]])
LABELS = torch.tensor([[0.0, 1.0, 0.0]])  # "holds a"; background counts as present anyway


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_max_pooled_bce_matches_the_hand_computation():
    # pooled maxima 1, 2, 0; targets 1, 1, 0: BCE = log(1+e^-x) for present, log(1+e^x) for absent
    hand = (softplus(-1.0) + softplus(-2.0) + softplus(0.0)) / 3
    assert image_bce(SCORES, LABELS).item() == pytest.approx(hand, rel=1e-6)
    assert hand == pytest.approx(0.3777790, abs=1e-6)


def test_lse_and_topk_pooling_match_their_formulas():
    r = 2.0
    b = [0.0, 0.0, -2.0, -3.0]
    assert pool_scores(SCORES, "lse", temperature=r)[0, 2].item() == pytest.approx(
        math.log(sum(math.exp(r * v) for v in b) / 4) / r, rel=1e-6)
    assert pool_scores(SCORES, "topk", topk=0.5)[0].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert pool_scores(SCORES, "topk", topk=0.01)[0].tolist() == pool_scores(SCORES, "max")[0].tolist()
    with pytest.raises(SegzooError, match="weak-pool"):
        pool_scores(SCORES, "mean")


def test_suppression_is_the_cross_entropy_of_the_present_classes_at_every_pixel():
    pixels = [(1.0, -1.0, 0.0), (0.0, 2.0, 0.0), (0.0, 0.0, -2.0), (0.0, 0.0, -3.0)]
    hand = sum(-math.log((math.exp(s0) + math.exp(s1)) / (math.exp(s0) + math.exp(s1) + math.exp(s2)))
               for s0, s1, s2 in pixels) / 4
    assert absent_suppression(SCORES, LABELS).item() == pytest.approx(hand, rel=1e-6)


def test_the_loss_takes_only_samples_without_masks_and_is_zero_without_them():
    scores = torch.cat([SCORES, SCORES * 3]).requires_grad_()
    batch = SimpleNamespace(mask=torch.full((2, 2, 2), 255), image_labels=LABELS.repeat(2, 1),
                            has_mask=torch.tensor([False, True]))
    loss = image_level_loss(scores, batch, suppress=0.5)
    hand = image_bce(SCORES, LABELS) + 0.5 * absent_suppression(SCORES, LABELS)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)
    loss.backward()
    assert scores.grad[0].abs().sum() > 0 and scores.grad[1].abs().sum() == 0
    masked = SimpleNamespace(mask=None, image_labels=LABELS.repeat(2, 1), has_mask=torch.tensor([True, True]))
    zero = image_level_loss(scores, masked)
    assert zero.item() == 0.0 and zero.requires_grad
