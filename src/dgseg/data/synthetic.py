"""A built-in synthetic domain-shift benchmark: procedural street scenes, no files needed.

Each scene is a street in perspective (road with lane markings, sidewalks, buildings with windows, walls,
fences, terrain, trees, street lamps, traffic lights and signs, cars, trucks, buses, trams, pedestrians,
cyclists and motorcyclists, sky) labelled in the 19 Cityscapes train IDs. Occlusion is exact (a depth
buffer). A scene is a pure function of ``(seed, split, index)``; the same scene (same layout, same
label map) can be rendered in several styles, which are the domains:

- ``game`` (the source): flat, saturated game-like shading, no texture, no noise.
- ``photo``: real photo textures from scikit-image's bundled images (brick, grass, gravel, moon,
  immunohistochemistry, coffee), soft light, sensor noise.
- ``night``: photo textures in the dark, lit by street lamps, head/tail lights, lit windows, ego headlights.
- ``fog``: photo textures with depth-dependent fog.
- ``snow``: snow cover on upward-facing surfaces, falling flakes, flat light.
- ``rain``: wet darkened ground with reflections, rain streaks, grey sky.
- ``palette``: the game style with a shifted colour palette (colour channels rotated).

Colour does not carry across these domains; shape and context do. Generation and rendering are
vectorised numpy: 25-40 images of 512x256 per second on one core, depending on the style (see
:func:`benchmark` and docs/data.md).

Usage: ``build_dataset("synthetic-night", root=None, split="val", length=100, size=(256, 512), seed=0)``
or :class:`SyntheticDataset` directly; :func:`make_scene` + :func:`render` for the raw arrays.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .labels import CLASSES

STYLES: tuple[str, ...] = ("game", "photo", "night", "fog", "snow", "rain", "palette")
SOURCE_STYLE = "game"
TARGET_STYLES: tuple[str, ...] = STYLES[1:]
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZE = (256, 512)  # (H, W)
DEFAULT_LENGTH = {"train": 1000, "val": 100, "test": 100}

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR,
 TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)  # fmt: skip
assert CLASSES[SKY] == "sky" and CLASSES[BICYCLE] == "bicycle"


class M:
    """Material codes of the G-buffer (what a surface is made of; the styles texture by material)."""

    SKY, ASPHALT, PAINT, PAVING, CURB, BRICK, PLASTER, WINDOW, WINDOW_LIT, CONCRETE = range(10)
    METAL, LAMP, TL_HOUSING, TL_ON, SIGN_FACE, FOLIAGE, BARK, GRASS, DIRT, SKIN = range(10, 20)
    CLOTH, CAR_PAINT, GLASS, TYRE, HEADLIGHT, TAILLIGHT, HAIR, WOOD, FAR = range(20, 29)
    COUNT = 29


class F:
    """Face codes: which way a surface faces (for shading, snow cover, wet ground)."""

    SKY, GROUND, FRONT, SIDE_L, SIDE_R, TOP, SPRITE, FAR = range(8)


FACE_SHADE = np.array([1.0, 1.0, 0.84, 0.96, 0.72, 1.1, 0.92, 0.9], np.float32)


def _c(*rgb: float) -> np.ndarray:
    return np.array(rgb, np.float32) / 255.0


ASPHALT = _c(88, 88, 92)
PAINT = _c(235, 235, 225)
PAVING = _c(178, 170, 160)
CURB = _c(150, 150, 150)
GRASS = _c(110, 150, 60)
DIRT = _c(150, 125, 90)
FOLIAGE = _c(60, 120, 40)
BARK = _c(90, 70, 50)
GLASS = _c(60, 80, 100)
TYRE = _c(30, 30, 32)
METAL = _c(120, 125, 130)
BUILDING_COLOURS = [_c(170, 90, 70), _c(205, 185, 150), _c(160, 160, 165), _c(220, 215, 205),
                    _c(200, 160, 90), _c(150, 165, 180), _c(120, 100, 90)]  # fmt: skip
CAR_COLOURS = [_c(230, 230, 230), _c(30, 30, 35), _c(165, 168, 172), _c(170, 30, 30), _c(40, 60, 140),
               _c(70, 75, 80), _c(40, 90, 60), _c(200, 160, 40)]  # fmt: skip
BUS_COLOURS = [_c(230, 190, 40), _c(200, 40, 40), _c(240, 240, 240), _c(40, 110, 180)]
CLOTH_COLOURS = [_c(40, 40, 60), _c(180, 30, 40), _c(30, 80, 150), _c(220, 220, 210), _c(90, 90, 90),
                 _c(120, 80, 40), _c(40, 120, 70), _c(200, 120, 30), _c(20, 20, 20)]  # fmt: skip
SKIN_COLOURS = [_c(240, 200, 170), _c(220, 170, 130), _c(170, 120, 90), _c(110, 75, 55)]
SIGN_COLOURS = {
    "red": _c(200, 30, 30),
    "white": _c(240, 240, 240),
    "blue": _c(30, 70, 170),
    "yellow": _c(240, 200, 20),
}


# ----------------------------------------------------------------------------------------------------
# camera and G-buffer


@dataclass
class Camera:
    """Pinhole camera at X = 0, height ``ch`` metres, looking along +Z; image rows grow downwards.

    ``f`` focal length in pixels, ``cx`` the principal column, ``cy`` the horizon row.
    """

    height: int
    width: int
    f: float
    cx: float
    cy: float
    ch: float

    def col(self, x: float, z: float) -> float:
        return self.cx + x * self.f / z

    def row(self, y: float, z: float) -> float:
        return self.cy + (self.ch - y) * self.f / z


class GBuffer:
    """Per-pixel scene attributes [H, W]: depth (m, inf = sky), label (train IDs), material, colour id
    (into ``palette``, RGB 0..1), shade (light factor), face, texture coordinates tu/tv (metres on the
    surface)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.depth = np.full((height, width), np.inf, np.float32)
        self.label = np.full((height, width), SKY, np.uint8)
        self.mat = np.full((height, width), M.SKY, np.uint8)
        self.cid = np.zeros((height, width), np.uint16)
        self.shade = np.ones((height, width), np.float32)
        self.face = np.zeros((height, width), np.uint8)
        self.tu = np.zeros((height, width), np.float32)
        self.tv = np.zeros((height, width), np.float32)
        self.palette: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
        self._ids: dict[tuple[float, float, float], int] = {}
        self._albedo: np.ndarray | None = None

    def colour(self, rgb: Any) -> int:
        """The id of an RGB colour (0..1) in this buffer's palette."""
        key = tuple(np.asarray(rgb, np.float32).tolist())
        cid = self._ids.get(key)
        if cid is None:
            cid = self._ids[key] = len(self.palette)
            self.palette.append(key)
        return cid

    @property
    def albedo(self) -> np.ndarray:
        """RGB albedo [H, W, 3] (0..1) of every pixel."""
        if self._albedo is None or self._albedo.shape[:2] != self.cid.shape:
            self._albedo = np.asarray(self.palette, np.float32)[self.cid]
        return self._albedo

    def write(
        self,
        r0: int,
        c0: int,
        keep: np.ndarray,
        depth: Any,
        label: Any,
        mat: Any,
        cid: Any,
        shade: Any,
        face: int,
        tu: Any,
        tv: Any,
    ) -> None:
        """Depth-tested write of a window whose top-left pixel is (r0, c0); ``keep`` [h, w] bool, the
        other arguments scalars or arrays broadcastable to [h, w]."""
        h, w = keep.shape
        upd = keep & (depth < self.depth[r0 : r0 + h, c0 : c0 + w])
        rows, cols = np.nonzero(upd)
        if rows.size == 0:
            return
        self._albedo = None
        flat = (rows + r0) * self.width + (cols + c0)
        local = rows * w + cols
        for buf, val in (
            (self.depth, depth),
            (self.label, label),
            (self.mat, mat),
            (self.cid, cid),
            (self.shade, shade),
            (self.tu, tu),
            (self.tv, tv),
            (self.face, face),
        ):
            buf.reshape(-1)[flat] = _pick(val, rows, cols, local)


def _pick(val: Any, rows: np.ndarray, cols: np.ndarray, flat: np.ndarray) -> Any:
    """val at (rows, cols) (``flat`` = rows * w + cols) for a scalar or an array [h, w], [1, w], [h, 1]."""
    if not isinstance(val, np.ndarray) or val.ndim != 2:
        return val
    h, w = val.shape
    if h > 1 and w > 1:
        return val.reshape(-1)[flat] if val.flags.c_contiguous else val[rows, cols]
    return val[:, 0][rows] if h > 1 else (val[0][cols] if w > 1 else val[0, 0])


class Paint:
    """Material, colour and shade layers over a face (for box decorations): a base, then masks on top."""

    def __init__(self, gb: GBuffer, a: np.ndarray, b: np.ndarray, mat: int, rgb: Any) -> None:
        self.gb, self.shape = gb, np.broadcast_shapes(a.shape, b.shape)
        self.mat = np.full(self.shape, mat, np.uint8)
        self.cid = np.full(self.shape, gb.colour(rgb), np.uint16)
        self.shade: np.ndarray | float = 1.0

    def put(self, mask: np.ndarray, mat: int | None = None, rgb: Any = None) -> Paint:
        """Paint ``mask`` (any shape broadcastable to the face) with a material and/or colour."""
        if mat is not None:
            np.copyto(self.mat, mat, where=mask)
        if rgb is not None:
            np.copyto(self.cid, self.gb.colour(rgb), where=mask)
        return self

    def darken(self, mask: np.ndarray, factor: float) -> Paint:
        if np.ndim(self.shade) == 0:
            self.shade = np.ones(self.shape, np.float32)
        np.multiply(self.shade, np.float32(factor), out=self.shade, where=mask)
        return self

    def result(self, keep: Any = True) -> tuple[Any, np.ndarray, np.ndarray, Any]:
        return keep, self.mat, self.cid, self.shade


