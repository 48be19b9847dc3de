"""Mask2Former training losses, as mmdet 3.x `Mask2FormerHead` computes them for mmseg.

Per prediction (the last decoder layer and each auxiliary one): Hungarian matching, then
- class cross-entropy over all queries (unmatched ones target the no-object class K), each term
  weighted by its target's class weight ([1] * K + [no_object_weight]) and the sum divided by the
  sum of those weights;
- mask BCE and dice on `num_points` points per matched mask, picked by importance sampling (mostly
  where the matched prediction is uncertain, |logit| small), both averaged over the number of target
  masks in the batch (an image without any target counts as one, as mmdet's `MaskPseudoSampler` does;
  under DDP the count is averaged over the processes, as mmdet's `reduce_mean`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .matcher import HungarianMatcher, point_sample

# mmdet's weight_reduce_loss divides by (avg_factor + float32 eps)
_EPS = torch.finfo(torch.float32).eps


def semantic_to_instance_targets(
    label: Tensor, ignore_index: int = 255, num_classes: int | None = None
) -> tuple[Tensor, Tensor]:
    """One binary mask per class present in a semantic label map (mmseg `_seg_data_to_instance_data`).

    The ignore region belongs to no mask: its pixels are 0 in every target mask. They are not
    excluded from the mask losses, which, as in mmseg/mmdet, are computed on all sampled points
    (an ignored pixel counts as background for every matched query).

    Args:
        label: H x W int64, class ids with `ignore_index` for unlabelled pixels.

    Returns:
        classes: N int64 (sorted), masks: N x H x W bool.
    """
    classes = torch.unique(label)
    classes = classes[classes != ignore_index]
    if num_classes is not None and classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
        bad = classes[(classes < 0) | (classes >= num_classes)].tolist()
        raise ValueError(
            f"label map has class ids {bad} outside 0..{num_classes - 1} (ignore is {ignore_index})"
        )
    masks = label[None] == classes[:, None, None]
    return classes, masks


def classification_loss(cls_logits: Tensor, target_classes: Tensor, class_weight: Tensor) -> Tensor:
    """Weighted cross-entropy, mmdet `CrossEntropyLoss(class_weight=...)` with
    avg_factor = class_weight[targets].sum().

    cls_logits: M x (K+1), target_classes: M (K = no object), class_weight: K+1 -> scalar
    (without the loss weight).
    """
    loss = F.cross_entropy(cls_logits, target_classes, weight=class_weight, reduction="sum")
    return loss / (class_weight[target_classes].sum() + _EPS)


def mask_bce_loss(point_logits: Tensor, point_targets: Tensor, num_masks: float) -> Tensor:
    """Sum of per-point BCE-with-logits over num_masks * P. point_logits/targets: M x P -> scalar."""
    loss = F.binary_cross_entropy_with_logits(point_logits, point_targets, reduction="sum")
    return loss / (num_masks * point_logits.shape[1] + _EPS)


def dice_loss(point_logits: Tensor, point_targets: Tensor, num_masks: float, eps: float = 1.0) -> Tensor:
    """mmdet `DiceLoss(use_sigmoid=True, naive_dice=True, eps=1.0)`: per mask
    1 - (2 sum(p t) + eps) / (sum p + sum t + eps), p = sigmoid(logit); summed and divided by num_masks."""
    p = point_logits.sigmoid()
    numerator = 2 * (p * point_targets).sum(-1) + eps
    denominator = p.sum(-1) + point_targets.sum(-1) + eps
    return (1 - numerator / denominator).sum() / (num_masks + _EPS)


@torch.no_grad()
def uncertain_point_coords(
    mask_logits: Tensor, num_points: int, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75
) -> Tensor:
    """mmdet `get_uncertain_point_coords_with_randomness`: draw num_points * oversample_ratio uniform
    points, keep the importance_sample_ratio * num_points with the largest -|logit| (bilinear at the
    point), fill up with fresh uniform points.

    mask_logits: M x 1 x H x W -> M x num_points x 2 normalised (x, y).
    """
    m = mask_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(m, num_sampled, 2, device=mask_logits.device)
    uncertainty = -point_sample(mask_logits, coords)[:, 0].abs()
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1)[1]
    coords = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords = torch.cat((coords, torch.rand(m, num_random, 2, device=mask_logits.device)), 1)
    return coords


def _mean_over_processes(count: int, device: torch.device) -> float:
    """mmdet's `max(reduce_mean(count), 1)`: the per-process count averaged over a DDP group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor(float(count), device=device)
        dist.all_reduce(t)
        count = t.item() / dist.get_world_size()
    return max(float(count), 1.0)


