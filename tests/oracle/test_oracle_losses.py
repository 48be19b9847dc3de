"""Oracle: dgseg's Hungarian matcher and Mask2Former losses against mmdet 3.3.0's, built from the Rein
config (`HungarianAssigner` with `ClassificationCost`, `CrossEntropyLossCost(use_sigmoid=True)`,
`DiceCost(pred_act=True, eps=1.0)`; `CrossEntropyLoss` with class weights, sigmoid `CrossEntropyLoss`
for the point BCE, `DiceLoss(naive_dice=True, eps=1.0)`), on fixed predictions and fixed point
coordinates. Tolerance: 1e-5 relative (float32).
"""

from __future__ import annotations

import mmcv_shim

mmcv_shim.require_oracle()

import pytest  # noqa: E402
import torch  # noqa: E402
from rein_head_config import build_mmseg_head, rein_head_dict  # noqa: E402

from dgseg.models.heads.losses import (  # noqa: E402
    Mask2FormerCriterion,
    classification_loss,
    dice_loss,
    mask_bce_loss,
    semantic_to_instance_targets,
)
from dgseg.models.heads.matcher import HungarianMatcher, point_sample  # noqa: E402

K, Q, POINTS = 6, 12, 500


def build(cfg: dict, registry: str = "models"):
    """Build an entry of the Rein config as its `mmdet.` type says, through mmseg's registries (as the
    config does): mmseg has classes of the same names (its own `HungarianAssigner`, `CrossEntropyLoss`)."""
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS, TASK_UTILS

    assert cfg["type"].startswith("mmdet."), cfg["type"]
    return (MODELS if registry == "models" else TASK_UTILS).build(ConfigDict(cfg))


