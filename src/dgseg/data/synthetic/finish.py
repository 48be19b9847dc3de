"""Shared steps of the styles after surface colour: the sky gradient with clouds, blur, vignette, and the
final quantisation to uint8 with sensor noise."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .codes import M
from .gbuffer import Camera
from .scene import Scene
from .shapes import noise_at


def paint_sky(
    img: np.ndarray,
    scene: Scene,
    rng: np.random.Generator,
    top: Any,
    horizon: Any,
    clouds: float = 0.0,
    gain: float = 1.0,
) -> np.ndarray:
    """Fill the sky pixels of img [H, W, 3] (in place): a vertical gradient from ``horizon`` to ``top``
    (RGB 0..1) with clouds of the given amount (0..1)."""
    cam, idx = scene.camera, np.flatnonzero(scene.gb.mat.reshape(-1) == M.SKY)
    rows = (idx // cam.width).astype(np.float32) + 0.5
    t = np.clip((cam.cy - rows) / max(cam.cy, 1.0), 0, 1)[:, None]  # 0 at the horizon, 1 at the top
    sky = np.asarray(horizon, np.float32) * (1 - t) + np.asarray(top, np.float32) * t
    if clouds > 0:
        cols = (idx % cam.width).astype(np.float32)
        n = noise_at(cols / cam.width * 64.0, rows / cam.height * 24.0, 1.0, rng.random(), beta=2.2)
        c = np.clip((n + (clouds - 0.5)) * 2.0, 0, 1)[:, None]
        sky = sky * (1 - c) + np.array([0.93, 0.93, 0.95], np.float32) * c * (0.8 + 0.2 * t)
    img.reshape(-1, 3)[idx] = sky * gain
    return img


@functools.lru_cache(maxsize=1)
def noise_tile() -> np.ndarray:
    """Fixed Gaussian sensor noise [512, 1024, 3] (x 255, float32)."""
    return np.random.default_rng(3).standard_normal((512, 1024, 3), dtype=np.float32) * 255.0


def finish(img: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """RGB [H, W, 3] in 0..1 -> uint8, with Gaussian sensor noise of std ``noise`` (a random window of a
    fixed noise tile, tiled for images larger than it)."""
    out = img * np.float32(255.0)
    if noise > 0:
        tile = noise_tile()
        h, w = img.shape[:2]
        if h > tile.shape[0] or w > tile.shape[1]:
            tile = np.tile(tile, (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1))
        r0, c0 = int(rng.integers(tile.shape[0] - h + 1)), int(rng.integers(tile.shape[1] - w + 1))
        out += tile[r0 : r0 + h, c0 : c0 + w] * np.float32(noise)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 255.0, out=out).astype(np.uint8)


def blur(img: np.ndarray, k: int) -> np.ndarray:
    """Box blur of radius k, twice (about a Gaussian), over the first two axes of [H, W, ...]."""
    out = img.astype(np.float32)
    for axis in (0, 1):
        n = out.shape[axis]
        for _ in range(2):
            pad = [(k + 1, k) if a == axis else (0, 0) for a in range(out.ndim)]
            c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis, dtype=np.float32)
            out = (
                np.take(c, np.arange(2 * k + 1, 2 * k + 1 + n), axis=axis)
                - np.take(c, np.arange(0, n), axis=axis)
            ) / (2 * k + 1)
    return out


def vignette(cam: Camera) -> np.ndarray:
    y = (np.arange(cam.height, dtype=np.float32) + 0.5) / cam.height - 0.5
    x = (np.arange(cam.width, dtype=np.float32) + 0.5) / cam.width - 0.5
    return (1.0 - 0.35 * (x[None, :] ** 2 + y[:, None] ** 2))[..., None]