class Mask2FormerCriterion:
    """Matching + losses for every prediction of the head (deep supervision).

    Not an nn.Module on purpose: it holds no weights and adds nothing to the head's state dict.
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        ignore_index: int = 255,
    ):
        self.num_classes = num_classes
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.class_weights = [1.0] * num_classes + [no_object_weight]
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.ignore_index = ignore_index
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points)

    def targets(self, labels: Tensor) -> list[tuple[Tensor, Tensor]]:
        """labels B x H x W -> per image (classes N, masks N x H x W bool)."""
        return [semantic_to_instance_targets(lab, self.ignore_index, self.num_classes) for lab in labels]

    def single(
        self, cls_logits: Tensor, mask_logits: Tensor, targets: list[tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Losses of one prediction. cls_logits B x Q x (K+1), mask_logits B x Q x h x w.

        Returns:
            (loss_cls, loss_mask, loss_dice), weighted.
        """
        cls_logits = cls_logits.float()
        mask_logits = mask_logits.float()
        if not (torch.isfinite(cls_logits).all() and torch.isfinite(mask_logits).all()):
            # a diverged model: no assignment exists; NaN losses (still in the graph, so backward runs)
            # let the training loop stop or skip the step per train.on_nan
            nan = (cls_logits.sum() + mask_logits.sum()) * float("nan")
            return nan, nan, nan
        b, q = cls_logits.shape[:2]
        target_classes = torch.full((b, q), self.num_classes, dtype=torch.long, device=cls_logits.device)
        matched_masks, matched_targets = [], []
        num_masks = 0
        for i, (classes, masks) in enumerate(targets):
            rows, cols = self.matcher(cls_logits[i].detach(), mask_logits[i].detach(), classes, masks)
            target_classes[i, rows] = classes[cols]
            matched_masks.append(mask_logits[i, rows])
            matched_targets.append(masks[cols])
            num_masks += max(rows.numel(), 1)
        num_masks = _mean_over_processes(num_masks, cls_logits.device)
        class_weight = cls_logits.new_tensor(self.class_weights)
        loss_cls = self.class_weight * classification_loss(
            cls_logits.flatten(0, 1), target_classes.flatten(), class_weight
        )

        preds = torch.cat(matched_masks)
        if preds.shape[0] == 0:
            zero = preds.sum()
            return loss_cls, zero, zero
        gts = torch.cat(matched_targets).to(preds.dtype)
        with torch.no_grad():
            points = uncertain_point_coords(
                preds[:, None], self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            point_targets = point_sample(gts[:, None], points)[:, 0]
        point_logits = point_sample(preds[:, None], points)[:, 0]
        loss_mask = self.mask_weight * mask_bce_loss(point_logits, point_targets, num_masks)
        loss_dice = self.dice_weight * dice_loss(point_logits, point_targets, num_masks)
        return loss_cls, loss_mask, loss_dice

    def __call__(self, outputs: dict[str, Any], labels: Tensor) -> dict[str, Tensor]:
        """outputs: the head's dict; labels B x H x W int64 (255 = ignore).

        Returns:
            {"loss_cls", "loss_mask", "loss_dice"} for the last prediction and
            {"d{i}.loss_cls", ...} for the auxiliary ones, earliest first (mmdet's names).
        """
        with torch.autocast(labels.device.type, enabled=False):  # matching and losses in float32
            return self._losses(outputs, self.targets(labels))

    def _losses(self, outputs: dict[str, Any], targets: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            cls_l, mask_l, dice_l = self.single(aux["pred_logits"], aux["pred_masks"], targets)
            losses[f"d{i}.loss_cls"] = cls_l
            losses[f"d{i}.loss_mask"] = mask_l
            losses[f"d{i}.loss_dice"] = dice_l
        cls_l, mask_l, dice_l = self.single(outputs["pred_logits"], outputs["pred_masks"], targets)
        losses["loss_cls"], losses["loss_mask"], losses["loss_dice"] = cls_l, mask_l, dice_l
        return losses
