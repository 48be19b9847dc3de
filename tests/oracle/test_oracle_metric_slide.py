"""Oracle: dgseg's `SegMetric` against mmseg 1.2.2's `IoUMetric`, and dgseg's sliding-window
inference against mmseg's `EncoderDecoder.slide_inference` (window placement and averaging).
"""

from __future__ import annotations

import math
import types

import mmcv_shim

mmcv_shim.require_oracle()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dgseg.metrics import SegMetric  # noqa: E402
from dgseg.models.segmentor import Segmentor  # noqa: E402

K = 7


def batches(seed: int):
    """4 batches of 2 maps 30 x 44: ground truth from classes 0..4 with ignore (255) pixels, predictions
    from 0..5 (class 5 predicted, never true: IoU 0 and Acc NaN; class 6 nowhere: IoU NaN)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(4):
        target = torch.randint(0, 5, (2, 30, 44), generator=g)
        target[torch.rand(2, 30, 44, generator=g) < 0.15] = 255
        pred = torch.where(torch.rand(2, 30, 44, generator=g) < 0.6, target.clamp(max=5),
                           torch.randint(0, 6, (2, 30, 44), generator=g))
        pred[pred == 255] = 0
        yield pred, target


@pytest.mark.parametrize("seed", [0, 1])
def test_segmetric_matches_iou_metric(seed):
    from mmseg.evaluation import IoUMetric

    theirs = IoUMetric(ignore_index=255, iou_metrics=["mIoU"])
    theirs.dataset_meta = {"classes": [f"c{i}" for i in range(K)]}
    ours = SegMetric(num_classes=K, ignore_index=255)
    for pred, target in batches(seed):
        ours.update(pred, target)
        theirs.process({}, [{"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": t[None]}}
                            for p, t in zip(pred, target)])
    result = ours.compute()

    # per class, unrounded: IoUMetric.total_area_to_metrics on the summed areas, as compute_metrics does
    areas = [sum(r[i] for r in theirs.results) for i in range(4)]
    per_class = IoUMetric.total_area_to_metrics(*areas, ["mIoU"])
    their_iou = np.asarray(per_class["IoU"], dtype=float) * 100
    their_acc = np.asarray(per_class["Acc"], dtype=float) * 100
    our_iou = np.asarray(result["IoU"], dtype=float)
    assert np.array_equal(np.isnan(our_iou), np.isnan(their_iou))
    assert np.isnan(our_iou[6]) and our_iou[5] == 0.0  # the two absent-class cases are exercised
    np.testing.assert_allclose(our_iou, their_iou, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(float(per_class["aAcc"]) * 100, result["aAcc"], rtol=1e-6)
    assert math.isclose(result["mAcc"], float(np.nanmean(their_acc)), rel_tol=1e-6)
    assert math.isclose(result["mIoU"], float(np.nanmean(their_iou)), rel_tol=1e-6)

    summary = theirs.compute_metrics(theirs.results)  # mmseg's reported numbers: percent, 2 decimals
    for key in ("mIoU", "aAcc", "mAcc"):
        assert round(result[key], 2) == pytest.approx(summary[key], abs=1e-9), key


def stub_scores(window: torch.Tensor) -> torch.Tensor:
    """A decode head for both sides: scores of a window [B, 3, h, w] that depend on its content and on
    the position inside the window, so a misplaced window or a wrong count changes the average."""
    h, w = window.shape[-2:]
    ramp = torch.linspace(0, 1, h)[:, None] + 2 * torch.linspace(0, 1, w)[None, :]
    return torch.stack([window[:, 0] * (k + 1) + window[:, 1] * ramp - k * window[:, 2] for k in range(K)], 1)


@pytest.mark.parametrize(
    ("height", "width", "crop", "stride"),
    [(70, 130, 32, 21), (64, 64, 32, 32), (40, 200, 48, 30), (50, 90, 50, 17)],
    ids=["recipe-ratio", "exact-tiling", "crop-taller-than-image", "crop-equals-height"],
)
def test_slide_inference_matches_mmseg(height, width, crop, stride):
    from mmseg.models.segmentors import EncoderDecoder

    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height + width))
    calls = []

    def encode_decode(crop_img, metas):
        calls.append(tuple(crop_img.shape[-2:]))
        return stub_scores(crop_img)

    mmseg_self = types.SimpleNamespace(
        test_cfg=types.SimpleNamespace(stride=(stride, stride), crop_size=(crop, crop)),
        out_channels=K, encode_decode=encode_decode,
    )
    theirs = EncoderDecoder.slide_inference(mmseg_self, images, [dict(img_shape=(height, width))])
    their_windows = list(calls)

    calls.clear()
    dgseg_self = types.SimpleNamespace(num_classes=K, _scores=lambda x: encode_decode(x, None))
    ours = Segmentor.predict.__wrapped__(dgseg_self, images, mode="slide", crop=crop, stride=stride, batch=1)
    # mmseg runs a window of both images at once, dgseg (batch=1) one window of one image per call
    assert sorted(calls) == sorted(their_windows * 2)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-5)
