"""Image corruptions of the Cityscapes-C protocol (Kamann & Rother, CVPR 2020), built with the
``imagecorruptions`` package (Michaelis et al. 2019; the ImageNet-C definitions of Hendrycks & Dietterich).

The package (1.1.2, from 2020) is an optional extra: ``pip install 'dgseg[corruptions]'``. On dgseg's stack
it cannot be imported as it is (``pkg_resources`` is gone from setuptools >= 81), three of its functions
fail: ``gaussian_blur`` and ``glass_blur`` (``skimage.filters.gaussian(multichannel=...)``, removed in
scikit-image 0.19) and ``fog`` (``np.float_``, removed in NumPy 2), and ``impulse_noise`` runs but is not
reproducible (scikit-image's ``random_noise`` no longer draws from NumPy's global RNG). dgseg imports the
package with a stand-in for ``pkg_resources.resource_filename`` (its frost images), calls its functions
for the other 15 corruptions, and has its own copies of those four, written from the package's
definitions (``imagecorruptions/corruptions.py``) with the current APIs; the tests compare each with the
package's own output on the same random numbers.

Every corruption draws from NumPy's global RNG (as the package does); :func:`corrupt` seeds it per image
and restores it afterwards, so a corrupted image depends only on (seed, corruption, severity, image key).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

EXTRA_HINT = "pip install 'dgseg[corruptions]' (imagecorruptions + opencv-python)"

# The 15 corruptions of the benchmark, by family, in the package's order; then the 4 "validation" extras.
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
COMMON: tuple[str, ...] = tuple(n for f in ("noise", "blur", "weather", "digital") for n in FAMILIES[f])
FAMILY_OF: dict[str, str] = {n: f for f, names in FAMILIES.items() for n in names}
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 32  # the package's limit


def parse_corruptions(spec: str) -> list[str]:
    """``all`` (the 15), ``extra`` (the 4 extras), a family (noise, blur, weather, digital) or names,
    comma-separated, e.g. ``all,extra`` or ``gaussian_noise,fog``; duplicates removed, order kept."""
    names: list[str] = []
    for token in (t.strip() for t in spec.split(",")):
        if token == "all":
            new = list(COMMON)
        elif token in FAMILIES:
            new = list(FAMILIES[token])
        elif token in FAMILY_OF:
            new = [token]
        else:
            raise ValueError(f"--corruptions: unknown corruption '{token}'; expected all, extra, a family "
                             f"({', '.join(f for f in FAMILIES if f != 'extra')}) or names: {', '.join(FAMILY_OF)}")
        names += [n for n in new if n not in names]
    return names


def parse_severities(spec: str) -> list[int]:
    """``1,2,3,4,5`` (or any subset of 1..5) -> [1, 2, 3, 4, 5]."""
    try:
        values = [int(t) for t in spec.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or any(v not in SEVERITIES for v in values):
        raise ValueError(f"--severities: expected integers in 1..5, comma-separated (e.g. 1,2,3,4,5), got '{spec}'")
    return sorted(set(values))


def corruption_seed(seed: int, name: str, severity: int, key: str) -> int:
    """The 32-bit RNG seed of one image (``key``: its path) under one corruption and severity."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{severity}\0{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _package() -> types.ModuleType:
    """``imagecorruptions.corruptions``, imported with a stand-in for ``pkg_resources`` when it is missing."""
    if importlib.util.find_spec("imagecorruptions") is None:
        raise ImportError(f"corruptions need the imagecorruptions package: {EXTRA_HINT}")
    if "imagecorruptions.corruptions" in sys.modules:
        return sys.modules["imagecorruptions.corruptions"]
    shim = None
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda module, name: os.path.join(  # type: ignore[attr-defined]
            os.path.dirname(sys.modules[module].__file__ or ""), name)
        sys.modules["pkg_resources"] = shim
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.interpolation, pkg_resources
            return importlib.import_module("imagecorruptions.corruptions")
    except ImportError as e:
        raise ImportError(f"imagecorruptions could not be imported ({e}); {EXTRA_HINT}") from e
    finally:
        if shim is not None and sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


# ---------------------------------------------------------------------------------------------------
# dgseg's copies of the four corruptions that fail in imagecorruptions 1.1.2 on current NumPy/scikit-image


def gaussian_blur(x: Any, severity: int = 1) -> np.ndarray:
    """imagecorruptions' ``gaussian_blur``: a Gaussian blur of sigma 1, 2, 3, 4, 6."""
    from skimage.filters import gaussian

    c = [1, 2, 3, 4, 6][severity - 1]
    x = gaussian(np.array(x) / 255.0, sigma=c, channel_axis=-1)
    return np.clip(x, 0, 1) * 255