def _window(cam: Camera, u0: float, u1: float, v0: float, v1: float):
    """Pixel window covering [u0, u1) x [v0, v1): (r0, c0, U [1, w] column centres, V [h, 1] row centres)
    or None when empty."""
    c0 = max(int(np.floor(u0 - 0.5)) + 1, 0) if np.isfinite(u0) else 0
    c1 = min(int(np.floor(u1 - 0.5)) + 1, cam.width) if np.isfinite(u1) else cam.width
    r0 = max(int(np.floor(v0 - 0.5)) + 1, 0) if np.isfinite(v0) else 0
    r1 = min(int(np.floor(v1 - 0.5)) + 1, cam.height) if np.isfinite(v1) else cam.height
    if c1 <= c0 or r1 <= r0:
        return None
    U = (np.arange(c0, c1, dtype=np.float32) + 0.5)[None, :]
    V = (np.arange(r0, r1, dtype=np.float32) + 0.5)[:, None]
    return r0, c0, U, V


# ----------------------------------------------------------------------------------------------------
# shapes (vectorised over broadcast coordinate arrays a [1, w] / b [h, 1], in metres)


def ellipse(a, b, ca, cb, ra, rb):
    return ((a - ca) / ra) ** 2 + ((b - cb) / rb) ** 2 <= 1.0


def rect(a, b, a0, a1, b0, b1):
    return (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)


def capsule(a, b, p, q, r):
    """Points within r of the segment p-q."""
    pa, pb = a - p[0], b - p[1]
    da, db = q[0] - p[0], q[1] - p[1]
    t = np.clip((pa * da + pb * db) / max(da * da + db * db, 1e-9), 0.0, 1.0)
    return (pa - t * da) ** 2 + (pb - t * db) ** 2 <= r * r


def ring(a, b, ca, cb, r_out, r_in):
    d = (a - ca) ** 2 + (b - cb) ** 2
    return (d <= r_out * r_out) & (d >= r_in * r_in)


def superellipse(a, b, ca, cb, ra, rb, p=4.0):
    return np.abs((a - ca) / ra) ** p + np.abs((b - cb) / rb) ** p <= 1.0


@functools.lru_cache(maxsize=4)
def periodic_noise(n: int = 256, beta: float = 2.0, seed: int = 7) -> np.ndarray:
    """Tileable fractal noise [n, n] in about [-1, 1] (FFT-filtered white noise, fixed seed)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.rfftfreq(n)[None, :] ** 2
    k[0, 0] = 1.0
    spec = (rng.standard_normal((n, n // 2 + 1)) + 1j * rng.standard_normal((n, n // 2 + 1))) / k ** (
        beta / 2
    )
    spec[0, 0] = 0.0
    x = np.fft.irfft2(spec, s=(n, n))
    return (x / (3.0 * x.std())).clip(-1, 1).astype(np.float32)


def _noise_at(a, b, scale: float, offset: float = 0.0, n: int = 256, beta: float = 2.0) -> np.ndarray:
    tex = periodic_noise(n, beta)
    i = (np.floor(b * scale + offset * 37.0)).astype(np.int64) % n
    j = (np.floor(a * scale + offset * 91.0)).astype(np.int64) % n
    return tex[i, j]


def _hash(i: np.ndarray, j: np.ndarray, k: int) -> np.ndarray:
    """Deterministic pseudo-random floats in [0, 1) for integer arrays i, j and a key k."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (int(k) * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / 65536.0


# ----------------------------------------------------------------------------------------------------
# primitives


Decorate = Callable[[int, np.ndarray, np.ndarray], tuple[Any, Any, Any, Any]]


@dataclass
class Box:
    """Axis-aligned box [x0, x1] x [y0, y1] x [z0, z1] (metres). ``decorate(face, a, b)`` returns
    (keep mask, material, colour id, shade) over face coordinates a (along the face) and b (height, or
    depth along Z for the top face), e.g. from :class:`Paint`; None paints the whole box plainly."""

    x0: float
    x1: float
    y0: float
    y1: float
    z0: float
    z1: float
    label: int
    mat: int
    albedo: np.ndarray
    decorate: Decorate | None = None


def draw_box(gb: GBuffer, cam: Camera, box: Box) -> None:
    x0, x1, y0, y1, z0, z1 = box.x0, box.x1, box.y0, box.y1, box.z0, box.z1
    if z1 <= 0.3:
        return
    front_visible = z0 >= 0.3
    z0 = max(z0, 0.3)
    faces = []
    # front face (z = z0), facing the camera
    win = (
        _window(cam, cam.col(x0, z0), cam.col(x1, z0), cam.row(y1, z0), cam.row(y0, z0))
        if front_visible
        else None
    )
    if win is not None:
        r0, c0, U, V = win
        a = (U - cam.cx) * z0 / cam.f - x0
        b = cam.ch - (V - cam.cy) * z0 / cam.f
        faces.append((F.FRONT, r0, c0, a, b, np.float32(z0), a + x0, b))
    # side face at X = x0 (seen when the box is right of the camera) or X = x1 (left of it)
    for xs, face in ((x0, F.SIDE_L), (x1, F.SIDE_R)):
        if (face == F.SIDE_L and xs <= 0.05) or (face == F.SIDE_R and xs >= -0.05):
            continue
        ua, ub = sorted((cam.col(xs, z0), cam.col(xs, z1)))
        va = min(cam.row(y1, z0), cam.row(y1, z1))
        vb = max(cam.row(y0, z0), cam.row(y0, z1))
        win = _window(cam, ua, ub, va, vb)
        if win is None:
            continue
        r0, c0, U, V = win
        du = U - cam.cx
        du = np.where(np.abs(du) < 1e-3, 1e-3, du)
        z = xs * cam.f / du  # [1, w]
        b = cam.ch - (V - cam.cy) * z / cam.f  # [h, w]
        inside = (z >= z0) & (z <= z1) & (b >= y0) & (b <= y1)
        a = z - z0
        faces.append((face, r0, c0, a, b, np.where(inside, z, np.inf).astype(np.float32), z, b))
    # top face (Y = y1), seen from above
    if y1 < cam.ch - 0.05:
        dh = cam.ch - y1
        va, vb = cam.cy + dh * cam.f / z1, cam.cy + dh * cam.f / z0
        ua = min(cam.col(x0, z0), cam.col(x0, z1))
        ub = max(cam.col(x1, z0), cam.col(x1, z1))
        win = _window(cam, ua, ub, va, vb)
        if win is not None:
            r0, c0, U, V = win
            z = dh * cam.f / np.maximum(V - cam.cy, 1e-3)  # [h, 1]
            X = (U - cam.cx) * z / cam.f  # [h, w]
            inside = (z >= z0) & (z <= z1) & (X >= x0) & (X <= x1)
            a, b = X - x0, z - z0
            faces.append((F.TOP, r0, c0, a, b, np.where(inside, z, np.inf).astype(np.float32), X, z + 0 * X))
    for face, r0, c0, a, b, depth, tu, tv in faces:
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
        if box.decorate is None:
            keep, mat, cid, shade = True, box.mat, gb.colour(box.albedo), 1.0
        else:
            keep, mat, cid, shade = box.decorate(face, a, b)
        keep = np.logical_and(keep, np.isfinite(depth))
        if keep.shape != shape:
            keep = np.broadcast_to(keep, shape)
        gb.write(r0, c0, keep, depth, box.label, mat, cid, FACE_SHADE[face] * shade, face, tu, tv)


Part = tuple[np.ndarray, int, int, np.ndarray, Any]  # (mask, label, material, RGB, shade)


def draw_sprite(
    gb: GBuffer,
    cam: Camera,
    x: float,
    z: float,
    extent: tuple[float, float, float, float],
    parts: Callable[[np.ndarray, np.ndarray], list[Part]],
) -> None:
    """A flat object facing the camera at depth z, local coordinates a = X - x (metres, right) and
    b = height (metres, up) within ``extent`` = (a0, a1, b0, b1); later parts cover earlier ones."""
    if z <= 0.5:
        return
    a0, a1, b0, b1 = extent
    win = _window(cam, cam.col(x + a0, z), cam.col(x + a1, z), cam.row(b1, z), cam.row(b0, z))
    if win is None:
        return
    r0, c0, U, V = win
    a = (U - cam.cx) * z / cam.f - x
    b = cam.ch - (V - cam.cy) * z / cam.f
    shape = (V.shape[0], U.shape[1])
    part = np.zeros(shape, np.uint8)  # 0 = empty, k = the k-th part (the last one drawn wins)
    labels, mats, cids, shades = [0], [0], [0], [1.0]
    varying = []
    for k, (mask, label, mat, rgb, shade) in enumerate(parts(a, b), start=1):
        np.copyto(part, k, where=mask)
        labels.append(label), mats.append(mat), cids.append(gb.colour(rgb))
        shades.append(shade if np.ndim(shade) == 0 else 1.0)
        if np.ndim(shade) != 0:
            varying.append((k, shade))
    shade_map = np.asarray(shades, np.float32)[part] * FACE_SHADE[F.SPRITE]
    for k, shade in varying:
        sel = part == k
        shade_map[sel] *= np.broadcast_to(shade, shape)[sel]
    labels_map = np.asarray(labels, np.uint8)[part]
    mats_map = np.asarray(mats, np.uint8)[part]
    cids_map = np.asarray(cids, np.uint16)[part]
    gb.write(r0, c0, part > 0, np.float32(z), labels_map, mats_map, cids_map, shade_map, F.SPRITE, a + x, b)


# ----------------------------------------------------------------------------------------------------
# scene layout


@dataclass
class Light:
    """A light pool on the ground (night style): centre (x, z) metres, radius metres, RGB intensity."""

    x: float
    z: float
    radius: float
    rgb: np.ndarray


@dataclass
class Scene:
    """One generated scene: the G-buffer (``gb.label`` is the label map), camera and night lights."""

    seed: int
    split: str
    index: int
    camera: Camera
    gb: GBuffer
    lights: list[Light] = field(default_factory=list)
    road: tuple[float, float] = (-5.0, 5.0)

    @property
    def label(self) -> np.ndarray:
        return self.gb.label


