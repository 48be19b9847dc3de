"""Property-based tests (hypothesis) of the transforms and of the metric (issue 9): for any scene size,
crop, resize, flip and crop-redraw setting, image and label stay aligned, the output has the crop
size, no class is invented and ignore comes only from padding; evaluation labels stay native; SegMetric
equals a plain confusion-matrix loop. Seeded examples of the same kind are in test_data_transforms.py
and test_metrics.py."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dgseg.data import EvalTransform, TrainTransform, denormalize, normalize
from dgseg.metrics import SegMetric

# derandomize: the same examples on every CI run (no flaky failures); database=None: nothing written
PROPERTY = settings(max_examples=25, deadline=None, database=None, derandomize=True)


def colour_of(label: np.ndarray) -> np.ndarray:
    """An RGB image [3, H, W] that encodes its label: R = 10 * label + 5, G = 128, B = 255 - R
    (ignore 255 gets its own colour); an error of alignment or a flip of one of them shows."""
    red = np.where(label == 255, 250, 10 * label + 5).astype(np.uint8)
    return np.stack([red, np.full_like(red, 128), 255 - red])


@st.composite
def scenes(draw, ignore: bool = True):
    """A block label map (blocks of 4..8 pixels, up to 19 classes, some ignore blocks) and its image."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    block = draw(st.integers(4, 8))
    grid = rng.integers(0, draw(st.integers(1, 19)), (draw(st.integers(2, 8)), draw(st.integers(2, 8))))
    if ignore and draw(st.booleans()):
        grid[rng.random(grid.shape) < 0.2] = 255
    label = np.kron(grid, np.ones((block, block), np.int64))
    return torch.from_numpy(colour_of(label)), torch.from_numpy(label)


@st.composite
def train_transforms(draw, height: int, width: int):
    """A TrainTransform with any crop, flip and crop-redraw setting and a resize factor in [0.48, 1.94]:
    no block falls between two neighbouring output pixels, and a bilinear ramp between two source
    pixels spans at most two output pixels (so the pixels next to a label edge are blends only on
    the edge itself, which :func:`interior` leaves out)."""
    factor = draw(st.floats(0.6, 1.55))
    return TrainTransform(
        crop_size=(draw(st.integers(8, 48)), draw(st.integers(8, 48))),
        scale=(round(factor * max(height, width)), round(factor * min(height, width))),
        ratio_range=(draw(st.floats(0.8, 1.0)), draw(st.floats(1.0, 1.25))),
        cat_max_ratio=draw(st.sampled_from([0.75, 1.0])),
        flip_prob=draw(st.sampled_from([0.0, 0.5, 1.0])),
        photometric=False,
        generator=torch.Generator().manual_seed(draw(st.integers(0, 2**31))),
    )


