"""mmseg's ``PhotoMetricDistortion`` on uint8 images, step for step.

mmseg (``mmseg/datasets/transforms/transforms.py``, the version Rein trains with) keeps the image uint8
between steps: brightness and contrast compute ``x * alpha + beta`` in float32, clip to 0..255 and cast
back to uint8 (truncation); saturation and hue go through OpenCV's 8-bit HSV conversion
(``mmcv.bgr2hsv`` / ``hsv2bgr`` = ``cv2.cvtColor``: H in 0..179, S and V in 0..255). The hue shift is
``numpy.random.randint(-18, 18)``, i.e. -18..17. :func:`rgb_to_hsv_u8` and :func:`hsv_to_rgb_u8`
reproduce OpenCV's integer / float32 arithmetic (``modules/imgproc/src/color_hsv.simd.hpp``) so that the
result equals ``cv2.cvtColor`` pixel for pixel.
"""

from __future__ import annotations

import torch

_HSV_SHIFT = 12


def _round_table(numerator: int, scale: float) -> torch.Tensor:
    i = torch.arange(256, dtype=torch.float64)
    table = torch.round(numerator / (scale * i.clamp_min(1)))  # cvRound: half to even, as torch.round
    table[0] = 0
    return table.to(torch.int32)


_SDIV = _round_table(255 << _HSV_SHIFT, 1.0)
_HDIV180 = _round_table(180 << _HSV_SHIFT, 6.0)


def rgb_to_hsv_u8(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [3, H, W] -> uint8 HSV [3, H, W] as ``cv2.cvtColor(..., COLOR_RGB2HSV)``: H = degrees / 2
    (0..179), S and V 0..255 (OpenCV's integer arithmetic; every product fits in int32)."""
    r, g, b = rgb.to(torch.int32).unbind(0)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    s = (diff * _SDIV[v] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV180[diff] + (1 << (_HSV_SHIFT - 1))) >> _HSV_SHIFT  # arithmetic shift: floor, as C++ on int
    h += (h < 0) * 180
    return torch.stack([h, s, v]).to(torch.uint8)


# OpenCV's sector table (b, g, r) -> indices into (v, v(1-s), v(1-sh), v(1-s(1-h))).
_SECTORS = torch.tensor([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])


def hsv_to_rgb_u8(hsv: torch.Tensor) -> torch.Tensor:
    """uint8 HSV [3, H, W] (OpenCV ranges) -> uint8 RGB [3, H, W] as ``cv2.cvtColor(..., COLOR_HSV2RGB)``
    (float32 arithmetic, rounded half to even and saturated)."""
    f32 = torch.float32
    h = hsv[0].to(f32) * torch.tensor(6.0 / 180.0, dtype=f32)
    s = hsv[1].to(f32) * torch.tensor(1.0 / 255.0, dtype=f32)
    v = hsv[2].to(f32) * torch.tensor(1.0 / 255.0, dtype=f32)
    h = torch.fmod(h, 6.0)
    sector = torch.floor(h)
    h = h - sector
    sector = sector.to(torch.int64)
    bad = (sector < 0) | (sector >= 6)
    sector = torch.where(bad, 0, sector)
    h = torch.where(bad, 0.0, h)
    one = torch.ones((), dtype=f32)

    def one_minus(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # 1 - a * b as one fused multiply-add
        return (1.0 - a.double() * b.double()).to(f32)

    tab = torch.stack([v, v * (one - s), v * one_minus(s, h), v * one_minus(s, one - h)])  # [4, H, W]
    idx = _SECTORS[sector]  # [H, W, 3]: b, g, r
    b, g, r = (tab.gather(0, idx[..., k][None])[0] for k in range(3))
    b, g, r = (torch.where(s == 0, v, c) for c in (b, g, r))
    rgb = torch.stack([r, g, b]) * torch.tensor(255.0, dtype=f32)
    return torch.trunc(rgb).clamp(0, 255).to(torch.uint8)


def _convert(img: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """mmseg's ``convert``: float32 ``img * alpha + beta``, clipped to 0..255, cast to uint8 (truncates)."""
    out = img.to(torch.float32) * torch.tensor(alpha, dtype=torch.float32) + torch.tensor(beta, dtype=torch.float32)
    return out.clamp(0, 255).to(torch.uint8)


def _draw(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def _coin(generator: torch.Generator | None) -> bool:
    """numpy's ``random.randint(2)``: 0 or 1."""
    return bool(torch.randint(0, 2, (), generator=generator))


def hue_shift(hue_delta: int, generator: torch.Generator | None = None) -> int:
    """numpy's ``random.randint(-hue_delta, hue_delta)``: high exclusive, so -18..17 for the default 18."""
    return int(torch.randint(-hue_delta, hue_delta, (), generator=generator))


def photometric_distortion(
    image: torch.Tensor,
    brightness_delta: float = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion on uint8 RGB [3, H, W] (float input is truncated to uint8 first);
    returns uint8 [3, H, W]. Each step happens with p = 0.5: brightness ``+ U(-32, 32)``; contrast
    ``x U(0.5, 1.5)`` first or last (a coin decides); saturation ``S x U(0.5, 1.5)``; hue ``H + randint(-18,
    18)`` (-18..17) mod 180. The image is uint8 after every step, as in mmseg."""
    img = image if image.dtype == torch.uint8 else image.clamp(0, 255).to(torch.uint8)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * _draw(generator)

    if _coin(generator):
        img = _convert(img, beta=uniform(-brightness_delta, brightness_delta))
    contrast_first = _coin(generator)  # mmseg: mode == 1 -> contrast before the colour steps
    if contrast_first and _coin(generator):
        img = _convert(img, alpha=uniform(*contrast_range))
    if _coin(generator):
        hsv = rgb_to_hsv_u8(img)
        hsv[1] = _convert(hsv[1], alpha=uniform(*saturation_range))
        img = hsv_to_rgb_u8(hsv)
    if _coin(generator):
        hsv = rgb_to_hsv_u8(img)
        hsv[0] = ((hsv[0].to(torch.int64) + hue_shift(hue_delta, generator)) % 180).to(torch.uint8)
        img = hsv_to_rgb_u8(hsv)
    if not contrast_first and _coin(generator):
        img = _convert(img, alpha=uniform(*contrast_range))
    return img