class _Builder:
    """Generates the layout of one street with ``rng`` and draws it into a G-buffer."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        r = rng
        self.cam = Camera(
            height,
            width,
            f=0.85 * width * r.uniform(0.88, 1.12),
            cx=width * (0.5 + r.uniform(-0.06, 0.06)),
            cy=height * r.uniform(0.36, 0.47),
            ch=r.uniform(1.3, 1.8),
        )
        self.gb = GBuffer(height, width)
        self.lights: list[Light] = []
        self.tram_lane: int | None = None
        self.key = int(r.integers(1 << 30))
        lane = 3.3
        self.n_lanes = int(r.integers(2, 5))
        ego = self.n_lanes - 1 if r.random() < 0.7 else int(r.integers(0, self.n_lanes))
        self.lane_w = lane
        self.xl = -(ego + 0.5) * lane + r.uniform(-0.5, 0.5)
        self.xr = self.xl + self.n_lanes * lane
        self.sw_l, self.sw_r = r.uniform(2.0, 5.0), r.uniform(2.0, 5.0)
        self.z_end = r.uniform(70.0, 170.0)
        self.cross = (r.uniform(18.0, 60.0), r.uniform(9.0, 16.0)) if r.random() < 0.55 else None
        self.oncoming = self.n_lanes // 2 if self.n_lanes > 1 else 0  # lanes [0, oncoming) come towards us

    # -- helpers --------------------------------------------------------------------------------------
    def in_cross(self, z0: float, z1: float) -> bool:
        if self.cross is None:
            return False
        c0, w = self.cross
        return z1 > c0 - 1.0 and z0 < c0 + w + 1.0

    def lane_x(self, i: int) -> float:
        return self.xl + (i + 0.5) * self.lane_w

    def minw(self, width: float, z: float) -> float:
        """A width of at least ~0.8 pixel at depth z, so thin things do not break up."""
        return max(width, 0.8 * z / self.cam.f)

    # -- ground ---------------------------------------------------------------------------------------
    def ground(self) -> None:
        """The ground plane below the horizon: road, sidewalks, curbs, markings, terrain. Drawn first."""
        cam, r = self.cam, self.rng
        r0 = int(np.floor(cam.cy)) + 1
        if r0 >= cam.height:
            return
        V = np.arange(r0, cam.height, dtype=np.float32)[:, None] + 0.5
        U = np.arange(cam.width, dtype=np.float32)[None, :] + 0.5
        Z = np.minimum(cam.ch * cam.f / (V - cam.cy), 2000.0).astype(np.float32)  # [h, 1]: depth by row
        X = (U - cam.cx) * Z / cam.f  # [h, w]
        shape = X.shape
        label = np.full(shape, TERRAIN, np.uint8)
        mat = np.full(shape, M.GRASS, np.uint8)
        # beyond the sidewalks: per side, terrain (grass / dirt) or paved segments along z
        for side, edge in ((-1, self.xl - self.sw_l), (1, self.xr + self.sw_r)):
            beyond = (X < edge) if side < 0 else (X > edge)
            breaks = np.cumsum(r.uniform(8.0, 40.0, size=12))
            kinds = r.choice(3, size=13, p=[0.45, 0.35, 0.2])  # 0 grass, 1 paved, 2 dirt
            kind = kinds[np.searchsorted(breaks, Z[:, 0])][:, None]
            paved = beyond & (kind == 1)
            label[paved], mat[paved] = SIDEWALK, M.PAVING
            mat[beyond & (kind == 2)] = M.DIRT
        sidewalk = (X >= self.xl - self.sw_l) & (X <= self.xr + self.sw_r)
        label[sidewalk], mat[sidewalk] = SIDEWALK, M.PAVING
        mat[(X >= self.xl - 0.25) & (X <= self.xr + 0.25)] = M.CURB
        road = (X >= self.xl) & (X <= self.xr)
        if self.cross is not None:
            c0, w = self.cross
            road |= (Z >= c0) & (Z <= c0 + w)
        label[road], mat[road] = ROAD, M.ASPHALT
        # markings: lane separators (dashed; solid between directions), edge lines, crosswalk
        paint = np.zeros(shape, bool)
        for i in range(1, self.n_lanes):
            line = np.abs(X - (self.xl + i * self.lane_w)) < 0.08
            paint |= line if i == self.oncoming else line & (((Z + 3.0 * i) % 9.0) < 3.0)
        paint |= (np.abs(X - (self.xl + 0.3)) < 0.08) | (np.abs(X - (self.xr - 0.3)) < 0.08)
        if self.cross is not None:
            c0, w = self.cross
            paint &= (Z < c0 - 4.5) | (Z > c0 + w + 4.5)
            zebra = ((Z > c0 - 4.0) & (Z < c0 - 1.0)) | ((Z > c0 + w + 1.0) & (Z < c0 + w + 4.0))
            paint |= zebra & ((X % 1.0) < 0.5)
            stop = np.abs(Z - (c0 - 5.0)) < 0.2
            paint |= stop & (X > self.lane_x(self.oncoming) - 1.6) & (X < self.xr)
        paint &= road
        mat[paint] = M.PAINT
        if self.tram_lane is not None:
            rails = np.abs(np.abs(X - self.lane_x(self.tram_lane)) - 0.72) < 0.045
            mat[rails & road] = M.METAL
        lut = np.zeros(M.COUNT, np.uint16)
        for m, rgb in (
            (M.GRASS, GRASS),
            (M.PAVING, PAVING),
            (M.DIRT, DIRT),
            (M.CURB, CURB),
            (M.PAINT, PAINT),
            (M.METAL, METAL),
            (M.ASPHALT, ASPHALT * r.uniform(0.85, 1.15)),
        ):
            lut[m] = self.gb.colour(rgb)
        gb, rows = self.gb, slice(r0, cam.height)
        gb.depth[rows], gb.label[rows], gb.mat[rows], gb.cid[rows] = Z, label, mat, lut[mat]
        gb.shade[rows], gb.face[rows], gb.tu[rows], gb.tv[rows] = 1.0, F.GROUND, X, Z

    # -- far background ---------------------------------------------------------------------------------
    def far(self) -> None:
        cam, r = self.cam, self.rng
        n = cam.width
        U = np.arange(n, dtype=np.float32)
        z = 400.0
        if r.random() < 0.5:  # skyline of distant buildings
            edges = np.cumsum(r.uniform(0.03, 0.12, size=40) * n)
            heights = r.uniform(15.0, 60.0, size=41)
            hcol = heights[np.searchsorted(edges, U)]
            label, mat, alb = BUILDING, M.FAR, _c(150, 155, 165)
        else:  # tree line / hills
            hcol = 8.0 + 14.0 * (0.5 + 0.5 * _noise_at(U[None, :], np.zeros((1, 1)), 0.15, r.random())[0])
            hcol = hcol + 6.0 * _noise_at(U[None, :], np.zeros((1, 1)), 1.3, r.random())[0]
            label, mat, alb = VEGETATION, M.FOLIAGE, FOLIAGE * 0.8
        top = cam.cy - (hcol - cam.ch) * cam.f / z
        rows = np.arange(cam.height, dtype=np.float32)[:, None] + 0.5
        keep = (rows >= top[None, :]) & (rows <= cam.cy + 2.0)
        self.gb.write(
            0,
            0,
            keep,
            np.float32(z),
            label,
            mat,
            self.gb.colour(alb),
            np.float32(0.95),
            F.FAR,
            np.broadcast_to(U[None, :] * 0.5, keep.shape),
            np.broadcast_to(rows * 0.5, keep.shape),
        )

    # -- buildings and street furniture --------------------------------------------------------------
    def facade(
        self,
        colour: np.ndarray,
        brick: bool,
        floor_h: float,
        win_w: float,
        spacing: float,
        shop: bool,
        bid: int,
    ) -> Decorate:
        wall_mat = M.BRICK if brick else M.PLASTER
        key = self.key + bid * 7919

        def decorate(face: int, a: np.ndarray, b: np.ndarray):
            p = Paint(self.gb, a, b, wall_mat, colour)
            if face == F.TOP:
                return p.result()
            fa = np.floor(a / spacing)
            floor = np.floor(b / floor_h)
            ua, vb = a - fa * spacing, b - floor * floor_h
            win = (ua > (spacing - win_w) / 2) & (ua < (spacing + win_w) / 2) & (vb > 0.9) & (vb < 2.4)
            win &= floor >= 1
            if shop:
                win |= (b > 0.3) & (b < 2.7) & ((a % 5.0) > 0.4)
            else:
                win |= (floor == 0) & (ua > (spacing - win_w) / 2) & (ua < (spacing + win_w) / 2) & (vb > 0.9)
            lit = _hash(fa, floor, key) < 0.35
            p.put(win, M.WINDOW, GLASS * 0.8).put(win & lit, M.WINDOW_LIT)
            return p.darken((vb < 0.18) & (floor >= 1) & ~win, 0.82).result()

        return decorate

    def buildings(self, side: int) -> None:
        r = self.rng
        line = (self.xr + self.sw_r) if side > 0 else (self.xl - self.sw_l)
        urban = r.random() < 0.8
        z = r.uniform(-8.0, 2.0)
        bid = 0
        while z < self.z_end + 5:
            length = r.uniform(8.0, 28.0)
            if self.in_cross(z, z + length):
                z = self.cross[0] + self.cross[1] + r.uniform(0.5, 3.0)
                continue
            if urban and r.random() < 0.8:
                setback = r.uniform(0.0, 1.5) if r.random() < 0.7 else r.uniform(2.0, 6.0)
                h = r.uniform(7.0, 28.0)
                depth = r.uniform(10.0, 20.0)
                bid += 1
                colour = BUILDING_COLOURS[int(r.integers(len(BUILDING_COLOURS)))] * r.uniform(0.85, 1.1)
                deco = self.facade(
                    colour,
                    r.random() < 0.35,
                    r.uniform(2.9, 3.6),
                    r.uniform(0.9, 1.6),
                    r.uniform(2.2, 3.6),
                    r.random() < 0.4,
                    bid + side * 100,
                )
                x0 = line + setback if side > 0 else line - setback - depth
                draw_box(
                    self.gb,
                    self.cam,
                    Box(x0, x0 + depth, 0.0, h, z, z + length, BUILDING, M.PLASTER, colour, deco),
                )
                if setback > 1.8:
                    self.hedge_or_wall(side, line + side * 0.3, z + 0.5, z + length - 0.5)
            else:
                self.gap(side, line, z, z + length)
            z += length + (r.uniform(0.0, 0.4) if r.random() < 0.75 else r.uniform(3.0, 12.0))

    def gap(self, side: int, line: float, z0: float, z1: float) -> None:
        r = self.rng
        kind = r.choice(4, p=[0.3, 0.3, 0.2, 0.2])
        xb = line + side * r.uniform(0.2, 1.5)
        if kind == 0:
            self.wall(xb, z0, z1, r.uniform(1.0, 3.0))
        elif kind == 1:
            self.fence(xb, z0, z1, r.uniform(1.0, 2.2))
        elif kind == 2:
            self.hedge_or_wall(side, xb, z0, z1)
        for zt in np.arange(z0 + r.uniform(1, 4), z1, r.uniform(5.0, 9.0)):
            self.tree(xb + side * r.uniform(1.0, 6.0), zt)
        if r.random() < 0.6:  # a building set far back
            h, d = r.uniform(8.0, 25.0), r.uniform(8.0, 16.0)
            x0 = xb + side * r.uniform(10.0, 25.0)
            x0 = x0 if side > 0 else x0 - d
            colour = BUILDING_COLOURS[int(r.integers(len(BUILDING_COLOURS)))]
            deco = self.facade(colour, False, 3.2, 1.2, 3.0, False, int(r.integers(1000)))
            draw_box(
                self.gb,
                self.cam,
                Box(x0, x0 + d, 0, h, z0, z1 + r.uniform(0, 10), BUILDING, M.PLASTER, colour, deco),
            )

    def wall(self, x: float, z0: float, z1: float, h: float) -> None:
        colour = _c(175, 170, 160) * self.rng.uniform(0.8, 1.1)

        def deco(face, a, b):
            return Paint(self.gb, a, b, M.CONCRETE, colour).darken(b > h - 0.12, 0.8).result()

        draw_box(self.gb, self.cam, Box(x - 0.15, x + 0.15, 0.0, h, z0, z1, WALL, M.CONCRETE, colour, deco))

    def fence(self, x: float, z0: float, z1: float, h: float) -> None:
        r = self.rng
        wooden = r.random() < 0.4
        colour = _c(140, 100, 60) if wooden else _c(100, 110, 105) * r.uniform(0.7, 1.2)
        mat = M.WOOD if wooden else M.METAL
        post, bar = r.uniform(2.0, 3.0), r.uniform(0.14, 0.3)
        zmid = max(0.5 * (z0 + z1), 1.0)
        wbar = self.minw(0.045, zmid)

        def deco(face, a, b):
            keep = ((a % post) < self.minw(0.08, zmid)) | (b > h - 0.08) | ((b > 0.12) & (b < 0.2))
            if wooden:
                keep |= (a % bar) < bar * 0.7
            else:
                keep |= (a % bar) < wbar
            return keep, mat, self.gb.colour(colour), 1.0

        draw_box(self.gb, self.cam, Box(x - 0.03, x + 0.03, 0.0, h, z0, z1, FENCE, mat, colour, deco))

    def railing(self, x: float, z0: float, z1: float) -> None:
        """A low metal fence along the curb."""
        colour = _c(150, 150, 140)
        zmid = max(z0 + 5.0, 1.0)

        def deco(face, a, b):
            keep = ((a % 2.0) < self.minw(0.06, zmid)) | (b > 0.95) | ((b > 0.45) & (b < 0.52))
            return keep, M.METAL, self.gb.colour(colour), 1.0

        draw_box(self.gb, self.cam, Box(x - 0.03, x + 0.03, 0.0, 1.0, z0, z1, FENCE, M.METAL, colour, deco))

    def hedge_or_wall(self, side: int, x: float, z0: float, z1: float) -> None:
        r = self.rng
        if r.random() < 0.5:
            self.wall(x, z0, z1, r.uniform(0.8, 1.8))
            return
        h = r.uniform(0.8, 1.8)
        off = r.random()

        def deco(face, a, b):
            n = _noise_at(a, b * 0 + off * 10, 1.7, off)
            return b < h - 0.25 + 0.25 * n, M.FOLIAGE, self.gb.colour(FOLIAGE * 0.9), 1.0 + 0.1 * n

        draw_box(
            self.gb, self.cam, Box(x - 0.5, x + 0.5, 0.0, h, z0, z1, VEGETATION, M.FOLIAGE, FOLIAGE, deco)
        )

    def tree(self, x: float, z: float) -> None:
        r = self.rng
        trunk_h, crown_r = r.uniform(1.8, 3.5), r.uniform(1.3, 3.0)
        cb = trunk_h + crown_r * 0.8
        off = r.random()
        shade_col = FOLIAGE * r.uniform(0.8, 1.2)
        tw = self.minw(0.13, z)

        def parts(a, b):
            n = _noise_at(a, b, 3.0, off)
            crown = ellipse(a, b, 0, cb, crown_r * (1 + 0.18 * n), crown_r * 0.9 * (1 + 0.18 * n))
            crown |= ellipse(a, b, crown_r * 0.45, cb - crown_r * 0.3, crown_r * 0.7, crown_r * 0.6)
            crown |= ellipse(a, b, -crown_r * 0.45, cb - crown_r * 0.2, crown_r * 0.7, crown_r * 0.6)
            shade = 0.75 + 0.3 * np.clip((b - cb) / crown_r + 0.5, 0, 1) + 0.1 * n
            return [
                (capsule(a, b, (0, 0), (0.05, cb), tw), VEGETATION, M.BARK, BARK, 1.0),
                (crown, VEGETATION, M.FOLIAGE, shade_col, shade),
            ]

        draw_sprite(self.gb, self.cam, x, z, (-1.6 * crown_r, 1.6 * crown_r, 0, cb + crown_r * 1.3), parts)

    def lamp(self, x: float, z: float, side: int) -> None:
        r = self.rng
        h = r.uniform(6.0, 9.0)
        arm = -side * r.uniform(1.0, 2.5)
        pw = self.minw(0.09, z)

        def parts(a, b):
            pole = capsule(a, b, (0, 0), (0, h), pw) | capsule(a, b, (0, h - 0.1), (arm, h + 0.2), pw * 0.7)
            head = ellipse(a, b, arm, h + 0.1, 0.45, self.minw(0.14, z))
            return [(pole, POLE, M.METAL, METAL * 0.8, 1.0), (head, POLE, M.LAMP, _c(200, 200, 190), 1.0)]

        draw_sprite(self.gb, self.cam, x, z, (min(arm, 0) - 0.6, max(arm, 0) + 0.6, 0, h + 0.6), parts)
        self.lights.append(Light(x + arm, z, 0.6 * h, _c(255, 210, 150) * 1.2))

    def traffic_light(self, x: float, z: float, state: int) -> None:
        h = self.rng.uniform(2.6, 3.6)
        pw = self.minw(0.07, z)
        colours = (_c(255, 40, 30), _c(255, 180, 20), _c(60, 255, 120))

        def parts(a, b):
            out = [
                (capsule(a, b, (0, 0), (0, h), pw), POLE, M.METAL, METAL * 0.7, 1.0),
                (rect(a, b, -0.18, 0.18, h - 0.2, h + 0.8), LIGHT, M.TL_HOUSING, _c(35, 35, 35), 1.0),
            ]
            for i in range(3):
                lamp = ellipse(a, b, 0, h + 0.6 - 0.3 * i, 0.1, 0.1)
                on = i == state
                out.append(
                    (
                        lamp,
                        LIGHT,
                        M.TL_ON if on else M.TL_HOUSING,
                        colours[i] if on else colours[i] * 0.25,
                        1.0,
                    )
                )
            return out

        draw_sprite(self.gb, self.cam, x, z, (-0.3, 0.3, 0, h + 0.9), parts)

    def sign(self, x: float, z: float) -> None:
        r = self.rng
        h = r.uniform(2.0, 2.8)
        kind = int(r.integers(4))
        s = r.uniform(0.3, 0.45)
        pw = self.minw(0.05, z)

        def parts(a, b):
            pole = capsule(a, b, (0, 0), (0, h), pw)
            out = [(pole, POLE, M.METAL, METAL, 1.0)]
            if kind == 0:  # round prohibitory sign
                out += [
                    (ellipse(a, b, 0, h + s, s, s), SIGN, M.SIGN_FACE, SIGN_COLOURS["red"], 1.0),
                    (
                        ellipse(a, b, 0, h + s, 0.72 * s, 0.72 * s),
                        SIGN,
                        M.SIGN_FACE,
                        SIGN_COLOURS["white"],
                        1.0,
                    ),
                ]
            elif kind == 1:  # warning triangle
                tri = (b >= h) & (b <= h + 1.7 * s) & (np.abs(a) <= (h + 1.7 * s - b) / 1.7)
                inner = (b >= h + 0.2 * s) & (np.abs(a) <= (h + 1.45 * s - b) / 1.7 - 0.02)
                out += [
                    (tri, SIGN, M.SIGN_FACE, SIGN_COLOURS["red"], 1.0),
                    (tri & inner, SIGN, M.SIGN_FACE, SIGN_COLOURS["white"], 1.0),
                ]
            elif kind == 2:  # blue information plate
                out += [
                    (rect(a, b, -s, s, h, h + 1.5 * s), SIGN, M.SIGN_FACE, SIGN_COLOURS["blue"], 1.0),
                    (
                        rect(a, b, -0.3 * s, 0.3 * s, h + 0.3 * s, h + 1.2 * s),
                        SIGN,
                        M.SIGN_FACE,
                        SIGN_COLOURS["white"],
                        1.0,
                    ),
                ]
            else:  # priority diamond
                d = np.abs(a) + np.abs(b - h - s)
                out += [
                    (d <= s, SIGN, M.SIGN_FACE, SIGN_COLOURS["white"], 1.0),
                    (d <= 0.7 * s, SIGN, M.SIGN_FACE, SIGN_COLOURS["yellow"], 1.0),
                ]
            return out

        draw_sprite(self.gb, self.cam, x, z, (-s - 0.1, s + 0.1, 0, h + 2.2 * s), parts)

    # -- vehicles -------------------------------------------------------------------------------------
    def car(self, x: float, z: float, facing_us: bool, parked: bool = False) -> None:
        r = self.rng
        w, length = r.uniform(1.7, 1.95), r.uniform(3.9, 4.8)
        hb, hc = r.uniform(0.95, 1.1), r.uniform(1.4, 1.6)
        colour = CAR_COLOURS[int(r.integers(len(CAR_COLOURS)))] * r.uniform(0.9, 1.05)
        x0, x1 = x - w / 2, x + w / 2
        wheel = 0.33
        light_mat = M.HEADLIGHT if facing_us else M.TAILLIGHT
        light_col = _c(240, 240, 220) if facing_us else _c(200, 20, 20)

        def body(face, a, b):
            p = Paint(self.gb, a, b, M.CAR_PAINT, colour)
            keep = True
            if face == F.FRONT:
                tyres = (a < 0.28) | (a > w - 0.28)
                keep = (b > 0.28) | tyres
                p.put((b <= 0.28) & tyres, M.TYRE, TYRE)
                p.put(((a < 0.35) | (a > w - 0.35)) & (b > 0.7) & (b < 0.86), light_mat, light_col)
                p.put((np.abs(a - w / 2) < 0.26) & (b > 0.42) & (b < 0.54), None, _c(235, 235, 235))
                p.darken((b > 0.28) & (b < 0.4), 0.55)
            elif face in (F.SIDE_L, F.SIDE_R):
                d1, d2 = (a - 0.9) ** 2 + (b - wheel) ** 2, (a - (length - 0.9)) ** 2 + (b - wheel) ** 2
                wheels = (d1 < wheel**2) | (d2 < wheel**2)
                keep = (b > 0.22) | wheels
                p.put(wheels, M.TYRE, TYRE).put((d1 < 0.02) | (d2 < 0.02), M.METAL, METAL)
                p.darken((b > 0.5) & (b < 0.54), 0.8)
            return p.result(keep)

        def cabin(face, a, b):
            p = Paint(self.gb, a, b, M.GLASS, GLASS)
            if face == F.TOP:
                return p.put(True, M.CAR_PAINT, colour).result()
            span = (w - 0.2) if face == F.FRONT else (length * 0.55)
            frame = (a < 0.1) | (a > span - 0.1) | (b > hc - 0.06)
            if face != F.FRONT:
                frame |= np.abs(a - span * 0.5) < 0.06
            return p.put(frame, M.CAR_PAINT, colour).result()

        zc0 = z + length * (0.28 if facing_us else 0.2)
        draw_box(self.gb, self.cam, Box(x0, x1, 0.0, hb, z, z + length, CAR, M.CAR_PAINT, colour, body))
        draw_box(
            self.gb,
            self.cam,
            Box(x0 + 0.1, x1 - 0.1, hb - 0.01, hc, zc0, zc0 + length * 0.55, CAR, M.GLASS, GLASS, cabin),
        )
        if facing_us and not parked:
            self.lights.append(Light(x, z - 5.0, 4.0, _c(255, 250, 230) * 1.0))

    def truck(self, x: float, z: float, facing_us: bool) -> None:
        r = self.rng
        w, h, cargo = 2.5, r.uniform(3.2, 3.9), r.uniform(5.5, 9.0)
        colour = [_c(230, 230, 230), _c(60, 90, 150), _c(180, 40, 30), _c(90, 100, 90)][int(r.integers(4))]
        cab_col = CAR_COLOURS[int(r.integers(len(CAR_COLOURS)))]
        x0 = x - w / 2

        def cargo_deco(face, a, b):
            p = Paint(self.gb, a, b, M.CAR_PAINT, colour)
            keep = b > 0.9
            if face == F.FRONT:
                keep = keep | (b > 0.5) & ((a < 0.35) | (a > w - 0.35))
                p.darken(np.abs(a - w / 2) < 0.03, 0.5)
                p.put((b > 0.95) & (b < 1.15) & ((a < 0.3) | (a > w - 0.3)), M.TAILLIGHT, _c(200, 20, 20))
                p.put(b <= 0.9, M.TYRE, TYRE)
            elif face in (F.SIDE_L, F.SIDE_R):
                wheels = ((a - (cargo - 1.2)) ** 2 + (b - 0.5) ** 2 < 0.25) | (
                    (a - (cargo - 2.3)) ** 2 + (b - 0.5) ** 2 < 0.25
                )
                keep = keep | wheels
                p.put(wheels, M.TYRE, TYRE).darken((b > 0.9) & (b < 1.05), 0.6)
            return p.result(keep)

        def cab_deco(face, a, b):
            p = Paint(self.gb, a, b, M.CAR_PAINT, cab_col)
            p.put(
                (b > 1.7) & (b < 2.6) & (a > 0.15) & (a < (w if face == F.FRONT else 2.2) - 0.15),
                M.GLASS,
                GLASS,
            )
            keep = b > 0.35
            if face in (F.SIDE_L, F.SIDE_R):
                wheels = (a - 1.0) ** 2 + (b - 0.5) ** 2 < 0.25
                keep = keep | wheels
                p.put(wheels, M.TYRE, TYRE)
            if face == F.FRONT:
                p.put((b > 0.7) & (b < 0.9) & ((a < 0.35) | (a > w - 0.35)), M.HEADLIGHT, _c(240, 240, 220))
            return p.result(keep)

        if facing_us:
            draw_box(
                self.gb, self.cam, Box(x0, x0 + w, 0, 2.9, z, z + 2.3, TRUCK, M.CAR_PAINT, cab_col, cab_deco)
            )
            draw_box(
                self.gb,
                self.cam,
                Box(x0, x0 + w, 0, h, z + 2.4, z + 2.4 + cargo, TRUCK, M.CAR_PAINT, colour, cargo_deco),
            )
            self.lights.append(Light(x, z - 6.0, 5.0, _c(255, 250, 230)))
        else:
            draw_box(
                self.gb, self.cam, Box(x0, x0 + w, 0, h, z, z + cargo, TRUCK, M.CAR_PAINT, colour, cargo_deco)
            )
            draw_box(
                self.gb,
                self.cam,
                Box(
                    x0,
                    x0 + w,
                    0,
                    2.9,
                    z + cargo + 0.1,
                    z + cargo + 2.4,
                    TRUCK,
                    M.CAR_PAINT,
                    cab_col,
                    cab_deco,
                ),
            )

    def long_vehicle(self, x: float, z: float, label: int, facing_us: bool) -> None:
        """A bus (label BUS) or a tram (label TRAIN): a long box with a band of windows."""
        r = self.rng
        tram = label == TRAIN
        w = 2.65 if tram else 2.55
        h = 3.5 if tram else r.uniform(3.0, 3.3)
        length = r.uniform(20.0, 32.0) if tram else r.uniform(11.0, 13.0)
        colour = (
            (_c(220, 220, 210) if r.random() < 0.5 else _c(200, 40, 40))
            if tram
            else BUS_COLOURS[int(r.integers(len(BUS_COLOURS)))]
        )
        stripe = _c(40, 40, 45)
        x0 = x - w / 2

        def deco(face, a, b):
            p = Paint(self.gb, a, b, M.CAR_PAINT, colour)
            keep = b > (0.35 if not tram else 0.45)
            if face == F.FRONT:
                glass = (b > (1.0 if facing_us else 1.7)) & (b < h - 0.35) & (a > 0.15) & (a < w - 0.15)
                if tram:
                    p.put((b > 0.5) & (b < 0.9), None, stripe)
                p.put(
                    (b > 0.6) & (b < 0.85) & ((a < 0.35) | (a > w - 0.35)),
                    M.HEADLIGHT if facing_us else M.TAILLIGHT,
                    _c(240, 240, 220) if facing_us else _c(200, 20, 20),
                )
            elif face in (F.SIDE_L, F.SIDE_R):
                glass = (b > 1.15) & (b < h - 0.5) & ((a % 1.6) > 0.14)
                glass |= ((a % 7.0) > 5.7) & (b > 0.45) & (b < h - 0.5)  # doors
                axles = (
                    (1.8, length - 2.6)
                    if not tram
                    else (2.0, 4.0, length / 2 - 1, length / 2 + 1, length - 4.0, length - 2.0)
                )
                wheels = np.zeros(p.shape, bool)
                for ax in axles:
                    wheels |= (a - ax) ** 2 + (b - 0.45) ** 2 < 0.2
                keep = keep | wheels
                p.put(wheels, M.TYRE, TYRE)
                if tram:
                    p.put((b > 0.45) & (b < 0.95) & ~wheels, None, stripe)
            else:
                glass = False
            return p.put(glass, M.GLASS, GLASS).result(keep)

        draw_box(self.gb, self.cam, Box(x0, x0 + w, 0.0, h, z, z + length, label, M.CAR_PAINT, colour, deco))
        if tram:  # pantograph on the roof
            zp = z + 3.0
            pw = self.minw(0.04, zp)

            def panto(a, b):
                m = capsule(a, b, (-0.4, h), (0.0, h + 1.0), pw) | capsule(a, b, (0.4, h), (0.0, h + 1.0), pw)
                m |= capsule(a, b, (-0.7, h + 1.0), (0.7, h + 1.0), pw)
                return [(m, TRAIN, M.METAL, _c(60, 60, 60), 1.0)]

            draw_sprite(self.gb, self.cam, x, zp, (-0.8, 0.8, h, h + 1.1), panto)
        if facing_us:
            self.lights.append(Light(x, z - 6.0, 5.0, _c(255, 250, 230)))

    # -- people ---------------------------------------------------------------------------------------
    def person(self, x: float, z: float, side_view: bool = False, direction: int = 1) -> None:
        r = self.rng
        h = r.uniform(1.55, 1.95)
        top, trousers = (CLOTH_COLOURS[int(i)] for i in r.integers(len(CLOTH_COLOURS), size=2))
        skin = SKIN_COLOURS[int(r.integers(len(SKIN_COLOURS)))]
        hair = _c(40, 30, 20) * r.uniform(0.6, 2.5)
        stride = r.uniform(0.0, 0.18) * h
        bag = r.random() < 0.3
        lw = self.minw(0.04 * h, z)

        def parts(a, b):
            if side_view:
                legs = capsule(a, b, (0, 0.5 * h), (direction * stride, 0.03 * h), lw) | capsule(
                    a, b, (0, 0.5 * h), (-direction * stride, 0.03 * h), lw
                )
                torso = superellipse(a, b, 0, 0.66 * h, 0.085 * h, 0.17 * h)
                arms = capsule(a, b, (0, 0.8 * h), (-direction * stride * 0.7, 0.45 * h), 0.03 * h)
            else:
                legs = capsule(a, b, (-0.06 * h, 0.5 * h), (-0.075 * h, 0.03 * h), lw) | capsule(
                    a, b, (0.06 * h, 0.5 * h), (0.075 * h, 0.03 * h), lw
                )
                legs |= rect(a, b, -0.1 * h, 0.1 * h, 0.45 * h, 0.55 * h)  # hips
                torso = superellipse(a, b, 0, 0.67 * h, 0.12 * h, 0.16 * h)
                arms = capsule(a, b, (-0.135 * h, 0.79 * h), (-0.19 * h, 0.46 * h), 0.03 * h) | capsule(
                    a, b, (0.135 * h, 0.79 * h), (0.19 * h, 0.46 * h), 0.03 * h
                )
            head = ellipse(a, b, 0, 0.915 * h, 0.06 * h, 0.075 * h)
            hair_m = head & (b > 0.93 * h)
            out = [
                (legs, PERSON, M.CLOTH, trousers, 0.9),
                (torso | arms, PERSON, M.CLOTH, top, 1.0),
                (head, PERSON, M.SKIN, skin, 1.0),
                (hair_m, PERSON, M.HAIR, hair, 1.0),
            ]
            if bag:
                out.append(
                    (rect(a, b, 0.1 * h, 0.24 * h, 0.4 * h, 0.55 * h), PERSON, M.CLOTH, _c(60, 40, 30), 1.0)
                )
            return out

        draw_sprite(self.gb, self.cam, x, z, (-0.3 * h, 0.3 * h, 0, h), parts)

    def two_wheeler(
        self, x: float, z: float, motor: bool, rider: bool, side_view: bool, direction: int
    ) -> None:
        r = self.rng
        label = MOTORCYCLE if motor else BICYCLE
        frame_col = CAR_COLOURS[int(r.integers(len(CAR_COLOURS)))]
        top = CLOTH_COLOURS[int(r.integers(len(CLOTH_COLOURS)))]
        trousers = CLOTH_COLOURS[int(r.integers(len(CLOTH_COLOURS)))]
        skin = SKIN_COLOURS[int(r.integers(len(SKIN_COLOURS)))]
        helmet = CAR_COLOURS[int(r.integers(len(CAR_COLOURS)))]
        d = direction
        wr = 0.32 if motor else 0.34
        hub = 0.7 if motor else 0.55
        t = self.minw(0.1 if motor else 0.045, z)
        ft = self.minw(0.035, z)

        def parts(a, b):
            out = []
            if side_view:
                wheels = ring(a, b, -hub, wr, wr, wr - t) | ring(a, b, hub, wr, wr, wr - t)
                if motor:
                    body = ellipse(a, b, 0.05 * d, 0.66, 0.62, 0.2) | rect(a, b, -0.25, 0.3, 0.3, 0.6)
                    body |= capsule(a, b, (hub * d, wr), (0.45 * d, 1.05), 0.05)
                    body |= ellipse(a, b, -hub, wr, 0.12, 0.12) | ellipse(a, b, hub, wr, 0.12, 0.12)
                    out += [(wheels, label, M.TYRE, TYRE, 1.0), (body, label, M.CAR_PAINT, frame_col, 1.0)]
                else:
                    bb = (0.0, wr)
                    seat = (-0.15 * d, 0.9)
                    bar = (0.45 * d, 0.98)
                    frame = capsule(a, b, (-hub * d, wr), bb, ft) | capsule(a, b, bb, seat, ft)
                    frame |= capsule(a, b, (-hub * d, wr), seat, ft) | capsule(
                        a, b, seat, (0.4 * d, 0.85), ft
                    )
                    frame |= capsule(a, b, bb, (0.4 * d, 0.85), ft) | capsule(a, b, (hub * d, wr), bar, ft)
                    frame |= ellipse(a, b, -hub, wr, ft, ft) | ellipse(a, b, hub, wr, ft, ft)
                    out += [(wheels, label, M.TYRE, TYRE, 1.0), (frame, label, M.METAL, frame_col, 1.0)]
                if rider:
                    hip = (-0.25 * d, 0.95) if motor else (-0.15 * d, 0.95)
                    sh = (0.12 * d, 1.48) if motor else (0.2 * d, 1.45)
                    head_c = (0.2 * d, 1.66) if motor else (0.3 * d, 1.63)
                    hand = (0.48 * d, 1.05) if motor else (0.45 * d, 1.0)
                    knee = (0.2 * d, 0.8) if motor else (0.18 * d, 0.7)
                    foot = (0.1 * d, 0.45) if motor else (0.02 * d, 0.3)
                    legs = capsule(a, b, hip, knee, 0.075) | capsule(a, b, knee, foot, 0.06)
                    torso = capsule(a, b, hip, sh, 0.15)
                    arms = capsule(a, b, sh, hand, 0.045)
                    head = ellipse(a, b, *head_c, 0.13 if motor else 0.11, 0.14 if motor else 0.12)
                    out += [
                        (legs, RIDER, M.CLOTH, trousers, 0.9),
                        (torso | arms, RIDER, M.CLOTH, top, 1.0),
                        (head, RIDER, M.CAR_PAINT if motor else M.SKIN, helmet if motor else skin, 1.0),
                    ]
            else:  # seen from behind
                tw = (0.07 if motor else 0.025) + t * 0.2
                wheel = ellipse(a, b, 0, wr, tw, wr)
                out.append((wheel, label, M.TYRE, TYRE, 1.0))
                if motor:
                    body = superellipse(a, b, 0, 0.75, 0.3, 0.22) | rect(a, b, -0.42, 0.42, 1.0, 1.06)
                    lamp = rect(a, b, -0.08, 0.08, 0.72, 0.8)
                    out += [
                        (body, label, M.CAR_PAINT, frame_col, 1.0),
                        (lamp, label, M.TAILLIGHT, _c(200, 20, 20), 1.0),
                    ]
                else:
                    out.append(
                        (
                            capsule(a, b, (0, wr), (0, 0.9), ft) | rect(a, b, -0.3, 0.3, 0.96, 1.0),
                            label,
                            M.METAL,
                            frame_col,
                            1.0,
                        )
                    )
                if rider:
                    legs = capsule(a, b, (-0.12, 0.95), (-0.16, 0.4), 0.07) | capsule(
                        a, b, (0.12, 0.95), (0.16, 0.5), 0.07
                    )
                    torso = superellipse(a, b, 0, 1.25, 0.2, 0.3)
                    arms = capsule(a, b, (-0.2, 1.45), (-0.3, 1.0), 0.045) | capsule(
                        a, b, (0.2, 1.45), (0.3, 1.0), 0.045
                    )
                    head = ellipse(a, b, 0, 1.7, 0.12 if motor else 0.1, 0.14 if motor else 0.12)
                    out += [
                        (legs, RIDER, M.CLOTH, trousers, 0.9),
                        (torso | arms, RIDER, M.CLOTH, top, 1.0),
                        (
                            head,
                            RIDER,
                            M.CAR_PAINT if motor else M.HAIR,
                            helmet if motor else _c(50, 35, 25),
                            1.0,
                        ),
                    ]
            return out

        span = 1.2 if side_view else 0.5
        draw_sprite(self.gb, self.cam, x, z, (-span, span, 0, 1.9), parts)

    # -- the whole street -----------------------------------------------------------------------------
    def build(self) -> None:
        r = self.rng
        self.tram_lane = None
        tram = r.random() < 0.28
        if tram:
            self.tram_lane = int(r.integers(self.n_lanes))
        self.ground()
        self.far()
        if r.random() < 0.6:  # buildings closing the street
            x = -r.uniform(40.0, 80.0)
            while x < 80.0:
                wdt = r.uniform(8.0, 25.0)
                if r.random() < 0.85:
                    colour = BUILDING_COLOURS[int(r.integers(len(BUILDING_COLOURS)))]
                    deco = self.facade(colour, r.random() < 0.3, 3.2, 1.3, 3.0, False, int(r.integers(1000)))
                    draw_box(
                        self.gb,
                        self.cam,
                        Box(
                            x,
                            x + wdt,
                            0,
                            r.uniform(8, 35),
                            self.z_end,
                            self.z_end + 15,
                            BUILDING,
                            M.PLASTER,
                            colour,
                            deco,
                        ),
                    )
                else:
                    self.tree(x + wdt / 2, self.z_end + 2)
                x += wdt
        for side in (-1, 1):
            self.buildings(side)
        # street furniture on both sidewalks
        for side in (-1, 1):
            curb = self.xr + 0.6 if side > 0 else self.xl - 0.6
            outer = (self.xr + self.sw_r - 0.6) if side > 0 else (self.xl - self.sw_l + 0.6)
            if r.random() < 0.75:
                spacing = r.uniform(18.0, 30.0)
                for zl in np.arange(r.uniform(3.0, 15.0), self.z_end, spacing):
                    if not self.in_cross(zl - 1, zl + 1):
                        self.lamp(curb, zl, side)
            if r.random() < 0.6:
                for zt in np.arange(r.uniform(4.0, 10.0), self.z_end, r.uniform(7.0, 14.0)):
                    if not self.in_cross(zt - 2, zt + 2):
                        self.tree(outer if r.random() < 0.5 else curb + side * 0.6, zt)
            if r.random() < 0.25:
                z0 = r.uniform(2.0, 20.0)
                z1 = z0 + r.uniform(8.0, 30.0)
                if not self.in_cross(z0, z1):
                    self.railing(curb - side * 0.35, z0, z1)
            for _ in range(int(r.integers(0, 3))):
                zs = r.uniform(6.0, 60.0)
                if not self.in_cross(zs - 1, zs + 1):
                    self.sign(curb, zs)
        if self.cross is not None:
            c0, w = self.cross
            for xs, zs in (
                (self.xr + 0.7, c0 - 2.5),
                (self.xl - 0.7, c0 - 2.5),
                (self.xr + 0.7, c0 + w + 2.0),
                (self.xl - 0.7, c0 + w + 2.0),
            ):
                if r.random() < 0.8:
                    self.traffic_light(xs, zs, int(r.integers(3)))
            for _ in range(int(r.integers(0, 4))):  # pedestrians on the crosswalk
                self.person(
                    r.uniform(self.xl, self.xr),
                    c0 - r.uniform(1.2, 3.8),
                    side_view=True,
                    direction=int(r.choice([-1, 1])),
                )
            if r.random() < 0.5:  # a vehicle crossing: side view of a car
                self.crossing_vehicle(c0 + w / 2)
        elif r.random() < 0.5:
            self.traffic_light(self.xr + 0.7, r.uniform(10, 40), int(r.integers(3)))
        # signs, pedestrians, parked bikes on the sidewalks
        if r.random() < 0.7:
            self.sign(self.xr + 0.6, r.uniform(5.0, 35.0))
        for _ in range(int(r.integers(1, 9))):
            side = 1 if r.random() < 0.5 else -1
            lo, hi = (
                (self.xr + 0.4, self.xr + self.sw_r - 0.3)
                if side > 0
                else (self.xl - self.sw_l + 0.3, self.xl - 0.4)
            )
            zp = r.uniform(4.0, 50.0)
            if not self.in_cross(zp, zp):
                self.person(
                    r.uniform(lo, hi), zp, side_view=r.random() < 0.5, direction=int(r.choice([-1, 1]))
                )
        for _ in range(int(r.integers(0, 3)) if r.random() < 0.45 else 0):
            side = 1 if r.random() < 0.5 else -1
            xb = self.xr + self.sw_r - 0.5 if side > 0 else self.xl - self.sw_l + 0.5
            zb = r.uniform(4.0, 30.0)
            self.two_wheeler(
                xb, zb, motor=r.random() < 0.4, rider=False, side_view=True, direction=int(r.choice([-1, 1]))
            )
        # traffic
        self.traffic(tram)

    def crossing_vehicle(self, z: float) -> None:
        r = self.rng
        x = r.uniform(self.xl - 8.0, self.xr + 8.0)
        if r.random() < 0.65:
            length, w = r.uniform(3.9, 4.6), 1.8
            colour = CAR_COLOURS[int(r.integers(len(CAR_COLOURS)))]
            d = int(r.choice([-1, 1]))

            def parts(a, b):
                body = superellipse(a, b, 0, 0.65, length / 2, 0.38, 6)
                cab = superellipse(a, b, -0.1 * d, 1.15, length * 0.28, 0.3, 4) & (b > 0.95)
                glass = superellipse(a, b, -0.1 * d, 1.15, length * 0.25, 0.24, 4) & (b > 1.0)
                wheels = ellipse(a, b, -length / 2 + 0.85, 0.33, 0.33, 0.33) | ellipse(
                    a, b, length / 2 - 0.85, 0.33, 0.33, 0.33
                )
                return [
                    (body | cab, CAR, M.CAR_PAINT, colour, 1.0),
                    (glass, CAR, M.GLASS, GLASS, 1.0),
                    (wheels, CAR, M.TYRE, TYRE, 1.0),
                ]

            draw_sprite(self.gb, self.cam, x, z + w / 2, (-length / 2, length / 2, 0, 1.5), parts)
        else:
            motor = r.random() < 0.5
            self.two_wheeler(x, z, motor=motor, rider=True, side_view=True, direction=int(r.choice([-1, 1])))

    def traffic(self, tram: bool) -> None:
        r = self.rng
        occupied: list[tuple[int, float, float]] = []

        def free(lane: int, z0: float, z1: float) -> bool:
            return all(not (lane == ln and z1 > a - 2.0 and z0 < b + 2.0) for ln, a, b in occupied)

        def place(lane: int, length: float, lo: float = 6.0, hi: float = 80.0) -> float | None:
            for _ in range(6):
                z = r.uniform(lo, hi)
                if free(lane, z, z + length) and not self.in_cross(z, z + length):
                    occupied.append((lane, z, z + length))
                    return z
            return None

        if tram:
            z = place(self.tram_lane, 30.0, 10.0, 60.0)
            if z is not None:
                self.long_vehicle(self.lane_x(self.tram_lane), z, TRAIN, self.tram_lane < self.oncoming)
        if r.random() < 0.45:
            lane = int(r.integers(self.n_lanes))
            z = place(lane, 13.0, 10.0, 70.0)
            if z is not None:
                self.long_vehicle(self.lane_x(lane) + r.uniform(-0.2, 0.2), z, BUS, lane < self.oncoming)
        for _ in range(int(r.integers(0, 3)) if r.random() < 0.55 else 0):
            lane = int(r.integers(self.n_lanes))
            z = place(lane, 11.0, 8.0, 80.0)
            if z is not None:
                self.truck(self.lane_x(lane) + r.uniform(-0.2, 0.2), z, lane < self.oncoming)
        for _ in range(int(r.integers(1, 8))):
            lane = int(r.integers(self.n_lanes))
            z = place(lane, 5.0, 5.0, 80.0)
            if z is not None:
                self.car(self.lane_x(lane) + r.uniform(-0.3, 0.3), z, lane < self.oncoming)
        # parked cars along the curbs (lane -1 / -2 are the parking strips)
        for side in (-1, 1):
            if r.random() < 0.55:
                x = self.xr - 1.1 if side > 0 else self.xl + 1.1
                lane = self.n_lanes - 1 if side > 0 else 0
                z = r.uniform(3.0, 10.0)
                while z < 60.0:
                    length = 5.0
                    if r.random() < 0.7 and free(lane, z, z + length) and not self.in_cross(z, z + length):
                        occupied.append((lane, z, z + length))
                        self.car(x, z, facing_us=False, parked=True)
                    z += length + r.uniform(0.5, 6.0)
        # cyclists and motorcyclists in the road
        for _ in range(int(r.integers(1, 3)) if r.random() < 0.6 else 0):
            motor = r.random() < 0.45
            lane = self.n_lanes - 1 if not motor else int(r.integers(self.n_lanes))
            xr = self.lane_x(lane) + (1.0 if not motor else r.uniform(-0.5, 0.5))
            z = place(lane, 2.5, 5.0, 45.0)
            if z is not None:
                self.two_wheeler(xr, z, motor=motor, rider=True, side_view=False, direction=1)


def make_scene(
    seed: int = 0, split: str = "train", index: int = 0, size: tuple[int, int] = DEFAULT_SIZE
) -> Scene:
    """Generate scene ``index`` of ``split`` for ``seed``: a pure function of (seed, split, index).

    ``size`` = (H, W) only sets the resolution: the layout is the same at any size.
    """
    if split not in SPLITS:
        raise ValueError(f"synthetic split '{split}' unknown; expected one of {list(SPLITS)}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    height, width = size
    rng = np.random.default_rng([int(seed), SPLITS[split], int(index)])
    builder = _Builder(rng, int(height), int(width))
    builder.build()
    road = (builder.xl, builder.xr)
    return Scene(int(seed), split, int(index), builder.cam, builder.gb, builder.lights, road)


# ----------------------------------------------------------------------------------------------------
# styles


def _mirror(tex: np.ndarray) -> np.ndarray:
    """A square power-of-two texture [n, n, ...] -> its seamless mirrored tile [2n, 2n, ...]."""
    top = np.concatenate([tex, tex[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def _half(img: np.ndarray) -> np.ndarray:
    """2x2 mean downsampling of [2n, 2n, ...]."""
    x = img.astype(np.float32)
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


@functools.lru_cache(maxsize=1)
def _textures() -> dict[str, np.ndarray]:
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
        x = _half(img)
        return _mirror(((x - x.mean()) / (2.5 * x.std() + 1e-6)).clip(-1, 1))

    return {
        "brick": detail(data.brick().T),  # bricks lying horizontally
        "grass": detail(data.grass()),
        "gravel": detail(data.gravel()),
        "moon": detail(data.moon()),
        "fabric": _mirror(_half(data.immunohistochemistry()) / 255.0),
        "wood": _mirror(data.coffee()[300:364, 10:74].astype(np.float32) / 255.0),
    }


def _sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Nearest sampling of a square power-of-two tile, repeated, at (u, v) metres x ``scale`` texels per
    metre: [n] or [n, C] for 1-D u and v of length n."""
    n = tex.shape[0]
    i = (v * scale).astype(np.int32) & (n - 1)
    j = (u * scale).astype(np.int32) & (n - 1)
    flat = tex.reshape(n * n, *tex.shape[2:])
    return flat[i * n + j]


