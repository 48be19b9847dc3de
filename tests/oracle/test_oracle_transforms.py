"""Oracle: the deterministic parts of dgseg's data transforms against mmseg 1.2.2 / mmcv 2.1.0 given the
same random draws: `RandomCrop(cat_max_ratio=0.75)` given the same offsets, `PhotoMetricDistortion` given
the same draws, `mmcv.rescale_size`, the label resize (`mmcv.imresize(..., interpolation="nearest")`, the
cv2 INTER_NEAREST rule) and the normalisation and padding of `SegDataPreProcessor`.

mmseg works on BGR height x width x 3 uint8 arrays, dgseg on RGB 3 x height x width tensors: the tests
convert between the two. The draws are fed to both sides from one list (`Draws`), which also records
the range each side asked for, so a wrong range fails as well as a wrong use of a value.
"""

from __future__ import annotations

import mmcv_shim

mmcv_shim.require_oracle()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dgseg.data import transforms as T  # noqa: E402


def to_bgr(image: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy()[..., ::-1])


def from_bgr(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array[..., ::-1])).permute(2, 0, 1)


class Draws:
    """One list of random values for both sides. mmseg asks numpy (`randint(low, high)`: high excluded;
    `uniform`), dgseg its `_randint(low, high)` (high included) and `_uniform`; each call takes the next
    value and records (kind, low, highest possible) so the two sides' ranges can be compared."""

    def __init__(self, values):
        self.values = list(values)
        self.calls: list[tuple] = []

    def _next(self, kind, low, high):
        assert self.values, f"more draws than given ({kind} {low}..{high})"
        value = self.values.pop(0)
        self.calls.append((kind, low, high))
        return value

    # numpy.random, as mmseg calls it
    def randint(self, low, high=None, size=None):
        low, high = (0, low) if high is None else (low, high)
        value = self._next("int", low, high - 1)
        assert low <= value < high, (value, low, high)
        return value

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._next("float", low, high)

    # dgseg.data.transforms, as its transforms call it
    def dg_randint(self, low, high, generator=None):
        value = self._next("int", low, high)
        assert low <= value <= high, (value, low, high)
        return value

    def dg_uniform(self, low, high, generator=None):
        return self._next("float", low, high)


# ----------------------------------------------------------------------------------------- random crop


def crop_label(kind: str) -> torch.Tensor:
    """60 x 80 label maps: 'road' is 90% one class (most crops are redrawn), 'mixed' passes at once,
    'ignore' is all ignore (no crop ever passes: the last of 11 draws is kept)."""
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(60, 80, dtype=torch.long)
    if kind == "road":
        label[40:, 60:] = 3
        label[50:, :10] = 255
    elif kind == "mixed":
        label = torch.randint(0, 4, (60, 80), generator=g)
    else:
        label[:] = 255
    return label


@pytest.mark.parametrize("kind", ["road", "mixed", "ignore"])
def test_random_crop_cat_max_ratio_matches_mmseg(kind, monkeypatch):
    from mmseg.datasets.transforms import RandomCrop

    label = crop_label(kind)
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(2)
    offsets = [int(v) for pair in zip(rng.integers(0, 29, 11), rng.integers(0, 49, 11)) for v in pair]

    theirs_draws = Draws(offsets)
    monkeypatch.setattr(np.random, "randint", theirs_draws.randint)
    results = RandomCrop(crop_size=(32, 32), cat_max_ratio=0.75, ignore_index=255).transform(
        {"img": to_bgr(image), "gt_seg_map": label.numpy().astype(np.uint8), "seg_fields": ["gt_seg_map"]})
    monkeypatch.undo()

    ours_draws = Draws(offsets)
    monkeypatch.setattr(T, "_randint", ours_draws.dg_randint)
    top, left, h, w = T.random_crop_box(60, 80, (32, 32), label, cat_max_ratio=0.75, ignore_index=255)
    assert ours_draws.calls == theirs_draws.calls
    assert torch.equal(label[top:top + h, left:left + w], torch.from_numpy(results["gt_seg_map"]).long())
    assert torch.equal(image[:, top:top + h, left:left + w], from_bgr(results["img"]))
    if kind == "road":
        assert len(ours_draws.calls) > 2  # redrawn at least once


