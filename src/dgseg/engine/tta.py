"""Test-time augmentation: class probabilities averaged over rescaled and mirrored views.

Follows mmseg: the TTA pipeline of ``configs/_base_/datasets/cityscapes.py`` (``TestTimeAug`` over
``Resize(scale_factor=r, keep_ratio=True)`` for r in [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] x
``RandomFlip(prob=0 / 1, direction='horizontal')``), ``EncoderDecoder.postprocess_result`` (each view's
scores mirrored back and resized, bilinear, to the original size) and ``SegTTAModel.merge_preds``
(``mmseg/models/segmentors/seg_tta.py``: softmax over classes, mean over views, argmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgseg.engine.precision import autocast
from dgseg.image_size import image_size_problem, model_size_rule


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h, w) of an image rescaled by ``scale``, rounded as mmcv's ``imrescale`` (``int(x * scale + 0.5)``)."""
    return max(int(height * scale + 0.5), 1), max(int(width * scale + 0.5), 1)


@torch.no_grad()
def tta_probabilities(model: nn.Module, image: Tensor, size: tuple[int, int], scales: Sequence[float], flip: bool,
                      mode: str, crop: int, stride: int, batch: int, amp: str = "none") -> Tensor:
    """Mean class probabilities [B, K, h, w] at ``size`` over every (scale, flip) view of a normalised
    batch ``image`` [B, 3, H, W]: each view is the input resized by ``scale`` (bilinear, as cv2), mirrored
    when flipped; its scores are mirrored back, resized to ``size`` and softmaxed over the classes."""
    h, w = image.shape[-2:]
    total = None
    views = 0
    rule = model_size_rule(model)
    for scale in scales:
        new = tta_view(rule, h, w, scale)
        x = image if new == (h, w) else F.interpolate(image, size=new, mode="bilinear", align_corners=False)
        for mirrored in ((False, True) if flip else (False,)):
            with autocast(image.device, amp):
                scores = model.predict(x.flip(-1) if mirrored else x, mode=mode, crop=crop, stride=stride,
                                       batch=batch)
            scores = scores.float()
            if mirrored:
                scores = scores.flip(-1)
            if tuple(scores.shape[-2:]) != tuple(size):
                scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
            probs = scores.softmax(1)
            total = probs if total is None else total + probs
            views += 1
    if total is None:
        raise ValueError("test-time augmentation: no views (eval.tta.scales is empty)")
    return total / views


def tta_view(rule, h: int, w: int, scale: float) -> tuple[int, int]:
    """The size of the ``scale`` view of an ``h`` x ``w`` input, refused when the model (its size ``rule``;
    None: any size) cannot take it."""
    new = scaled_size(h, w, scale)
    problem = None if rule is None else image_size_problem(*new, rule)
    if problem is not None:
        raise ValueError(f"eval.tta.scales: {scale} turns the {w}x{h} px (WxH) input into a view that is too small: "
                         f"{problem}; leave out the scales below it")
    return new
