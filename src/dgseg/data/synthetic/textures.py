"""Surface colour for the photo-like styles: real photo textures (scikit-image's bundled images, or
procedural noise without it) sampled by material at the G-buffer's texture coordinates, faded with
distance, times each pixel's shade."""

from __future__ import annotations

import functools
import warnings

import numpy as np

from .codes import F, M
from .gbuffer import GBuffer
from .scene import Scene
from .shapes import periodic_noise


def mirror_tile(tex: np.ndarray) -> np.ndarray:
    """A square power-of-two texture [n, n, ...] -> its seamless mirrored tile [2n, 2n, ...]."""
    top = np.concatenate([tex, tex[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def half(img: np.ndarray) -> np.ndarray:
    """2x2 mean downsampling of [2n, 2n, ...]."""
    x = img.astype(np.float32)
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


@functools.lru_cache(maxsize=1)
def textures() -> dict[str, np.ndarray]:
    """Mirrored tiles [512, 512] of grayscale detail in about [-1, 1], and colour tiles [N, N, 3] in
    [0, 1]: scikit-image's bundled photos (procedural noise when scikit-image is not installed)."""
    try:
        from skimage import data
    except ImportError:
        warnings.warn(
            "scikit-image is not installed: the synthetic photo styles use procedural noise "
            "textures instead of real photo textures (pip install scikit-image)",
            stacklevel=3,
        )
        n = periodic_noise(512, 1.2, seed=11)
        out = {k: n for k in ("brick", "grass", "gravel", "moon")}
        out["fabric"] = np.ascontiguousarray(np.stack([0.5 + 0.3 * n] * 3, -1))
        out["wood"] = out["fabric"]
        return out

    def detail(img: np.ndarray) -> np.ndarray:
        x = half(img)
        return mirror_tile(((x - x.mean()) / (2.5 * x.std() + 1e-6)).clip(-1, 1))

    return {
        "brick": detail(data.brick().T),  # bricks lying horizontally
        "grass": detail(data.grass()),
        "gravel": detail(data.gravel()),
        "moon": detail(data.moon()),
        "fabric": mirror_tile(half(data.immunohistochemistry()) / 255.0),
        "wood": mirror_tile(data.coffee()[300:364, 10:74].astype(np.float32) / 255.0),
    }


def sample_tile(tex: np.ndarray, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Nearest sampling of a square power-of-two tile, repeated, at (u, v) metres x ``scale`` texels per
    metre: [n] or [n, C] for 1-D u and v of length n."""
    n = tex.shape[0]
    i = (v * scale).astype(np.int32) & (n - 1)
    j = (u * scale).astype(np.int32) & (n - 1)
    flat = tex.reshape(n * n, *tex.shape[2:])
    return flat[i * n + j]


# material -> (texture, texels per metre, contrast, feature size in metres)
PHOTO_DETAIL = {
    M.ASPHALT: ("gravel", 200.0, 0.22, 0.03),
    M.PAINT: ("gravel", 200.0, 0.08, 0.03),
    M.PAVING: ("brick", 150.0, 0.35, 0.08),
    M.CURB: ("moon", 100.0, 0.3, 0.2),
    M.BRICK: ("brick", 80.0, 0.45, 0.15),
    M.PLASTER: ("moon", 60.0, 0.35, 0.3),
    M.CONCRETE: ("moon", 75.0, 0.4, 0.2),
    M.FOLIAGE: ("grass", 130.0, 0.7, 0.05),
    M.BARK: ("gravel", 150.0, 0.4, 0.05),
    M.GRASS: ("grass", 190.0, 0.6, 0.04),
    M.DIRT: ("gravel", 125.0, 0.4, 0.05),
    M.METAL: ("moon", 150.0, 0.15, 0.1),
    M.FAR: ("moon", 10.0, 0.25, 3.0),
    M.TL_HOUSING: ("moon", 150.0, 0.1, 0.1),
}


def material_groups(gb: GBuffer) -> dict[int, np.ndarray]:
    """Flat pixel indices of each material present (one sort instead of a mask per material)."""
    flat = gb.mat.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=M.COUNT)
    ends = np.cumsum(counts)
    return {int(m): order[ends[m] - counts[m] : ends[m]] for m in np.flatnonzero(counts)}


def photo_colour(scene: Scene, groups: dict[int, np.ndarray]) -> np.ndarray:
    """Photo-textured colour [H, W, 3] (0..1) of every surface (the sky is left to the style)."""
    gb, cam = scene.gb, scene.camera
    tex = textures()
    tu, tv = gb.tu.reshape(-1), gb.tv.reshape(-1)
    depth = gb.depth.reshape(-1)
    # one light/detail factor per pixel: texture detail (faded with distance), shade, ambient occlusion
    factor = np.where(gb.face.reshape(-1) == F.GROUND, 1.0, 0.82 + 0.18 * np.clip(tv / 1.5, 0, 1))
    factor = factor.astype(np.float32) * gb.shade.reshape(-1)
    for m, idx in groups.items():
        if m in PHOTO_DETAIL:
            name, scale, contrast, feature = PHOTO_DETAIL[m]
            d = sample_tile(tex[name], tu[idx], tv[idx], scale)
            fade = np.clip(feature * cam.f / np.maximum(depth[idx], 0.1), 0.15, 1.0)
            factor[idx] *= 1.0 + contrast * fade * d
        elif m in (M.CAR_PAINT, M.GLASS):  # glossy: a soft sheen
            factor[idx] *= 0.85 + 0.2 * sample_tile(periodic_noise(256, 2.5), tu[idx], tv[idx], 20.0)
    out = gb.albedo.reshape(-1, 3) * (factor[:, None] * np.array([1.02, 1.0, 0.96], np.float32))
    if M.CLOTH in groups:  # patterned fabric
        idx = groups[M.CLOTH]
        fab = sample_tile(tex["fabric"], tu[idx], tv[idx], 75.0)
        out[idx] *= 0.45 + 0.6 * fab.mean(-1, keepdims=True) + 0.25 * (fab - fab.mean(-1, keepdims=True))
    if M.WOOD in groups:
        idx = groups[M.WOOD]
        out[idx] = 0.4 * out[idx] + 0.6 * sample_tile(tex["wood"], tu[idx], tv[idx], 80.0) * factor[idx, None]
    return out.reshape(gb.albedo.shape)