# ----------------------------------------------------------------------------- photometric distortion


class PhotoDraws:
    """The draws of one PhotoMetricDistortion call for both sides: coins (0/1), hue shifts (ints) and
    uniform fractions u in [0, 1), a uniform draw in [lo, hi) being lo + (hi - lo) * u on both sides.
    Records (kind, range) per call; dgseg's fractions carry no range (its `_draw` does not see it)."""

    def __init__(self, values):
        self.values = list(values)
        self.calls: list[tuple] = []

    def _next(self, call):
        assert self.values, f"more draws than given ({call})"
        self.calls.append(call)
        return self.values.pop(0)

    # numpy.random, as mmseg calls it
    def randint(self, low, high=None, size=None):
        low, high = (0, low) if high is None else (low, high)
        value = self._next(("int", low, high - 1))
        assert low <= value < high, (value, low, high)
        return value

    def uniform(self, low=0.0, high=1.0, size=None):
        self.calls.append(("float",))
        return low + (high - low) * self.values.pop(0)

    # dgseg.data.photometric's draws
    def coin(self, generator=None):
        return bool(self._next(("int", 0, 1)))

    def hue_shift(self, hue_delta, generator=None):
        value = self._next(("int", -hue_delta, hue_delta - 1))
        assert -hue_delta <= value < hue_delta
        return value

    def fraction(self, generator=None):
        return self._next(("float",))


def photometric_draws(brightness, contrast_first, contrast, saturation, hue):
    """The draws of one PhotoMetricDistortion call in mmseg's order; each step None (off) or its draw."""
    values = [1, brightness] if brightness is not None else [0]
    values.append(1 if contrast_first else 0)
    if contrast_first:
        values += [1, contrast] if contrast is not None else [0]
    values += [1, saturation] if saturation is not None else [0]
    values += [1, hue] if hue is not None else [0]
    if not contrast_first:
        values += [1, contrast] if contrast is not None else [0]
    return values


def run_photometric(image: torch.Tensor, values, monkeypatch):
    import mmseg.datasets.transforms.transforms as mmseg_transforms
    from mmseg.datasets.transforms import PhotoMetricDistortion

    from dgseg.data import photometric

    theirs_draws = PhotoDraws(values)
    monkeypatch.setattr(mmseg_transforms, "random", theirs_draws)
    theirs = from_bgr(PhotoMetricDistortion().transform({"img": to_bgr(image)})["img"])
    monkeypatch.undo()
    ours_draws = PhotoDraws(values)
    monkeypatch.setattr(photometric, "_coin", ours_draws.coin)
    monkeypatch.setattr(photometric, "hue_shift", ours_draws.hue_shift)
    monkeypatch.setattr(photometric, "_draw", ours_draws.fraction)
    ours = T.photometric_distortion(image)
    monkeypatch.undo()
    assert theirs_draws.values == [] and ours_draws.values == []
    return ours, theirs, ours_draws.calls, theirs_draws.calls


