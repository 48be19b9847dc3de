"""Built structures along the street: buildings with window facades, walls, fences and curb railings
(each a :class:`~..raster.Box` with a face decoration)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codes import BUILDING, FENCE, GLASS, WALL, F, M, rgb255
from ..gbuffer import Camera, GBuffer, Paint
from ..raster import Box, Decorate, SceneObject, draw_box
from ..shapes import cell_hash


@dataclass
class Facade:
    """Windows in floors of ``floor_h`` metres, ``win_w`` wide every ``spacing`` metres (a shop front
    on the ground floor when ``shop``), brick or plaster walls; which windows are lit follows ``key``."""

    colour: np.ndarray
    brick: bool
    floor_h: float
    win_w: float
    spacing: float
    shop: bool
    key: int

    def decorate(self, gb: GBuffer) -> Decorate:
        colour, floor_h, win_w, spacing, shop, key = (
            self.colour,
            self.floor_h,
            self.win_w,
            self.spacing,
            self.shop,
            self.key,
        )
        wall_mat = M.BRICK if self.brick else M.PLASTER

        def decorate(face: int, a: np.ndarray, b: np.ndarray):
            p = Paint(gb, a, b, wall_mat, colour)
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
            lit = cell_hash(fa, floor, key) < 0.35
            p.put(win, M.WINDOW, GLASS * 0.8).put(win & lit, M.WINDOW_LIT)
            return p.darken((vb < 0.18) & (floor >= 1) & ~win, 0.82).result()

        return decorate


@dataclass
class Building(SceneObject):
    """A building [x0, x1] x [0, h] x [z0, z1] (metres) with a facade on every side."""

    x0: float
    x1: float
    h: float
    z0: float
    z1: float
    facade: Facade

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        box = Box(self.x0, self.x1, 0.0, self.h, self.z0, self.z1, BUILDING, M.PLASTER, self.facade.colour)
        box.decorate = self.facade.decorate(gb)
        draw_box(gb, cam, box)


@dataclass
class Wall(SceneObject):
    """A concrete wall 0.3 m thick centred on x, from z0 to z1, ``h`` metres high, with a darker top."""

    x: float
    z0: float
    z1: float
    h: float
    colour: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z0: float, z1: float, h: float) -> Wall:
        return cls(x, z0, z1, h, rgb255(175, 170, 160) * rng.uniform(0.8, 1.1))

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        h, colour = self.h, self.colour

        def deco(face, a, b):
            return Paint(gb, a, b, M.CONCRETE, colour).darken(b > h - 0.12, 0.8).result()

        x = self.x
        draw_box(gb, cam, Box(x - 0.15, x + 0.15, 0.0, h, self.z0, self.z1, WALL, M.CONCRETE, colour, deco))


@dataclass
class Fence(SceneObject):
    """A wooden (slats) or metal (bars) fence along x from z0 to z1, ``h`` metres high, posts every
    ``post`` metres, slats/bars every ``bar`` metres."""

    x: float
    z0: float
    z1: float
    h: float
    wooden: bool
    colour: np.ndarray
    post: float
    bar: float

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z0: float, z1: float, h: float) -> Fence:
        wooden = rng.random() < 0.4
        colour = rgb255(140, 100, 60) if wooden else rgb255(100, 110, 105) * rng.uniform(0.7, 1.2)
        post, bar = rng.uniform(2.0, 3.0), rng.uniform(0.14, 0.3)
        return cls(x, z0, z1, h, wooden, colour, post, bar)

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        x, z0, z1, h, wooden, colour, post, bar = (
            self.x,
            self.z0,
            self.z1,
            self.h,
            self.wooden,
            self.colour,
            self.post,
            self.bar,
        )
        mat = M.WOOD if wooden else M.METAL
        zmid = max(0.5 * (z0 + z1), 1.0)
        wbar = cam.min_width(0.045, zmid)

        def deco(face, a, b):
            keep = ((a % post) < cam.min_width(0.08, zmid)) | (b > h - 0.08) | ((b > 0.12) & (b < 0.2))
            if wooden:
                keep |= (a % bar) < bar * 0.7
            else:
                keep |= (a % bar) < wbar
            return keep, mat, gb.colour(colour), 1.0

        draw_box(gb, cam, Box(x - 0.03, x + 0.03, 0.0, h, z0, z1, FENCE, mat, colour, deco))


@dataclass
class Railing(SceneObject):
    """A low metal fence along the curb at x, from z0 to z1."""

    x: float
    z0: float
    z1: float

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        x, z0, z1 = self.x, self.z0, self.z1
        colour = rgb255(150, 150, 140)
        zmid = max(z0 + 5.0, 1.0)

        def deco(face, a, b):
            keep = ((a % 2.0) < cam.min_width(0.06, zmid)) | (b > 0.95) | ((b > 0.45) & (b < 0.52))
            return keep, M.METAL, gb.colour(colour), 1.0

        draw_box(gb, cam, Box(x - 0.03, x + 0.03, 0.0, 1.0, z0, z1, FENCE, M.METAL, colour, deco))
