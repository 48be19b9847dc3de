"""Styles (the domains): one function per style shades the same G-buffer, so every style shares one
label map. ``game`` is the source domain; the others are targets. :func:`render` picks the style and
seeds its random numbers from the scene and the style."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .codes import ROAD, F, M
from .finish import blur, finish, paint_sky, vignette
from .layout import SPLITS
from .scene import Scene
from .shapes import noise_at
from .textures import material_groups, photo_colour

STYLES: tuple[str, ...] = ("game", "photo", "night", "fog", "snow", "rain", "palette")
SOURCE_STYLE = "game"
TARGET_STYLES: tuple[str, ...] = STYLES[1:]


def render_game(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb = scene.gb
    img = gb.albedo * gb.shade[..., None]
    grey = img.mean(-1, keepdims=True)
    img = grey + 1.35 * (img - grey)  # saturated, clean colours
    img = paint_sky(img, scene, rng, (0.25, 0.5, 0.95), (0.6, 0.8, 1.0))
    return finish(img, rng, 0.0)


def render_palette(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    img = render_game(scene, rng).astype(np.float32) / 255.0
    img = img[..., [2, 0, 1]]  # rotate the colour channels: blue sky -> pink, green trees -> blue
    return finish(0.15 + 0.85 * img**0.8, rng, 0.0)


def render_photo(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb, cam = scene.gb, scene.camera
    img = photo_colour(scene, material_groups(gb))
    img = paint_sky(img, scene, rng, (0.32, 0.5, 0.78), (0.78, 0.84, 0.9), rng.uniform(0.2, 0.7))
    haze = (1.0 - np.exp(-np.minimum(gb.depth, 1e4) / 600.0))[..., None]  # aerial perspective
    img = img * (1 - 0.5 * haze) + np.array([0.75, 0.8, 0.85], np.float32) * (0.5 * haze)
    return finish(img * vignette(cam), rng, 0.015)


_EMISSION = {
    M.WINDOW_LIT: (1.0, 0.8, 0.45),
    M.LAMP: (1.6, 1.5, 1.3),
    M.HEADLIGHT: (1.8, 1.8, 1.6),
    M.TAILLIGHT: (1.4, 0.1, 0.08),
    M.TL_ON: None,
}


def render_night(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb, cam = scene.gb, scene.camera
    groups = material_groups(gb)
    base = photo_colour(scene, groups)
    ground = gb.face == F.GROUND
    # light intensity [H, W]: pools of lamps and oncoming vehicles (each a window of ground pixels),
    # the ego headlights' cone on the ground ahead and their light on whatever is near
    light = np.zeros(gb.depth.shape, np.float32)
    for li in scene.lights:
        reach = 2.5 * li.radius
        z_near, z_far = max(li.z - reach, 0.5), li.z + reach
        r0 = max(int(cam.cy + cam.ch * cam.f / z_far), 0)
        r1 = min(int(cam.cy + cam.ch * cam.f / z_near) + 1, cam.height)
        c0 = max(int(cam.col(li.x - reach, z_near if li.x - reach < 0 else z_far)), 0)
        c1 = min(int(cam.col(li.x + reach, z_far if li.x + reach < 0 else z_near)) + 1, cam.width)
        if r1 <= r0 or c1 <= c0:
            continue
        gx, gz = gb.tu[r0:r1, c0:c1], gb.tv[r0:r1, c0:c1]
        d2 = ((gx - li.x) ** 2 + (gz - li.z) ** 2) / li.radius**2
        light[r0:r1, c0:c1] += np.exp(-d2) * ground[r0:r1, c0:c1] * float(li.rgb.mean())
    rows = slice(int(np.floor(cam.cy)) + 1, cam.height)
    gx, gz = gb.tu[rows], gb.tv[rows]
    beam = np.exp(-gz / 25.0) * np.clip(1.0 - np.abs(gx) / (0.35 * gz + 1.5), 0, 1) * 1.4
    light[rows] += beam * ground[rows]
    light += np.exp(-np.minimum(gb.depth, 1e4) / 18.0) * 0.7 * ~ground
    ambient = np.array([0.035, 0.04, 0.06], np.float32)
    warm = np.array([1.0, 0.9, 0.75], np.float32)
    img = base * (ambient + light[..., None] * warm)
    # light sources: lit windows, lamps, head/tail lights, traffic lights; retro-reflective signs
    flat, alb = img.reshape(-1, 3), gb.albedo.reshape(-1, 3)
    lit = []
    for m, rgb in _EMISSION.items():
        if m in groups:
            idx = groups[m]
            flat[idx] = alb[idx] * 1.6 if rgb is None else np.array(rgb, np.float32)
            lit.append(idx)
    if M.SIGN_FACE in groups:
        idx = groups[M.SIGN_FACE]
        flat[idx] = alb[idx] * np.clip(8.0 / gb.depth.reshape(-1)[idx], 0.15, 1.0)[:, None]
    img = paint_sky(img, scene, rng, (0.01, 0.015, 0.04), (0.08, 0.07, 0.09))
    # glow around the light sources: their emission binned at quarter resolution, blurred, added
    if lit:
        idx = np.concatenate(lit)
        h, w = -(-cam.height // 4), -(-cam.width // 4)
        cell = (idx // cam.width // 4) * w + (idx % cam.width) // 4
        glow = np.stack([np.bincount(cell, flat[idx, c], minlength=h * w) for c in range(3)], -1) / 16.0
        glow = blur(glow.reshape(h, w, 3).astype(np.float32), 2)
        up = np.broadcast_to(glow[:, None, :, None, :], (h, 4, w, 4, 3)).reshape(4 * h, 4 * w, 3)
        img += 1.2 * up[: cam.height, : cam.width]
    return finish(img, rng, 0.025)


def render_fog(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb = scene.gb
    img = photo_colour(scene, material_groups(gb))
    fog = np.array([0.78, 0.8, 0.82], np.float32) * rng.uniform(0.85, 1.05)
    t = np.exp(-np.minimum(gb.depth, 1e4) / rng.uniform(25.0, 70.0))[..., None]
    return finish(0.1 + 0.85 * (img * t + fog * (1 - t)), rng, 0.015)


def render_snow(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb, cam = scene.gb, scene.camera
    img = photo_colour(scene, material_groups(gb))
    img *= 0.6
    img += 0.4 * img.mean(-1, keepdims=True) / 0.6  # flat winter light: 60 % of the colour saturation
    img = paint_sky(img, scene, rng, (0.7, 0.72, 0.76), (0.85, 0.86, 0.88))
    n = noise_at(gb.tu, gb.tv, 12.0, rng.random())
    # snow cover [H, W] on upward-facing surfaces; the road keeps darker wheel tracks
    ground = gb.face == F.GROUND
    road = ground & (gb.label == ROAD)
    lane = (gb.tu - scene.road[0]) % 3.3
    tracks = road & ((np.abs(lane - 0.8) < 0.22) | (np.abs(lane - 2.5) < 0.22))
    cover = np.zeros(gb.depth.shape, np.float32)
    cover[ground] = 0.85
    cover[road] = 0.65 + 0.25 * n[road]
    cover[tracks] = 0.2 + 0.15 * n[tracks]
    cover[gb.face == F.TOP] = 0.9
    foliage = gb.mat == M.FOLIAGE
    cover[foliage] = 0.35 + 0.5 * n[foliage]
    cover = np.clip(cover + 0.1 * n * (cover > 0), 0, 1)
    # falling flakes [H, W]: small far ones and bigger near ones
    h, w = cam.height, cam.width
    flakes = np.zeros((h, w), np.float32)
    for size, density, alpha in ((1, 0.003, 0.6), (2, 0.001, 0.8), (3, 0.0004, 0.9)):
        k = int(h * w * density)
        y, x = rng.integers(0, h - size + 1, k), rng.integers(0, w - size + 1, k)
        for dy in range(size):
            for dx in range(size):
                flakes[y + dy, x + dx] = alpha
    # one blend: ((colour (1 - cover) + snow cover) haze + mist (1 - haze)) (1 - flakes) + flakes
    haze = np.exp(-np.minimum(gb.depth, 1e4) / 150.0)
    keep = (1 - cover) * haze * (1 - flakes)
    snow = cover * (0.85 + 0.15 * gb.shade) * haze * (1 - flakes)
    mist = (1 - haze) * (1 - flakes)
    img *= keep[..., None]
    img += np.array([0.92, 0.94, 0.97], np.float32) * snow[..., None]
    img += np.array([0.85, 0.86, 0.88], np.float32) * mist[..., None] + flakes[..., None]
    return finish(img, rng, 0.02)


def render_rain(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb, cam = scene.gb, scene.camera
    img = photo_colour(scene, material_groups(gb)) * 0.72
    grey = img.mean(-1, keepdims=True)
    img = grey + 0.7 * (img - grey)
    img = paint_sky(img, scene, rng, (0.45, 0.47, 0.5), (0.62, 0.63, 0.65), 0.7, gain=0.9)
    # wet ground: darker, mirroring what stands above it (reflection about the horizon row)
    mirror = np.clip((2 * cam.cy - np.arange(cam.height)).astype(np.int64), 0, cam.height - 1)
    wet = (gb.face == F.GROUND) & (gb.mat != M.PAINT)
    gloss = np.where(gb.label == ROAD, 0.35, 0.2).astype(np.float32)[..., None]
    img = np.where(wet[..., None], img * 0.7 + gloss * img[mirror], img)
    t = np.exp(-np.minimum(gb.depth, 1e4) / 120.0)[..., None]
    img = img * t + np.array([0.6, 0.62, 0.64], np.float32) * (1 - t)
    # rain streaks: short slanted bright lines
    h, w = cam.height, cam.width
    n = int(h * w * 0.002)
    y0, x0 = rng.integers(0, h, n), rng.integers(0, w, n)
    slope = rng.uniform(-0.25, 0.25)
    streak = np.zeros((h, w), np.float32)
    for k in range(max(4, h // 25)):
        streak[np.minimum(y0 + k, h - 1), np.clip((x0 + k * slope).astype(np.int64), 0, w - 1)] = 0.25
    return finish(img + streak[..., None], rng, 0.02)


RENDERERS: dict[str, Callable[[Scene, np.random.Generator], np.ndarray]] = {
    "game": render_game,
    "photo": render_photo,
    "night": render_night,
    "fog": render_fog,
    "snow": render_snow,
    "rain": render_rain,
    "palette": render_palette,
}


def render(scene: Scene, style: str) -> np.ndarray:
    """Render a scene in a style: RGB uint8 [H, W, 3]. Deterministic for (scene, style)."""
    if style not in RENDERERS:
        raise ValueError(f"synthetic style '{style}' unknown; expected one of {list(STYLES)}")
    rng = np.random.default_rng([scene.seed, SPLITS[scene.split], scene.index, 1000 + STYLES.index(style)])
    return RENDERERS[style](scene, rng)
