"""Hungarian matcher: optimal one-to-one assignment under class + BCE + dice costs."""

import itertools

import torch
import torch.nn.functional as F

from dgseg.models.heads.matcher import (
    HungarianMatcher,
    class_cost,
    mask_bce_cost,
    mask_dice_cost,
    point_sample,
)


def stripes(h=6, w=9):
    """Three vertical stripes (left, middle, right) as N x H x W bool masks."""
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    for i in range(3):
        masks[i, :, 3 * i : 3 * i + 3] = True
    return masks


def test_each_target_gets_the_query_that_predicts_its_mask_and_class():
    torch.manual_seed(0)
    gt_masks = stripes()
    gt_classes = torch.tensor([2, 0, 1])
    # query 0 <- right stripe (class 1), query 1 predicts nothing, query 2 <- left (2), query 3 <- middle (0)
    mask_logits = torch.full((4, 6, 9), -8.0)
    mask_logits[0][gt_masks[2]] = 8.0
    mask_logits[2][gt_masks[0]] = 8.0
    mask_logits[3][gt_masks[1]] = 8.0
    cls_logits = torch.full((4, 4), -4.0)  # K = 3 classes + no object
    cls_logits[0, 1] = cls_logits[2, 2] = cls_logits[3, 0] = cls_logits[1, 3] = 4.0

    rows, cols = HungarianMatcher(num_points=500)(cls_logits, mask_logits, gt_classes, gt_masks)

    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 3, 2: 0}


def test_assignment_has_the_minimum_total_cost_over_all_permutations():
    torch.manual_seed(1)
    matcher = HungarianMatcher(num_points=64)
    cls_logits = torch.randn(4, 6)
    mask_logits = torch.randn(4, 5, 7)
    gt_classes = torch.tensor([0, 3, 4])
    gt_masks = torch.rand(3, 10, 14) > 0.5
    points = torch.rand(1, 64, 2)

    cost = matcher.cost_matrix(cls_logits, mask_logits, gt_classes, gt_masks, points)
    rows, cols = matcher(cls_logits, mask_logits, gt_classes, gt_masks, points)

    best = min(sum(cost[q, t] for t, q in enumerate(perm)) for perm in itertools.permutations(range(4), 3))
    assert sorted(cols.tolist()) == [0, 1, 2]
    torch.testing.assert_close(cost[rows, cols].sum(), best)


def test_cost_is_the_weighted_sum_of_class_bce_and_dice_on_shared_points():
    torch.manual_seed(2)
    matcher = HungarianMatcher(class_weight=2.0, mask_weight=5.0, dice_weight=5.0, num_points=16)
    cls_logits, mask_logits = torch.randn(2, 4), torch.randn(2, 4, 4)
    gt_classes, gt_masks = torch.tensor([1]), torch.rand(1, 8, 8) > 0.5
    points = torch.rand(1, 16, 2)

    cost = matcher.cost_matrix(cls_logits, mask_logits, gt_classes, gt_masks, points)

    pred = point_sample(mask_logits[:, None], points.expand(2, -1, -1))[:, 0]
    gt = point_sample(gt_masks[:, None].float(), points)[:, 0]
    for q in range(2):
        ce = -F.softmax(cls_logits[q], -1)[1]
        bce = F.binary_cross_entropy_with_logits(pred[q], gt[0])
        p = pred[q].sigmoid()
        dice = 1 - (2 * (p * gt[0]).sum() + 1) / (p.sum() + gt[0].sum() + 1)
        torch.testing.assert_close(cost[q, 0], 2 * ce + 5 * bce + 5 * dice)
    torch.testing.assert_close(class_cost(cls_logits, gt_classes)[:, 0], -cls_logits.softmax(-1)[:, 1])
    assert mask_bce_cost(pred, gt).shape == mask_dice_cost(pred, gt).shape == (2, 1)


def test_no_targets_means_no_matches():
    rows, cols = HungarianMatcher(num_points=8)(
        torch.randn(3, 4), torch.randn(3, 4, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 4)
    )
    assert rows.numel() == cols.numel() == 0


def test_point_sample_reads_pixel_centres_exactly():
    image = torch.arange(12.0).view(1, 1, 3, 4)
    centres = torch.tensor([[[0.5 / 4, 0.5 / 3], [3.5 / 4, 2.5 / 3], [1.5 / 4, 1.5 / 3]]])
    torch.testing.assert_close(point_sample(image, centres), torch.tensor([[[0.0, 11.0, 5.0]]]))
