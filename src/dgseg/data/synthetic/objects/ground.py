"""The ground plane (road, sidewalks, curbs, markings, rails, terrain) and the far background (a skyline or
a tree line at 400 m): drawn first, everything else stands on or in front of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codes import (
    ASPHALT,
    BUILDING,
    CURB,
    DIRT,
    FOLIAGE,
    GRASS,
    METAL,
    PAINT,
    PAVING,
    ROAD,
    SIDEWALK,
    TERRAIN,
    VEGETATION,
    F,
    M,
    rgb255,
)
from ..gbuffer import Camera, GBuffer
from ..raster import SceneObject
from ..shapes import noise_at
from ..street import Street


@dataclass
class Ground(SceneObject):
    """Everything below the horizon. Beyond each sidewalk, segments along Z (ends ``breaks`` [12] metres)
    of grass, paving or dirt (``kinds`` [13]: 0, 1, 2); ``asphalt`` the road's RGB."""

    street: Street
    breaks: tuple[np.ndarray, np.ndarray]  # left side, right side
    kinds: tuple[np.ndarray, np.ndarray]
    asphalt: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, street: Street) -> Ground:
        breaks, kinds = [], []
        for _ in range(2):
            breaks.append(np.cumsum(rng.uniform(8.0, 40.0, size=12)))
            kinds.append(rng.choice(3, size=13, p=[0.45, 0.35, 0.2]))  # 0 grass, 1 paved, 2 dirt
        return cls(street, (breaks[0], breaks[1]), (kinds[0], kinds[1]), ASPHALT * rng.uniform(0.85, 1.15))

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        st = self.street
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
        for k, (side, edge) in enumerate(((-1, st.xl - st.sw_l), (1, st.xr + st.sw_r))):
            beyond = (X < edge) if side < 0 else (X > edge)
            kind = self.kinds[k][np.searchsorted(self.breaks[k], Z[:, 0])][:, None]
            paved = beyond & (kind == 1)
            label[paved], mat[paved] = SIDEWALK, M.PAVING
            mat[beyond & (kind == 2)] = M.DIRT
        sidewalk = (X >= st.xl - st.sw_l) & (X <= st.xr + st.sw_r)
        label[sidewalk], mat[sidewalk] = SIDEWALK, M.PAVING
        mat[(X >= st.xl - 0.25) & (X <= st.xr + 0.25)] = M.CURB
        road = (X >= st.xl) & (X <= st.xr)
        if st.cross is not None:
            c0, w = st.cross
            road |= (Z >= c0) & (Z <= c0 + w)
        label[road], mat[road] = ROAD, M.ASPHALT
        # markings: lane separators (dashed; solid between directions), edge lines, crosswalk
        paint = np.zeros(shape, bool)
        for i in range(1, st.n_lanes):
            line = np.abs(X - (st.xl + i * st.lane_w)) < 0.08
            paint |= line if i == st.oncoming else line & (((Z + 3.0 * i) % 9.0) < 3.0)
        paint |= (np.abs(X - (st.xl + 0.3)) < 0.08) | (np.abs(X - (st.xr - 0.3)) < 0.08)
        if st.cross is not None:
            c0, w = st.cross
            paint &= (Z < c0 - 4.5) | (Z > c0 + w + 4.5)
            zebra = ((Z > c0 - 4.0) & (Z < c0 - 1.0)) | ((Z > c0 + w + 1.0) & (Z < c0 + w + 4.0))
            paint |= zebra & ((X % 1.0) < 0.5)
            stop = np.abs(Z - (c0 - 5.0)) < 0.2
            paint |= stop & (X > st.lane_x(st.oncoming) - 1.6) & (X < st.xr)
        paint &= road
        mat[paint] = M.PAINT
        if st.tram_lane is not None:
            rails = np.abs(np.abs(X - st.lane_x(st.tram_lane)) - 0.72) < 0.045
            mat[rails & road] = M.METAL
        lut = np.zeros(M.COUNT, np.uint16)
        for m, rgb in (
            (M.GRASS, GRASS),
            (M.PAVING, PAVING),
            (M.DIRT, DIRT),
            (M.CURB, CURB),
            (M.PAINT, PAINT),
            (M.METAL, METAL),
            (M.ASPHALT, self.asphalt),
        ):
            lut[m] = gb.colour(rgb)
        rows = slice(r0, cam.height)
        gb.depth[rows], gb.label[rows], gb.mat[rows], gb.cid[rows] = Z, label, mat, lut[mat]
        gb.shade[rows], gb.face[rows], gb.tu[rows], gb.tv[rows] = 1.0, F.GROUND, X, Z


@dataclass
class Far(SceneObject):
    """The horizon at 400 m: a skyline of distant buildings (``edges`` [40] as fractions of the image
    width, ``heights`` [41] metres) or, when ``edges`` is None, a tree line shaped by two noise offsets."""

    edges: np.ndarray | None
    heights: np.ndarray | None
    offsets: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Far:
        if rng.random() < 0.5:
            edges = rng.uniform(0.03, 0.12, size=40)
            return cls(edges, rng.uniform(15.0, 60.0, size=41))
        return cls(None, None, (rng.random(), rng.random()))

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        n = cam.width
        U = np.arange(n, dtype=np.float32)
        z = 400.0
        if self.edges is not None and self.heights is not None:  # skyline of distant buildings
            edges = np.cumsum(self.edges * n)
            hcol = self.heights[np.searchsorted(edges, U)]
            label, mat, alb = BUILDING, M.FAR, rgb255(150, 155, 165)
        else:  # tree line / hills
            o1, o2 = self.offsets
            hcol = 8.0 + 14.0 * (0.5 + 0.5 * noise_at(U[None, :], np.zeros((1, 1)), 0.15, o1)[0])
            hcol = hcol + 6.0 * noise_at(U[None, :], np.zeros((1, 1)), 1.3, o2)[0]
            label, mat, alb = VEGETATION, M.FOLIAGE, FOLIAGE * 0.8
        top = cam.cy - (hcol - cam.ch) * cam.f / z
        rows = np.arange(cam.height, dtype=np.float32)[:, None] + 0.5
        keep = (rows >= top[None, :]) & (rows <= cam.cy + 2.0)
        gb.write(
            0,
            0,
            keep,
            np.float32(z),
            label,
            mat,
            gb.colour(alb),
            np.float32(0.95),
            F.FAR,
            np.broadcast_to(U[None, :] * 0.5, keep.shape),
            np.broadcast_to(rows * 0.5, keep.shape),
        )