# material -> (texture, texels per metre, contrast, feature size in metres)
_PHOTO_DETAIL = {
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


def _groups(gb: GBuffer) -> dict[int, np.ndarray]:
    """Flat pixel indices of each material present (one sort instead of a mask per material)."""
    flat = gb.mat.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=M.COUNT)
    ends = np.cumsum(counts)
    return {int(m): order[ends[m] - counts[m] : ends[m]] for m in np.flatnonzero(counts)}


def _paint_sky(
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
        n = _noise_at(cols / cam.width * 64.0, rows / cam.height * 24.0, 1.0, rng.random(), beta=2.2)
        c = np.clip((n + (clouds - 0.5)) * 2.0, 0, 1)[:, None]
        sky = sky * (1 - c) + np.array([0.93, 0.93, 0.95], np.float32) * c * (0.8 + 0.2 * t)
    img.reshape(-1, 3)[idx] = sky * gain
    return img


def _photo_colour(scene: Scene, groups: dict[int, np.ndarray]) -> np.ndarray:
    """Photo-textured colour [H, W, 3] (0..1) of every surface (the sky is left to the style)."""
    gb, cam = scene.gb, scene.camera
    tex = _textures()
    tu, tv = gb.tu.reshape(-1), gb.tv.reshape(-1)
    depth = gb.depth.reshape(-1)
    # one light/detail factor per pixel: texture detail (faded with distance), shade, ambient occlusion
    factor = np.where(gb.face.reshape(-1) == F.GROUND, 1.0, 0.82 + 0.18 * np.clip(tv / 1.5, 0, 1))
    factor = factor.astype(np.float32) * gb.shade.reshape(-1)
    for m, idx in groups.items():
        if m in _PHOTO_DETAIL:
            name, scale, contrast, feature = _PHOTO_DETAIL[m]
            d = _sample(tex[name], tu[idx], tv[idx], scale)
            fade = np.clip(feature * cam.f / np.maximum(depth[idx], 0.1), 0.15, 1.0)
            factor[idx] *= 1.0 + contrast * fade * d
        elif m in (M.CAR_PAINT, M.GLASS):  # glossy: a soft sheen
            factor[idx] *= 0.85 + 0.2 * _sample(periodic_noise(256, 2.5), tu[idx], tv[idx], 20.0)
    out = gb.albedo.reshape(-1, 3) * (factor[:, None] * np.array([1.02, 1.0, 0.96], np.float32))
    if M.CLOTH in groups:  # patterned fabric
        idx = groups[M.CLOTH]
        fab = _sample(tex["fabric"], tu[idx], tv[idx], 75.0)
        out[idx] *= 0.45 + 0.6 * fab.mean(-1, keepdims=True) + 0.25 * (fab - fab.mean(-1, keepdims=True))
    if M.WOOD in groups:
        idx = groups[M.WOOD]
        out[idx] = 0.4 * out[idx] + 0.6 * _sample(tex["wood"], tu[idx], tv[idx], 80.0) * factor[idx, None]
    return out.reshape(gb.albedo.shape)


@functools.lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    """Fixed Gaussian sensor noise [512, 1024, 3] (x 255, float32)."""
    return np.random.default_rng(3).standard_normal((512, 1024, 3), dtype=np.float32) * 255.0


def _finish(img: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """RGB [H, W, 3] in 0..1 -> uint8, with Gaussian sensor noise of std ``noise`` (a random window of a
    fixed noise tile, tiled for images larger than it)."""
    out = img * np.float32(255.0)
    if noise > 0:
        tile = _noise_tile()
        h, w = img.shape[:2]
        if h > tile.shape[0] or w > tile.shape[1]:
            tile = np.tile(tile, (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1))
        r0, c0 = int(rng.integers(tile.shape[0] - h + 1)), int(rng.integers(tile.shape[1] - w + 1))
        out += tile[r0 : r0 + h, c0 : c0 + w] * np.float32(noise)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 255.0, out=out).astype(np.uint8)


def _blur(img: np.ndarray, k: int) -> np.ndarray:
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


def _vignette(cam: Camera) -> np.ndarray:
    y = (np.arange(cam.height, dtype=np.float32) + 0.5) / cam.height - 0.5
    x = (np.arange(cam.width, dtype=np.float32) + 0.5) / cam.width - 0.5
    return (1.0 - 0.35 * (x[None, :] ** 2 + y[:, None] ** 2))[..., None]


def render_game(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb = scene.gb
    img = gb.albedo * gb.shade[..., None]
    grey = img.mean(-1, keepdims=True)
    img = grey + 1.35 * (img - grey)  # saturated, clean colours
    img = _paint_sky(img, scene, rng, (0.25, 0.5, 0.95), (0.6, 0.8, 1.0))
    return _finish(img, rng, 0.0)


def render_palette(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    img = render_game(scene, rng).astype(np.float32) / 255.0
    img = img[..., [2, 0, 1]]  # rotate the colour channels: blue sky -> pink, green trees -> blue
    return _finish(0.15 + 0.85 * img**0.8, rng, 0.0)


def render_photo(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb, cam = scene.gb, scene.camera
    img = _photo_colour(scene, _groups(gb))
    img = _paint_sky(img, scene, rng, (0.32, 0.5, 0.78), (0.78, 0.84, 0.9), rng.uniform(0.2, 0.7))
    haze = (1.0 - np.exp(-np.minimum(gb.depth, 1e4) / 600.0))[..., None]  # aerial perspective
    img = img * (1 - 0.5 * haze) + np.array([0.75, 0.8, 0.85], np.float32) * (0.5 * haze)
    return _finish(img * _vignette(cam), rng, 0.015)


_EMISSION = {
    M.WINDOW_LIT: (1.0, 0.8, 0.45),
    M.LAMP: (1.6, 1.5, 1.3),
    M.HEADLIGHT: (1.8, 1.8, 1.6),
    M.TAILLIGHT: (1.4, 0.1, 0.08),
    M.TL_ON: None,
}


def render_night(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb, cam = scene.gb, scene.camera
    groups = _groups(gb)
    base = _photo_colour(scene, groups)
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
    img = _paint_sky(img, scene, rng, (0.01, 0.015, 0.04), (0.08, 0.07, 0.09))
    # glow around the light sources: their emission binned at quarter resolution, blurred, added
    if lit:
        idx = np.concatenate(lit)
        h, w = -(-cam.height // 4), -(-cam.width // 4)
        cell = (idx // cam.width // 4) * w + (idx % cam.width) // 4
        glow = np.stack([np.bincount(cell, flat[idx, c], minlength=h * w) for c in range(3)], -1) / 16.0
        glow = _blur(glow.reshape(h, w, 3).astype(np.float32), 2)
        up = np.broadcast_to(glow[:, None, :, None, :], (h, 4, w, 4, 3)).reshape(4 * h, 4 * w, 3)
        img += 1.2 * up[: cam.height, : cam.width]
    return _finish(img, rng, 0.025)


def render_fog(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb = scene.gb
    img = _photo_colour(scene, _groups(gb))
    fog = np.array([0.78, 0.8, 0.82], np.float32) * rng.uniform(0.85, 1.05)
    t = np.exp(-np.minimum(gb.depth, 1e4) / rng.uniform(25.0, 70.0))[..., None]
    return _finish(0.1 + 0.85 * (img * t + fog * (1 - t)), rng, 0.015)


def render_snow(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb, cam = scene.gb, scene.camera
    img = _photo_colour(scene, _groups(gb))
    img *= 0.6
    img += 0.4 * img.mean(-1, keepdims=True) / 0.6  # flat winter light: 60 % of the colour saturation
    img = _paint_sky(img, scene, rng, (0.7, 0.72, 0.76), (0.85, 0.86, 0.88))
    n = _noise_at(gb.tu, gb.tv, 12.0, rng.random())
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
    return _finish(img, rng, 0.02)


def render_rain(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    gb, cam = scene.gb, scene.camera
    img = _photo_colour(scene, _groups(gb)) * 0.72
    grey = img.mean(-1, keepdims=True)
    img = grey + 0.7 * (img - grey)
    img = _paint_sky(img, scene, rng, (0.45, 0.47, 0.5), (0.62, 0.63, 0.65), 0.7, gain=0.9)
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
    return _finish(img + streak[..., None], rng, 0.02)


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


# ----------------------------------------------------------------------------------------------------
# dataset


class SyntheticDataset(Dataset):
    """Synthetic street scenes in one style: item i is scene i of ``split``, rendered in ``style``.

    Args:
        style: one of :data:`STYLES` (``game`` is the source domain, the others are targets).
        split: ``train``, ``val`` or ``test`` (disjoint scene streams).
        length: number of scenes (default 1000 for train, 100 for val/test).
        size: (H, W) of the images (default (256, 512)).
        seed: the benchmark's seed (scene i is a pure function of (seed, split, i)).
        transform: ``(image uint8 [3,H,W], label int64 [H,W]) -> (image, label)``.

    Items: ``{"image": uint8 [3, H, W], "label": int64 [H, W], "path": "synthetic://<style>/<split>/<i>"}``.
    """

    def __init__(
        self,
        style: str = SOURCE_STYLE,
        split: str = "train",
        length: int | None = None,
        size: tuple[int, int] = DEFAULT_SIZE,
        seed: int = 0,
        transform: Any = None,
    ) -> None:
        if style not in STYLES:
            raise ValueError(
                f"synthetic style '{style}' unknown; expected one of {list(STYLES)} "
                f"(dataset names synthetic-<style>)"
            )
        if split not in SPLITS:
            raise ValueError(f"synthetic split '{split}' unknown; expected one of {list(SPLITS)}")
        self.style, self.split, self.seed = style, split, int(seed)
        self.length = int(DEFAULT_LENGTH[split] if length is None else length)
        if self.length <= 0:
            raise ValueError(f"synthetic dataset length must be positive, got {self.length}")
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 16:
            raise ValueError(f"synthetic image size (H, W) must be at least 16 pixels, got {self.size}")
        self.transform = transform
        self.name = f"synthetic-{style}"
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        return make_scene(self.seed, self.split, index, self.size)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(image uint8 [H, W, 3], label uint8 [H, W], []) for scene ``index``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.name} of length {self.length}")
        scene = self.scene(index)
        return render(scene, self.style), scene.label.copy(), []

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self.length
        image, label, _ = self.read(index)
        image_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        label_t = torch.from_numpy(label.astype(np.int64))
        if self.transform is not None:
            image_t, label_t = self.transform(image_t, label_t)
        return {
            "image": image_t,
            "label": label_t,
            "path": f"synthetic://{self.style}/{self.split}/{index:06d}",
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"SyntheticDataset(style={self.style!r}, split={self.split!r}, length={self.length}, "
            f"size={self.size}, seed={self.seed})"
        )


def benchmark(
    n: int = 40, size: tuple[int, int] = DEFAULT_SIZE, styles: tuple[str, ...] = STYLES, repeats: int = 3
) -> dict[str, float]:
    """Images per second (scene generation + rendering) per style on the calling thread, CPU time.

    The best of ``repeats`` runs of ``n`` scenes each, so other processes on the machine disturb the
    number less.
    """
    import time

    render(make_scene(0, "train", 10**6, size), "photo")  # load the textures once
    result = {}
    for style in styles:
        best = float("inf")
        for rep in range(repeats):
            start = time.process_time()
            for i in range(n):
                render(make_scene(0, "train", rep * n + i, size), style)
            best = min(best, time.process_time() - start)
        result[style] = n / best
    return result