def glass_blur(x: Any, severity: int = 1) -> np.ndarray:
    """imagecorruptions' ``glass_blur``: blur, locally shuffle pixels, blur again.

    The package's shuffle visits (h, w) from the bottom-right corner inwards, draws (dx, dy) uniformly in
    [-d, d) and runs ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on NumPy views: that copies pixel (h', w')
    into (h, w) and leaves (h', w') as it was. This copy does exactly that, with the draws of a pass
    taken at once (the same stream) and the copies done on packed pixels.
    """
    from skimage.filters import gaussian

    sigma, delta, passes = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255.0, sigma=sigma, channel_axis=-1) * 255)
    height, width = x.shape[:2]
    rows = np.arange(height - delta, delta, -1)
    cols = np.arange(width - delta, delta, -1)
    hh, ww = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
    packed = ((x[..., 0].astype(np.int64) << 16) | (x[..., 1].astype(np.int64) << 8) | x[..., 2]).ravel().tolist()
    for _ in range(passes):
        d = np.random.randint(-delta, delta, size=(len(hh), 2))
        dst = (hh * width + ww).tolist()
        src = ((hh + d[:, 1]) * width + (ww + d[:, 0])).tolist()
        for t, s in zip(dst, src):
            packed[t] = packed[s]
    p = np.asarray(packed, dtype=np.int64).reshape(height, width)
    x = np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=-1).astype(np.uint8)
    return np.clip(gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def plasma_fractal(mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """imagecorruptions' diamond-square height map [mapsize, mapsize] in [0, 1] (``mapsize`` a power of 2)."""
    assert mapsize & (mapsize - 1) == 0
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * np.random.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corners + np.roll(corners, shift=-1, axis=0)
        square += np.roll(square, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(square)
        dr = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = (dr + np.roll(dr, 1, axis=0)) + (ul + np.roll(ul, -1, axis=1))
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = (dr + np.roll(dr, 1, axis=1)) + (ul + np.roll(ul, -1, axis=0))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x: Any, severity: int = 1) -> np.ndarray:
    """imagecorruptions' ``fog``: a plasma fractal added, the range rescaled."""
    strength, decay = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][severity - 1]
    shape = np.array(x).shape
    map_size = 1 << (int(max(shape)) - 1).bit_length()
    x = np.array(x) / 255.0
    max_val = x.max()
    x += strength * plasma_fractal(mapsize=map_size, wibbledecay=decay)[: shape[0], : shape[1]][..., np.newaxis]
    return np.clip(x * max_val / (max_val + strength), 0, 1) * 255


def impulse_noise(x: Any, severity: int = 1) -> np.ndarray:
    """imagecorruptions' ``impulse_noise``: salt-and-pepper noise on a fraction 0.03 .. 0.27 of the values.

    The package calls ``skimage.util.random_noise`` without a seed; since scikit-image 0.19 that draws from
    a fresh, unseeded generator (before, from NumPy's global RNG), so the package's output is not
    reproducible. This copy seeds scikit-image's generator from NumPy's global RNG."""
    from skimage.util import random_noise

    c = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    x = random_noise(np.array(x) / 255.0, mode="s&p", amount=c, rng=int(np.random.randint(2**31)))
    return np.clip(x, 0, 1) * 255


OWN: dict[str, Callable[[Any, int], Any]] = {
    "gaussian_blur": gaussian_blur, "glass_blur": glass_blur, "fog": fog, "impulse_noise": impulse_noise,
}


def implementation(name: str) -> str:
    """Who computes corruption ``name``: ``dgseg`` (own copy) or ``imagecorruptions``."""
    return "dgseg" if name in OWN else "imagecorruptions"


def corruption_function(name: str) -> Callable[[Any, int], Any]:
    """The function ``(PIL image, severity) -> array-like [H, W, 3] in 0..255`` of corruption ``name``."""
    if name not in FAMILY_OF:
        raise ValueError(f"unknown corruption '{name}'; expected one of {', '.join(FAMILY_OF)}")
    if name in OWN:
        return OWN[name]
    return getattr(_package(), name)


def corruption_options(corruptions: str | None, severities: str | None, seed: int | None = None
                       ) -> tuple[list[str], list[int]] | tuple[None, None]:
    """The ``--corruptions`` names and ``--severities`` (default 1..5) of a command line, the optional
    extra checked (:func:`require_corruptions`); (None, None) without ``--corruptions``, where
    ``--severities`` or ``--corruption-seed`` (``seed``) would be ignored: refused, naming them."""
    if corruptions is None:
        given = [f"{o} {v}" for o, v in (("--severities", severities), ("--corruption-seed", seed)) if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)}: {'applies' if len(given) == 1 else 'apply'} only with "
                             "--corruptions (e.g. --corruptions all); add it or leave it out")
        return None, None
    names, levels = parse_corruptions(corruptions), parse_severities(severities or "1,2,3,4,5")
    require_corruptions(names)  # the optional extra missing: say so before a model is built
    return names, levels


def require_corruptions(names: list[str]) -> None:
    """Raises RuntimeError (the install hint) when a corruption of ``names`` needs the missing optional extra."""
    try:
        for name in names:
            corruption_function(name)
    except ImportError as e:
        raise RuntimeError(str(e)) from e


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt a uint8 RGB image [H, W, 3] (H, W >= 32) at ``severity`` 1..5, NumPy's global RNG seeded with
    ``seed`` for the call and restored after it; returns uint8 [H, W, 3] (truncated, as the package)."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"corrupt: expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"corrupt: the image is {image.shape[1]}x{image.shape[0]} (WxH); the corruptions need "
                         f"at least {MIN_SIDE} pixels per side")
    if severity not in SEVERITIES:
        raise ValueError(f"corrupt: severity must be 1..5, got {severity}")
    fn = corruption_function(name)
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        out = np.uint8(fn(Image.fromarray(image), severity))
    finally:
        np.random.set_state(state)
    if out.shape != image.shape:
        raise RuntimeError(f"corruption {name} returned shape {out.shape} for an image of shape {image.shape}")
    return out
