"""Hungarian matching of Mask2Former queries to ground-truth masks (mmdet `HungarianAssigner` with
`ClassificationCost`, `CrossEntropyLossCost(use_sigmoid=True)` and `DiceCost(pred_act=True, eps=1.0)`),
the mask costs taken on points sampled uniformly at random, the same points for predictions and targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def point_sample(inputs: Tensor, points: Tensor) -> Tensor:
    """Bilinear values of maps at normalised points (mmcv `point_sample`, align_corners=False, zero
    padding outside the map).

    Args:
        inputs: N x C x H x W.
        points: N x P x 2, (x, y) in [0, 1].

    Returns:
        N x C x P.
    """
    grid = 2.0 * points.unsqueeze(2) - 1.0
    return F.grid_sample(inputs, grid.to(inputs.dtype), mode="bilinear", align_corners=False).squeeze(3)


def class_cost(cls_logits: Tensor, gt_classes: Tensor) -> Tensor:
    """-softmax probability of each target's class. cls_logits Q x (K+1), gt_classes N -> Q x N."""
    return -cls_logits.softmax(-1)[:, gt_classes]


def mask_bce_cost(mask_logits: Tensor, gt_masks: Tensor) -> Tensor:
    """Mean binary cross-entropy between every prediction and every target.

    mask_logits Q x P (logits), gt_masks N x P (0..1) -> Q x N.
    """
    p = mask_logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(mask_logits, torch.ones_like(mask_logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(mask_logits, torch.zeros_like(mask_logits), reduction="none")
    return (pos @ gt_masks.T + neg @ (1 - gt_masks).T) / p


def mask_dice_cost(mask_logits: Tensor, gt_masks: Tensor, eps: float = 1.0) -> Tensor:
    """Naive dice loss 1 - (2|a*b| + eps) / (|a| + |b| + eps) with a = sigmoid(logits).

    mask_logits Q x P, gt_masks N x P -> Q x N.
    """
    probs = mask_logits.sigmoid()
    numerator = 2 * probs @ gt_masks.T
    denominator = probs.sum(-1)[:, None] + gt_masks.sum(-1)[None, :]
    return 1 - (numerator + eps) / (denominator + eps)


class HungarianMatcher:
    """One-to-one assignment of queries to targets minimising
    class_weight * class cost + mask_weight * BCE cost + dice_weight * dice cost."""

    def __init__(
        self,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        num_points: int = 12544,
    ):
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self,
        cls_logits: Tensor,
        mask_logits: Tensor,
        gt_classes: Tensor,
        gt_masks: Tensor,
        points: Tensor | None = None,
    ) -> Tensor:
        """
        Args:
            cls_logits: Q x (K+1).
            mask_logits: Q x h x w (logits at the prediction's resolution).
            gt_classes: N (int64).
            gt_masks: N x H x W (0/1, any resolution: sampled at normalised points).
            points: 1 x P x 2 normalised points; default `num_points` uniform random points.

        Returns:
            Q x N float32 cost.
        """
        if points is None:
            points = torch.rand(1, self.num_points, 2, device=mask_logits.device)
        pred = point_sample(mask_logits[:, None].float(), points.expand(mask_logits.shape[0], -1, -1))[:, 0]
        gt = point_sample(gt_masks[:, None].float(), points.expand(gt_masks.shape[0], -1, -1))[:, 0]
        return (
            self.class_weight * class_cost(cls_logits.float(), gt_classes)
            + self.mask_weight * mask_bce_cost(pred, gt)
            + self.dice_weight * mask_dice_cost(pred, gt)
        )

    @torch.no_grad()
    def __call__(
        self,
        cls_logits: Tensor,
        mask_logits: Tensor,
        gt_classes: Tensor,
        gt_masks: Tensor,
        points: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Match one image. Shapes as in `cost_matrix`.

        Returns:
            (query_indices, target_indices), int64 tensors of length min(Q, N), sorted by query.
        """
        device = cls_logits.device
        if gt_classes.numel() == 0 or cls_logits.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, empty
        cost = self.cost_matrix(cls_logits, mask_logits, gt_classes, gt_masks, points)
        if not torch.isfinite(cost).all():
            raise ValueError(
                "HungarianMatcher: the cost matrix has NaN/Inf entries (non-finite class or mask logits: a "
                "diverged model?); no assignment exists"
            )
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return (
            torch.as_tensor(rows, dtype=torch.long, device=device),
            torch.as_tensor(cols, dtype=torch.long, device=device),
        )
