"""Mask2Former losses against hand computations, and label-map-to-target conversion."""

import math

import pytest
import torch

from dgseg.models.heads.losses import (
    Mask2FormerCriterion,
    classification_loss,
    dice_loss,
    mask_bce_loss,
    semantic_to_instance_targets,
    uncertain_point_coords,
)


def test_class_cross_entropy_weights_no_object_and_averages_by_the_weights():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 0.0]])  # K = 2 + no object
    targets = torch.tensor([0, 2, 1])  # the second query targets "no object"
    weights = torch.tensor([1.0, 1.0, 0.1])

    def nll(row, t):
        return -math.log(math.exp(row[t]) / sum(math.exp(v) for v in row))

    rows = logits.tolist()
    expected = (1.0 * nll(rows[0], 0) + 0.1 * nll(rows[1], 2) + 1.0 * nll(rows[2], 1)) / (1.0 + 0.1 + 1.0)
    assert classification_loss(logits, targets, weights).item() == pytest.approx(expected, rel=1e-5)


def test_mask_bce_is_summed_over_points_and_divided_by_masks_times_points():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])

    def bce(x, t):
        p = 1 / (1 + math.exp(-x))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    total = sum(bce(x, t) for lr, tr in zip(logits.tolist(), targets.tolist()) for x, t in zip(lr, tr))
    assert mask_bce_loss(logits, targets, num_masks=2).item() == pytest.approx(total / (2 * 3), rel=1e-5)


def test_dice_is_naive_with_eps_one_and_divided_by_the_number_of_masks():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    total = 0.0
    for lr, tr in zip(logits.tolist(), targets.tolist()):
        p = [1 / (1 + math.exp(-x)) for x in lr]
        total += 1 - (2 * sum(a * b for a, b in zip(p, tr)) + 1) / (sum(p) + sum(tr) + 1)
    assert dice_loss(logits, targets, num_masks=3).item() == pytest.approx(total / 3, rel=1e-5)


def test_label_map_becomes_one_mask_per_present_class_and_ignore_is_in_no_mask():
    label = torch.tensor([[0, 0, 255], [3, 3, 255], [0, 3, 1]])

    classes, masks = semantic_to_instance_targets(label, ignore_index=255, num_classes=5)

    assert classes.tolist() == [0, 1, 3]
    assert masks.dtype == torch.bool and masks.shape == (3, 3, 3)
    for c, m in zip(classes, masks):
        assert torch.equal(m, label == c)
    assert not masks[:, label == 255].any()
    assert torch.equal(masks.sum(0), (label != 255).long())


def test_label_map_with_a_class_id_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="outside 0..18"):
        semantic_to_instance_targets(torch.tensor([[0, 19]]), num_classes=19)


def test_importance_sampling_prefers_uncertain_points():
    torch.manual_seed(0)
    # logit grows with x: uncertain (|logit| small) near the vertical centre line x = 0.5
    logits = torch.linspace(-10, 10, 32).view(1, 1, 1, 32).expand(2, 1, 16, 32).contiguous()

    points = uncertain_point_coords(
        logits, num_points=400, oversample_ratio=3.0, importance_sample_ratio=0.75
    )

    assert points.shape == (2, 400, 2)
    importance, random = points[:, :300, 0], points[:, 300:, 0]
    assert (importance - 0.5).abs().max() < (random - 0.5).abs().mean()


def test_all_ignored_image_gives_finite_losses_with_zero_mask_terms():
    criterion = Mask2FormerCriterion(num_classes=3, num_points=16)
    outputs = {"pred_logits": torch.randn(1, 4, 4, requires_grad=True), "pred_masks": torch.randn(1, 4, 6, 6)}

    losses = criterion(outputs, torch.full((1, 12, 12), 255))

    assert set(losses) == {"loss_cls", "loss_mask", "loss_dice"}
    assert losses["loss_mask"].item() == losses["loss_dice"].item() == 0.0
    # every query targets no-object: loss = 2 * mean CE of class 3
    expected = 2.0 * -outputs["pred_logits"].log_softmax(-1)[0, :, 3].mean()
    torch.testing.assert_close(losses["loss_cls"], expected)


def test_the_mask_losses_weigh_bce_and_dice_by_5_on_num_points_importance_sampled_points(monkeypatch):
    """REFERENCE.md section 2 (mmdet 3.x Mask2FormerHead): loss_mask = 5.0 x BCE and loss_dice = 5.0 x dice,
    both on ``num_points`` points per matched mask (12,544 in the recipe) drawn with oversample 3.0 and
    importance ratio 0.75; the Hungarian matcher samples as many points as the losses."""
    from dgseg.models.heads import losses as module

    seen = {}

    def spy(name):
        real = getattr(module, name)

        def call(*args):
            seen[name] = (args, real(*args))
            return seen[name][1]

        monkeypatch.setattr(module, name, call)

    for name in ("uncertain_point_coords", "mask_bce_loss", "dice_loss"):
        spy(name)
    torch.manual_seed(0)
    criterion = Mask2FormerCriterion(num_classes=3, num_points=20)
    outputs = {"pred_logits": torch.randn(1, 4, 4), "pred_masks": torch.randn(1, 4, 8, 8)}
    label = torch.zeros(1, 16, 16, dtype=torch.long)
    label[:, :, 8:] = 2

    out = criterion(outputs, label)

    assert criterion.matcher.num_points == 20
    assert seen["uncertain_point_coords"][0][1:] == (20, 3.0, 0.75)
    assert seen["mask_bce_loss"][0][0].shape == (2, 20)  # two matched masks, 20 points each
    torch.testing.assert_close(out["loss_mask"], 5.0 * seen["mask_bce_loss"][1])
    torch.testing.assert_close(out["loss_dice"], 5.0 * seen["dice_loss"][1])