def photo() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g) * 255, (48, 64), mode="bilinear")
    return (smooth[0] + torch.randn(3, 48, 64, generator=g) * 20).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize(
    "steps",
    [dict(brightness=0.87, contrast_first=True, contrast=0.37, saturation=None, hue=None),
     dict(brightness=0.23, contrast_first=False, contrast=0.11, saturation=None, hue=None),
     dict(brightness=None, contrast_first=False, contrast=0.99, saturation=None, hue=None),
     dict(brightness=None, contrast_first=True, contrast=None, saturation=0.92, hue=None),
     dict(brightness=None, contrast_first=True, contrast=None, saturation=None, hue=-11),
     dict(brightness=None, contrast_first=True, contrast=None, saturation=0.05, hue=17),
     dict(brightness=0.61, contrast_first=False, contrast=0.72, saturation=0.33, hue=-18)],
    ids=["bright-then-contrast", "contrast-last", "contrast-only", "saturation", "hue", "saturation-and-hue",
         "all-steps"],
)
def test_photometric_distortion_equals_mmseg(steps, monkeypatch):
    """uint8 after every step (brightness and contrast clip and truncate; saturation and hue through
    OpenCV's 8-bit HSV): the same draws give the same image, exactly."""
    ours, theirs, our_calls, their_calls = run_photometric(photo(), photometric_draws(**steps), monkeypatch)
    assert our_calls == [c[:1] if c[0] == "float" else c for c in their_calls]  # ranges: hue -18..17
    assert ours.dtype == torch.uint8 and torch.equal(ours, theirs)


# ------------------------------------------------------------------------------ resize and normalise


def test_rescale_size_matches_mmcv():
    import mmcv

    for h, w in [(512, 1024), (720, 1280), (1052, 1914), (375, 500), (1024, 512), (33, 77)]:
        for ratio in (0.5, 0.73, 1.0, 1.61, 2.0):
            scale = (int(2048 * ratio), int(512 * ratio))
            their_w, their_h = mmcv.rescale_size((w, h), scale)
            assert T.rescale_size(h, w, scale) == (their_h, their_w), (h, w, ratio)


@pytest.mark.parametrize("size", [(37, 53), (96, 150), (120, 160), (61, 240)], ids=str)
def test_label_resize_is_mmcv_nearest(size):
    import mmcv

    label = torch.randint(0, 19, (48, 80), generator=torch.Generator().manual_seed(4))
    label[:5] = 255
    image = torch.zeros(3, 48, 80, dtype=torch.uint8)
    _, ours = T.resize(image, label, size)
    theirs = mmcv.imresize(label.numpy().astype(np.uint8), (size[1], size[0]), interpolation="nearest")
    assert torch.equal(ours, torch.from_numpy(theirs).long())


@pytest.mark.parametrize("size", [(37, 53), (96, 150), (30, 50)], ids=str)
def test_image_resize_close_to_mmcv_bilinear(size):
    """The image: cv2's INTER_LINEAR on uint8 (fixed-point) against torch's bilinear, within 1 level."""
    import mmcv

    image = photo()
    ours, _ = T.resize(image, None, size)
    theirs = from_bgr(mmcv.imresize(to_bgr(image), (size[1], size[0]), interpolation="bilinear"))
    assert (ours.float() - theirs.float()).abs().max() <= 1


def test_normalise_and_pad_match_seg_data_preprocessor():
    """Rein's data preprocessor: BGR -> RGB, (x - mean) / std, then the batch padded bottom/right to the
    crop size with 0 (image) and 255 (label); dgseg's train transform on an image smaller than the crop."""
    from mmengine.structures import PixelData
    from mmseg.models.data_preprocessor import SegDataPreProcessor
    from mmseg.structures import SegDataSample

    image = photo()[:, :40, :50]
    label = torch.randint(0, 19, (40, 50), generator=torch.Generator().manual_seed(5))
    pre = SegDataPreProcessor(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], size=(48, 64),
                              bgr_to_rgb=True, pad_val=0, seg_pad_val=255)
    sample = SegDataSample(gt_sem_seg=PixelData(data=label[None]))
    out = pre({"inputs": [torch.from_numpy(to_bgr(image)).permute(2, 0, 1)], "data_samples": [sample]},
              training=True)
    transform = T.TrainTransform(crop_size=(48, 64), scale=None, cat_max_ratio=1.0, flip_prob=0.0,
                                 photometric=False)
    ours_img, ours_label = transform(image, label)
    torch.testing.assert_close(ours_img, out["inputs"][0], rtol=0, atol=1e-5)
    assert torch.equal(ours_label, out["data_samples"][0].gt_sem_seg.data[0].long())