def interior(label: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3 x 3 neighbourhood holds one label, away from the crop's border (where the
    bilinear image and the nearest-neighbour label agree exactly)."""
    lab = label[None, None].float()
    same = (F.max_pool2d(lab, 3, 1, 1) == -F.max_pool2d(-lab, 3, 1, 1))[0, 0]
    same[[0, -1], :] = False
    same[:, [0, -1]] = False
    return same


@PROPERTY
@given(st.data())
def test_train_transform_output_has_the_crop_size_and_keeps_image_and_label_aligned(data):
    image, label = data.draw(scenes())
    t = data.draw(train_transforms(*label.shape))
    img, lab = t(image, label)
    assert img.shape == (3, *t.crop_size) and img.dtype == torch.float32
    assert lab.shape == t.crop_size and lab.dtype == torch.int64
    assert set(lab.unique().tolist()) <= set(label.unique().tolist()) | {255}  # no class invented
    rgb = denormalize(img).long()
    ok = (lab != 255) & interior(lab)
    want = 10 * lab[ok] + 5
    assert ((rgb[0][ok] - want).abs() <= 1).all()
    assert ((rgb[2][ok] - (255 - want)).abs() <= 1).all()


@PROPERTY
@given(st.data())
def test_train_transform_ignore_comes_only_from_padding_at_the_bottom_and_right(data):
    image, label = data.draw(scenes(ignore=False))
    t = data.draw(train_transforms(*label.shape))
    img, lab = t(image, label)
    pad = lab == 255
    rows, cols = pad.all(1), pad.all(0)
    assert torch.equal(pad, rows[:, None] | cols[None, :])  # whole rows and columns only
    h, w = lab.shape
    assert torch.equal(rows, torch.arange(h) >= h - int(rows.sum()))  # at the bottom
    assert torch.equal(cols, torch.arange(w) >= w - int(cols.sum()))  # at the right
    assert (img[:, pad] == 0).all()  # the normalised mean colour


@PROPERTY
@given(
    st.integers(4, 64), st.integers(4, 64),
    st.one_of(st.none(), st.floats(0.25, 2.0), st.tuples(st.integers(8, 128), st.integers(8, 128))),
    st.booleans(),
)
def test_eval_transform_resizes_the_image_only_and_keeps_the_label_native(height, width, resize, keep_ratio):
    label = torch.randint(0, 256, (height, width), generator=torch.Generator().manual_seed(height * width))
    image = torch.from_numpy(colour_of(label.numpy() % 19))
    t = EvalTransform(resize=resize, keep_ratio=keep_ratio)
    img, lab = t(image, label.clone())
    assert torch.equal(lab, label)
    assert img.shape == (3, *t.output_size(height, width)) and img.dtype == torch.float32
    if resize is None:
        assert torch.equal(img, normalize(image))


def reference_scores(pred: np.ndarray, target: np.ndarray, k: int, ignore: int) -> tuple[np.ndarray, dict]:
    """Confusion matrix by a loop over pixels, then the textbook IoU / accuracy definitions."""
    conf = np.zeros((k, k), np.int64)
    for t, p in zip(target.ravel().tolist(), pred.ravel().tolist()):
        if t != ignore:
            conf[t, p] += 1
    iou, acc = [], []
    for c in range(k):
        tp, gt, pr = conf[c, c], conf[c, :].sum(), conf[:, c].sum()
        iou.append(100.0 * tp / (gt + pr - tp) if gt + pr - tp > 0 else math.nan)
        acc.append(100.0 * tp / gt if gt > 0 else math.nan)

    def mean(values):
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else math.nan

    total = conf.sum()
    return conf, {"mIoU": mean(iou), "IoU": iou, "aAcc": 100.0 * np.trace(conf) / total if total else math.nan,
                  "mAcc": mean(acc)}


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@PROPERTY
@given(st.integers(1, 6), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.floats(0.0, 1.0),
       st.integers(0, 2**32 - 1), st.sampled_from([255, -1, 7]))
def test_segmetric_equals_a_plain_confusion_matrix_loop(k, batches, h, w, ignore_share, seed, ignore):
    if 0 <= ignore < k:
        ignore = 255  # the ignore value must not be a class
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, (batches, h, w))
    target[rng.random(target.shape) < ignore_share] = ignore
    pred = rng.integers(0, k, (batches, h, w))
    pred[target == ignore] = rng.integers(-3, 300, int((target == ignore).sum()))  # anything where ignored
    metric = SegMetric(num_classes=k, ignore_index=ignore)
    for b in range(batches):  # one image at a time, as torch tensors or numpy arrays
        metric.update(torch.from_numpy(pred[b]) if b % 2 else pred[b], target[b])
    conf, want = reference_scores(pred, target, k, ignore)
    np.testing.assert_array_equal(metric.confusion.numpy(), conf)
    got = metric.compute()
    assert all(same(got[key], want[key]) for key in ("mIoU", "aAcc", "mAcc"))
    assert all(same(a, b) for a, b in zip(got["IoU"], want["IoU"], strict=True))