def labels_batch(seed: int) -> torch.Tensor:
    """3 label maps 40 x 56: random blobs of a few of the K classes, ignore pixels, an absent class;
    the last image is all ignore (no target at all)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((3, 40, 56), 255, dtype=torch.long)
    for i, classes in enumerate(([0, 2, 3], [1, 2, 4, 5])):
        coarse = torch.tensor(classes)[torch.randint(len(classes), (5, 7), generator=g)]
        labels[i] = coarse.repeat_interleave(8, 0).repeat_interleave(8, 1)
        labels[i][torch.rand(40, 56, generator=g) < 0.1] = 255
    return labels


def predictions(seed: int, layers: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(3, Q, K + 1, generator=g) * 2, torch.randn(3, Q, 10, 14, generator=g) * 3)
            for _ in range(layers)]


def test_point_sample_matches_mmcv():
    from mmcv.ops import point_sample as mmcv_point_sample

    g = torch.Generator().manual_seed(0)
    maps, points = torch.randn(4, 3, 9, 13, generator=g), torch.rand(4, 50, 2, generator=g) * 1.2 - 0.1
    torch.testing.assert_close(point_sample(maps, points), mmcv_point_sample(maps, points), rtol=0, atol=1e-6)


def test_matcher_costs_and_assignment_match_mmdet():
    from mmengine.structures import InstanceData

    cfg = rein_head_dict(num_classes=K)["train_cfg"]["assigner"]
    assigner = build({"type": cfg["type"], "match_costs": cfg["match_costs"]}, "task_utils")
    ours = HungarianMatcher(class_weight=2.0, mask_weight=5.0, dice_weight=5.0, num_points=POINTS)
    labels = labels_batch(1)
    (cls, masks), = predictions(2, layers=1)
    points = torch.rand(1, POINTS, 2, generator=torch.Generator().manual_seed(3))
    for i in range(2):
        classes, gt = semantic_to_instance_targets(labels[i])
        pred_pts = point_sample(masks[i][:, None], points.expand(Q, -1, -1))[:, 0]
        gt_pts = point_sample(gt[:, None].float(), points.expand(len(classes), -1, -1))[:, 0]
        pred = InstanceData(scores=cls[i], masks=pred_pts)
        target = InstanceData(labels=classes, masks=gt_pts)
        their_cost = sum(cost(pred, target) for cost in assigner.match_costs)
        our_cost = ours.cost_matrix(cls[i], masks[i], classes, gt, points)
        torch.testing.assert_close(our_cost, their_cost, rtol=1e-5, atol=1e-5)
        result = assigner.assign(pred, target)
        rows, cols = ours(cls[i], masks[i], classes, gt, points)
        expected = torch.zeros(Q, dtype=torch.long)  # mmdet: 0 = unassigned, j + 1 = target j
        expected[rows] = cols + 1
        assert torch.equal(result.gt_inds, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_losses_match_mmdet_loss_modules(seed):
    head_cfg = rein_head_dict(num_classes=K)
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([1.0] * K + [0.1])
    logits, targets = torch.randn(30, K + 1, generator=g) * 2, torch.randint(K + 1, (30,), generator=g)
    theirs = build(head_cfg["loss_cls"])(logits, targets, torch.ones(30), avg_factor=weights[targets].sum())
    torch.testing.assert_close(2.0 * classification_loss(logits, targets, weights), theirs, rtol=1e-5, atol=0)

    point_logits = torch.randn(5, POINTS, generator=g) * 3
    point_targets = (torch.rand(5, POINTS, generator=g) < 0.4).float()
    theirs = build(head_cfg["loss_mask"])(point_logits.reshape(-1), point_targets.reshape(-1),
                                          avg_factor=4.0 * POINTS)
    torch.testing.assert_close(5.0 * mask_bce_loss(point_logits, point_targets, 4.0), theirs, rtol=1e-5, atol=0)
    theirs = build(head_cfg["loss_dice"])(point_logits, point_targets, avg_factor=4.0)
    torch.testing.assert_close(5.0 * dice_loss(point_logits, point_targets, 4.0), theirs, rtol=1e-5, atol=0)


class Recorder:
    """Stands in for torch.rand: draws and keeps every tensor (the matcher's points and the importance
    sampling's candidates and fill-up points all come from torch.rand)."""

    def __init__(self):
        self.real = torch.rand
        self.draws: list[torch.Tensor] = []

    def __call__(self, *size, **kwargs):
        out = self.real(*size, **kwargs)
        self.draws.append(out.clone())
        return out


class Replay:
    """Stands in for torch.rand: hands out recorded tensors in order, each only for a call of its shape."""

    def __init__(self, draws: list[torch.Tensor]):
        self.draws = list(draws)

    def __call__(self, *size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
        assert self.draws, f"dgseg drew points of shape {shape} beyond mmdet's draws"
        out = self.draws.pop(0)
        assert tuple(out.shape) == shape, f"dgseg drew {shape} where mmdet drew {tuple(out.shape)}"
        return out.clone()


@pytest.fixture(scope="module")
def mmseg_head():
    return build_mmseg_head(in_channels=[8] * 4, num_classes=K, feat_channels=32, num_queries=Q, num_heads=2,
                            enc_layers=1, enc_ffn=32, dec_layers=2, dec_ffn=32, num_points=POINTS)


@pytest.mark.parametrize("images", [2, 3], ids=["all-labelled", "one-image-all-ignore"])
def test_deep_supervision_losses_match_mmdet(mmseg_head, monkeypatch, images):
    """The whole training loss of 3 predictions (2 auxiliary), matching included: mmseg's
    `Mask2FormerHead.loss_by_feat` against dgseg's criterion with the same points: every torch.rand draw
    of mmdet is recorded and replayed to dgseg, which must ask for the same shapes in the same order.
    mmdet also draws matching points for an image without targets, which dgseg does not match at all;
    those draws change nothing and are left out of the replay."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    labels = labels_batch(4)[:images]
    preds = [(c[:images], m[:images]) for c, m in predictions(5)]
    samples = [SegDataSample(gt_sem_seg=PixelData(data=lab[None]), metainfo=dict(img_shape=(40, 56)))
               for lab in labels]
    gt_instances, metas = mmseg_head._seg_data_to_instance_data(samples)

    recorder = Recorder()
    monkeypatch.setattr(torch, "rand", recorder)
    theirs = mmseg_head.loss_by_feat([c for c, _ in preds], [m for _, m in preds], gt_instances, metas)
    # per prediction: one matching draw per image, then the oversampled candidates and the fill-up points
    per_layer = images + 2
    assert len(recorder.draws) == per_layer * len(preds)
    empty = [i for i, lab in enumerate(labels) if bool((lab == 255).all())]
    assert len(empty) == images - 2
    draws = [d for k, d in enumerate(recorder.draws) if k % per_layer not in empty]

    replay = Replay(draws)
    monkeypatch.setattr(torch, "rand", replay)
    criterion = Mask2FormerCriterion(K, num_points=POINTS)
    outputs = {"pred_logits": preds[-1][0], "pred_masks": preds[-1][1],
               "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in preds[:-1]]}
    ours = criterion(outputs, labels)
    assert replay.draws == []
    assert sorted(ours) == sorted(theirs)
    for key in theirs:  # mmdet's mask loss is a 1-element tensor (its mask count is), dgseg's a scalar
        torch.testing.assert_close(ours[key].reshape(-1), theirs[key].reshape(-1), rtol=1e-5, atol=1e-6, msg=key)
