"""Training and evaluation transforms (the mmseg recipe of the DG papers, in plain torch).

A transform takes and returns ``(image, label)``: image uint8 [3, H, W] RGB in, float [3, h, w]
normalised out; label int64 [H, W] with 255 = ignore. Image and label always move together (labels
resized with nearest neighbour). Randomness comes from torch's global RNG, or from ``generator`` when
one is given; use :func:`seed_worker` as the DataLoader ``worker_init_fn`` for repeatable runs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .labels import IGNORE_INDEX
from .photometric import photometric_distortion
from .resizing import choose_short_edge, prescale, rescale_size, resize_label, shortest_edge_size

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# Evaluation resize of Rein's protocol (configs/_base_/datasets/*_512x512.py test pipelines): (W, H) fitted
# keeping the aspect ratio, or a scale factor. Datasets not listed are evaluated at native resolution.
EVAL_RESIZE: dict[str, tuple[int, int] | float] = {
    "cityscapes": (1024, 512),
    "bdd100k": (1280, 720),
    "mapillary": (1024, 512),
}
# Shrunk offline before evaluation, image and label (tools/convert_datasets/mapillary_resize.py).
EVAL_PRESCALE: dict[str, float] = {"mapillary": 0.5}


def eval_resize_for(name: str) -> tuple[int, int] | float | None:
    """The protocol's evaluation resize for a dataset name: (W, H), a scale factor, or None (native)."""
    return EVAL_RESIZE.get(name.lower())


