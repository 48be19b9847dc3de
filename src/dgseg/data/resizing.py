"""The resize rules of Rein's pipelines (mmcv / mmseg / PIL semantics), on torch tensors.

- :func:`resize_label`: OpenCV ``INTER_NEAREST``, which ``mmcv.imresize(..., interpolation='nearest')``
  uses for label maps (``mmcv/image/geometric.py``): output pixel x takes source pixel
  ``floor(x * (1 / (dst / src)))`` (not the pixel centre).
- :func:`shortest_edge_size`: mmseg's ``ResizeShortestEdge`` (``mmseg/datasets/transforms/transforms.py``)
  followed by mmcv's keep-ratio ``Resize`` (``rescale_size``), as ``RandomChoiceResize(scales, resize_type=
  'ResizeShortestEdge', max_size)`` applies it in Rein's training pipelines.
- :func:`rein_short_edges`: the 16 short edges of Rein's configs, ``[int(crop * x * 0.1) for x in range(5, 21)]``.
- :func:`prescale`: Rein's ``tools/convert_datasets/mapillary_resize.py``: image and label to ``(W // 2,
  H // 2)`` with PIL (image ``BICUBIC``, label ``NEAREST``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def rein_short_edges(crop: int) -> list[int]:
    """Short-edge choices of Rein's ``RandomChoiceResize`` for a crop size: 256, 307, ..., 1024 for 512."""
    return [int(crop * x * 0.1) for x in range(5, 21)]


def nearest_indices(src: int, dst: int) -> torch.Tensor:
    """Source index of each of ``dst`` output pixels under OpenCV ``INTER_NEAREST`` (int64 [dst])."""
    ifx = 1.0 / (dst / src)  # OpenCV: fx = dst / src (double), ifx = 1 / fx
    idx = torch.floor(torch.arange(dst, dtype=torch.float64) * ifx).to(torch.int64)
    return idx.clamp_(max=src - 1)


def resize_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a label map [H, W] (any dtype) to ``size`` = (h, w) by OpenCV's ``INTER_NEAREST`` rule."""
    h, w = int(size[0]), int(size[1])
    if tuple(label.shape[-2:]) == (h, w):
        return label
    rows = nearest_indices(label.shape[-2], h)
    cols = nearest_indices(label.shape[-1], w)
    return label[..., rows[:, None], cols[None, :]]


def rescale_size(height: int, width: int, scale: Sequence[float]) -> tuple[int, int]:
    """Size (h, w) of an image resized keeping its aspect ratio to fit ``scale`` = (long, short) edges
    (either order), as mmcv's ``rescale_size``: the factor is min(long / long_edge, short / short_edge).
    Every edge is at least 1 px (an extreme aspect ratio such as 1 x 100000 would otherwise round one to 0)."""
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(height, width), short_max / min(height, width))
    return max(int(height * factor + 0.5), 1), max(int(width * factor + 0.5), 1)


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """(h, w) after mmseg's ``ResizeShortestEdge(scale=short, max_size)``: the short edge becomes ``short``
    unless the long edge would pass ``max_size`` (then the long edge is ``max_size``); the resulting
    (w, h) is the ``scale`` of mmcv's keep-ratio ``Resize``, which fits the image into it again. Every
    edge is at least 1 px (an extreme aspect ratio such as 1 x 5000 would otherwise round one to 0)."""
    size = float(short)
    scale = size / min(height, width)
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    new_h, new_w = max(int(new_h + 0.5), 1), max(int(new_w + 0.5), 1)  # 1 x 5000: a short edge of 0.4 px
    return rescale_size(height, width, (new_h, new_w))


def choose_short_edge(choices: Sequence[int], generator: torch.Generator | None = None) -> int:
    """mmcv ``RandomChoiceResize``: one of ``choices``, uniformly."""
    return int(choices[int(torch.randint(0, len(choices), (), generator=generator))])


def prescale(image: torch.Tensor, label: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Image uint8 [3, H, W] and label [H, W] to ``(int(H * factor), int(W * factor))`` as Rein's
    ``mapillary_resize.py`` (for 0.5: ``(W // 2, H // 2)``): image with PIL ``BICUBIC`` (antialiased),
    label with PIL ``NEAREST``. Labels must be 0..255 (train IDs and 255 = ignore)."""
    h, w = label.shape[-2:]
    size = (int(w * factor), int(h * factor))  # PIL order: (W, H)
    if min(size) < 1:
        raise ValueError(f"prescale {factor}: a {w} x {h} image would have no pixels left")
    img = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    img = np.asarray(img.resize(size, resample=Image.BICUBIC))
    if int(label.min()) < 0 or int(label.max()) > 255:
        raise ValueError(f"prescale: label values must lie in 0..255, got {int(label.min())}..{int(label.max())}")
    lab = np.asarray(Image.fromarray(label.to(torch.uint8).numpy()).resize(size, resample=Image.NEAREST))
    return (torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous(),
            torch.from_numpy(lab.copy()).to(label.dtype))
