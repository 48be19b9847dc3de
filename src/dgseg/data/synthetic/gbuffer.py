"""The camera and the G-buffer: per-pixel scene attributes that the geometry writes (depth-tested) and the
styles shade. Rasterisation helpers shared by every object: :class:`Paint` (material/colour layers over a
box face) and :func:`pixel_window` (which pixels a rectangle on the image plane covers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .codes import SKY, M


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

    def min_width(self, width: float, z: float) -> float:
        """A width (metres) of at least ~0.8 pixel at depth z, so thin things do not break up."""
        return max(width, 0.8 * z / self.f)


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


def pixel_window(cam: Camera, u0: float, u1: float, v0: float, v1: float):
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
