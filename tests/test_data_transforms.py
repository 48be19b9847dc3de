"""Transforms: the DG recipe keeps image and label aligned, honours cat_max_ratio, pads, and is
repeatable under a seed."""

import random

import numpy as np
import pytest
import torch

from dgseg.data import EvalTransform, TrainTransform, denormalize, eval_resize_for, normalize, seed_worker
from dgseg.data.transforms import (
    eval_prescale_for,
    photometric_distortion,
    random_crop_box,
    rescale_size,
)


def blocks(h: int = 96, w: int = 160, block: int = 16, seed: int = 0):
    """An image whose red channel encodes its label: label = class of each block, R = 10 * label."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 19, size=(h // block + 1, w // block + 1))
    label = np.kron(grid, np.ones((block, block), np.int64))[:h, :w]
    image = np.zeros((3, h, w), np.uint8)
    image[0] = 10 * label
    image[1] = 128
    image[2] = 255 - 10 * label
    return torch.from_numpy(image), torch.from_numpy(label)


def interior(label: torch.Tensor, size: int = 5) -> torch.Tensor:
    """Pixels whose size x size neighbourhood has one label (where bilinear resizing is exact; 5 because
    labels follow OpenCV's INTER_NEAREST, which samples up to half a source pixel off the pixel centre)."""
    lab = label[None, None].float()
    mx = torch.nn.functional.max_pool2d(lab, size, 1, size // 2)
    mn = -torch.nn.functional.max_pool2d(-lab, size, 1, size // 2)
    return (mx == mn)[0, 0]


def test_rescale_size_fits_long_and_short_edges_like_mmcv():
    assert rescale_size(1052, 1914, (2048, 512)) == (512, 932)  # short edge 512 binds
    assert rescale_size(1024, 2048, (2048, 512)) == (512, 1024)
    assert rescale_size(100, 1000, (2048, 512)) == (205, 2048)  # long edge 2048 binds
    assert rescale_size(1024, 2048, (1024, 512)) == (512, 1024)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_train_transform_keeps_image_and_label_aligned(seed):
    image, label = blocks(seed=seed)
    t = TrainTransform(
        crop_size=(48, 64),
        scale=(320, 96),
        ratio_range=(0.6, 1.8),
        photometric=False,
        generator=torch.Generator().manual_seed(seed),
    )
    img, lab = t(image, label)
    assert img.shape == (3, 48, 64) and img.dtype == torch.float32
    assert lab.shape == (48, 64) and lab.dtype == torch.int64
    red = denormalize(img)[0].long()
    valid = (lab != 255) & interior(lab)
    assert valid.sum() > 100
    assert (red[valid] - 10 * lab[valid]).abs().max() <= 1
    # blue encodes the label too, so a flip of one and not the other would show here
    blue = denormalize(img)[2].long()
    assert (blue[valid] - (255 - 10 * lab[valid])).abs().max() <= 1


def test_small_images_are_padded_with_ignore_and_zero():
    image, label = blocks(20, 30)
    img, lab = TrainTransform(crop_size=(32, 40), scale=None, photometric=False, flip_prob=0.0)(image, label)
    assert img.shape == (3, 32, 40) and lab.shape == (32, 40)
    assert (lab[20:] == 255).all() and (lab[:, 30:] == 255).all()
    assert (img[:, 20:] == 0).all() and (img[:, :, 30:] == 0).all()
    torch.testing.assert_close(lab[:20, :30], label)


def test_cat_max_ratio_avoids_crops_dominated_by_one_class():
    label = torch.zeros(64, 256, dtype=torch.int64)  # road everywhere ...
    label[:, 128:] = 13  # ... except cars on the right half
    label[:32, :60] = 255  # ignore does not count
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        top, left, h, w = random_crop_box(64, 256, (64, 64), label, cat_max_ratio=0.75, generator=g)
        crop = label[top : top + h, left : left + w]
        counts = torch.bincount(crop[crop != 255].flatten(), minlength=19)
        assert counts.max() / counts.sum() < 0.75
    plain = [random_crop_box(64, 256, (64, 64), label, cat_max_ratio=1.0, generator=g)[1] for _ in range(50)]
    assert min(plain) < 80  # without the constraint many crops are (nearly) all road


def test_same_seed_same_output_different_seed_different_output():
    image, label = blocks()

    def run(seed):
        t = TrainTransform(crop_size=(48, 48), scale=(320, 96), generator=torch.Generator().manual_seed(seed))
        return t(image, label)

    a, b, c = run(5), run(5), run(6)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_global_rng_is_used_without_a_generator():
    image, label = blocks()
    t = TrainTransform(crop_size=(48, 48), scale=(320, 96))
    torch.manual_seed(3)
    a = t(image, label)
    torch.manual_seed(3)
    b = t(image, label)
    torch.testing.assert_close(a[0], b[0])


def test_seed_worker_seeds_python_and_numpy_from_torch():
    torch.manual_seed(11)
    seed_worker(0)
    a = (random.random(), np.random.rand())
    torch.manual_seed(11)
    seed_worker(0)
    assert (random.random(), np.random.rand()) == a


def test_photometric_distortion_stays_in_range_and_changes_colours():
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    outs = [photometric_distortion(image, generator=g) for _ in range(8)]
    assert all(o.dtype == torch.uint8 and o.shape == image.shape for o in outs)  # uint8 as mmseg
    assert any((o.float() - image.float()).abs().mean() > 2 for o in outs)


def test_eval_transform_resizes_the_image_only():
    image = torch.randint(0, 256, (3, 64, 128), dtype=torch.uint8)
    label = torch.randint(0, 19, (64, 128))
    img, lab = EvalTransform(resize=(64, 32))(image, label)
    assert img.shape == (3, 32, 64) and lab is label
    img, _ = EvalTransform(resize=0.5)(image, label)
    assert img.shape == (3, 32, 64)
    img, _ = EvalTransform()(image, label)
    torch.testing.assert_close(img, normalize(image))


def test_protocol_eval_resize_presets():
    assert eval_resize_for("cityscapes") == (1024, 512)
    assert eval_resize_for("bdd100k") == (1280, 720)
    assert eval_resize_for("mapillary") == (1024, 512)  # after the half-size prescale
    assert eval_prescale_for("mapillary") == 0.5 and eval_prescale_for("cityscapes") is None
    assert eval_resize_for("acdc-night") is None
    # Cityscapes at 2048x1024 becomes 1024x512
    assert EvalTransform(eval_resize_for("cityscapes")).output_size(1024, 2048) == (512, 1024)


@pytest.mark.parametrize("kw", [{}, {"short_edges": [256, 512, 1024], "max_long_edge": 2048},
                                {"keep_ratio": False, "scale": (2048, 512)}])
@pytest.mark.parametrize("h, w", [(1, 5000), (5000, 1), (1, 100000), (2, 4000)])
def test_extreme_aspect_ratios_resize_to_at_least_one_pixel_per_edge_and_crop(h, w, kw):
    torch.manual_seed(0)
    image, label = TrainTransform(crop_size=(64, 64), **kw)(
        torch.full((3, h, w), 7, dtype=torch.uint8), torch.ones(h, w, dtype=torch.long))
    assert image.shape == (3, 64, 64) and label.shape == (64, 64)
    assert (label == 1).any()  # the resized strip survives (padding is 255 around it)
    assert min(EvalTransform(resize=0.5).output_size(h, w)) == 1