def eval_prescale_for(name: str) -> float | None:
    """The protocol's offline shrink of image and label for a dataset name (Mapillary: 0.5), or None."""
    return EVAL_PRESCALE.get(name.lower())


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and numpy's RNGs from the worker's torch seed.

    torch already seeds each worker with ``base_seed + worker_id`` (base_seed drawn from the
    DataLoader's generator), so with a seeded generator every worker's stream is repeatable.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * _rand(generator)


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def resize(
    image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int], antialias: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize image [3, H, W] (bilinear; uint8 or float) and label [H, W] (OpenCV ``INTER_NEAREST``, as
    mmcv resizes label maps: :func:`~dgseg.data.resizing.resize_label`) to size (h, w)."""
    if tuple(image.shape[-2:]) != tuple(size):
        image = F.interpolate(
            image[None], size=size, mode="bilinear", align_corners=False, antialias=antialias
        )[0]
    if label is not None:
        label = resize_label(label, size)
    return image, label


def normalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 or float (0..255) RGB [3, H, W] -> float32 (x - mean) / std."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (image.float() - m) / s


def denormalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Inverse of :func:`normalize` for [3, H, W] or [B, 3, H, W]: uint8 RGB (0..255)."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (image.float() * s + m).round().clamp(0, 255).to(torch.uint8)


def random_crop_box(
    height: int,
    width: int,
    crop: tuple[int, int],
    label: torch.Tensor | None = None,
    cat_max_ratio: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    tries: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """A random crop (top, left, h, w) of at most ``crop`` = (h, w) inside (height, width).

    With ``cat_max_ratio`` < 1 and a label, the crop is redrawn (up to ``tries`` times, as mmseg) until
    no single class covers ``cat_max_ratio`` or more of the crop's non-ignored pixels and the crop holds
    at least two classes; the last draw is kept otherwise.
    """
    ch, cw = min(crop[0], height), min(crop[1], width)

    def draw() -> tuple[int, int, int, int]:
        return _randint(0, height - ch, generator), _randint(0, width - cw, generator), ch, cw

    box = draw()
    if label is None or cat_max_ratio >= 1.0:
        return box
    for _ in range(tries):
        top, left, h, w = box
        counts = torch.bincount(
            label[top : top + h, left : left + w].reshape(-1).clamp(0, 255), minlength=256
        )
        counts[ignore_index] = 0
        counts = counts[counts > 0]
        if len(counts) > 1 and float(counts.max()) / float(counts.sum()) < cat_max_ratio:
            break
        box = draw()
    return box


class TrainTransform:
    """Training augmentation of the DG recipe (mmseg's RandomResize, RandomCrop, RandomFlip,
    PhotoMetricDistortion, then normalisation and padding).

    1. Random resize keeping the aspect ratio: r ~ U(ratio_range), the image is fitted into
       (scale[0] * r, scale[1] * r) as (long edge, short edge) - with the defaults the short edge goes to
       512 * r unless the long edge would pass 2048 * r. With ``short_edges`` instead (Rein's
       ``RandomChoiceResize`` with ``ResizeShortestEdge``): the short edge is one of ``short_edges`` drawn
       uniformly, the long edge at most ``max_long_edge``. Image bilinear, label OpenCV nearest. With
       ``keep_ratio=False`` the image becomes exactly (W, H) = scale * r (mmcv's ``Resize(keep_ratio=False)``).
    2. Random crop of ``crop_size`` (h, w) with ``cat_max_ratio``.
    3. Horizontal flip with ``flip_prob``.
    4. Photometric distortion (image only) when ``photometric``.
    5. Normalisation ((x - mean) / std, 0..255 scale), then padding to ``crop_size`` at the bottom/right
       when smaller: image 0 (after normalisation, i.e. the mean colour), label ``ignore_index``.

    Call: ``(image uint8 [3, H, W], label int64 [H, W]) -> (float32 [3, h, w], int64 [h, w])``.
    """

    def __init__(
        self,
        crop_size: tuple[int, int] = (512, 512),
        scale: tuple[int, int] = (2048, 512),
        ratio_range: tuple[float, float] | None = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        photometric: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = IGNORE_INDEX,
        antialias: bool = False,
        generator: torch.Generator | None = None,
        short_edges: Sequence[int] | None = None,
        max_long_edge: int = 2048,
        keep_ratio: bool = True,
    ) -> None:
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.crop_size = tuple(int(c) for c in crop_size)
        self.scale = tuple(scale) if scale is not None else None
        self.ratio_range = ratio_range
        self.cat_max_ratio = cat_max_ratio
        self.flip_prob = flip_prob
        self.photometric = photometric
        self.mean, self.std = tuple(mean), tuple(std)
        self.ignore_index = ignore_index
        self.antialias = antialias
        self.generator = generator
        self.short_edges = tuple(int(e) for e in short_edges) if short_edges else None
        self.max_long_edge = int(max_long_edge)
        self.keep_ratio = keep_ratio

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator
        if image.shape[-2:] != label.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape)} and label {tuple(label.shape)} differ in size")
        if self.short_edges is not None:
            short = choose_short_edge(self.short_edges, g)
            size = shortest_edge_size(image.shape[-2], image.shape[-1], short, self.max_long_edge)
            image, label = resize(image, label, size, self.antialias)
        elif self.scale is not None:
            ratio = _uniform(*self.ratio_range, g) if self.ratio_range is not None else 1.0
            target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
            size = rescale_size(image.shape[-2], image.shape[-1], target) if self.keep_ratio else target[::-1]
            image, label = resize(image, label, size, self.antialias)
        top, left, h, w = random_crop_box(
            image.shape[-2],
            image.shape[-1],
            self.crop_size,
            label,
            self.cat_max_ratio,
            self.ignore_index,
            generator=g,
        )
        image = image[:, top : top + h, left : left + w]
        label = label[top : top + h, left : left + w]
        if self.flip_prob > 0 and _rand(g) < self.flip_prob:
            image, label = image.flip(-1), label.flip(-1)
        img = photometric_distortion(image, generator=g) if self.photometric else image.float()
        img = normalize(img, self.mean, self.std)
        ph, pw = self.crop_size[0] - h, self.crop_size[1] - w
        if ph > 0 or pw > 0:
            img = F.pad(img, (0, max(pw, 0), 0, max(ph, 0)), value=0.0)
            label = F.pad(label, (0, max(pw, 0), 0, max(ph, 0)), value=self.ignore_index)
        return img.contiguous(), label.long().contiguous()

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, scale={self.scale}, ratio_range={self.ratio_range}, "
            f"short_edges={self.short_edges}, max_long_edge={self.max_long_edge}, "
            f"cat_max_ratio={self.cat_max_ratio}, flip_prob={self.flip_prob}, photometric={self.photometric})"
        )


class EvalTransform:
    """Evaluation transform: resize the image only (bilinear) and normalise; the label keeps its native
    resolution (mIoU is computed there, after resizing the logits back).

    ``resize``: None (native), (W, H) fitted keeping the aspect ratio as mmseg's ``Resize(keep_ratio=True)``
    (or exactly (W, H) with ``keep_ratio=False``), or a float scale factor (0.5 = half resolution).
    ``prescale``: first shrink image and label by this factor as Rein's offline Mapillary step
    (:func:`~dgseg.data.resizing.prescale`: PIL bicubic / nearest); the label is then scored at that size.
    Call: ``(image uint8 [3, H, W], label int64 [H, W]) -> (float32 [3, h, w], the (prescaled) label)``.
    """

    def __init__(
        self,
        resize: tuple[int, int] | float | None = None,
        keep_ratio: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        antialias: bool = False,
        prescale: float | None = None,
    ) -> None:
        self.resize = resize
        self.keep_ratio = keep_ratio
        self.prescale = prescale
        self.mean, self.std = tuple(mean), tuple(std)
        self.antialias = antialias

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the resized image for an input of (height, width)."""
        if self.resize is None:
            return height, width
        if isinstance(self.resize, (int, float)):
            return max(int(height * self.resize + 0.5), 1), max(int(width * self.resize + 0.5), 1)
        w, h = self.resize
        return rescale_size(height, width, (w, h)) if self.keep_ratio else (int(h), int(w))

    def image_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the image the model gets from a stored image of (height, width): ``prescale``, then
        ``resize`` (:meth:`output_size`), computed without an image."""
        if self.prescale is not None:
            height, width = int(height * self.prescale), int(width * self.prescale)
        return self.output_size(height, width)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prescale is not None:
            image, label = prescale(image, label, self.prescale)
        size = self.output_size(image.shape[-2], image.shape[-1])
        image, _ = resize(image, None, size, self.antialias)
        return normalize(image, self.mean, self.std).contiguous(), label

    def __repr__(self) -> str:
        return f"EvalTransform(resize={self.resize}, keep_ratio={self.keep_ratio}, prescale={self.prescale})"
