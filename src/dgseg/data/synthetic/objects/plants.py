"""Vegetation: trees (a sprite: trunk and a noisy three-lobed crown) and hedges (a box with a ragged top)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codes import BARK, FOLIAGE, VEGETATION, M
from ..gbuffer import Camera, GBuffer
from ..raster import Box, SceneObject, draw_box, draw_sprite
from ..shapes import capsule, ellipse, noise_at


@dataclass
class Tree(SceneObject):
    """A tree at (x, z): trunk ``trunk_h`` metres, crown radius ``crown_r`` metres, noise offset ``off``."""

    x: float
    z: float
    trunk_h: float
    crown_r: float
    off: float
    shade_col: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z: float) -> Tree:
        trunk_h, crown_r = rng.uniform(1.8, 3.5), rng.uniform(1.3, 3.0)
        off = rng.random()
        return cls(x, z, trunk_h, crown_r, off, FOLIAGE * rng.uniform(0.8, 1.2))

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        crown_r, off, shade_col = self.crown_r, self.off, self.shade_col
        cb = self.trunk_h + crown_r * 0.8
        tw = cam.min_width(0.13, self.z)

        def parts(a, b):
            n = noise_at(a, b, 3.0, off)
            crown = ellipse(a, b, 0, cb, crown_r * (1 + 0.18 * n), crown_r * 0.9 * (1 + 0.18 * n))
            crown |= ellipse(a, b, crown_r * 0.45, cb - crown_r * 0.3, crown_r * 0.7, crown_r * 0.6)
            crown |= ellipse(a, b, -crown_r * 0.45, cb - crown_r * 0.2, crown_r * 0.7, crown_r * 0.6)
            shade = 0.75 + 0.3 * np.clip((b - cb) / crown_r + 0.5, 0, 1) + 0.1 * n
            return [
                (capsule(a, b, (0, 0), (0.05, cb), tw), VEGETATION, M.BARK, BARK, 1.0),
                (crown, VEGETATION, M.FOLIAGE, shade_col, shade),
            ]

        extent = (-1.6 * crown_r, 1.6 * crown_r, 0, cb + crown_r * 1.3)
        draw_sprite(gb, cam, self.x, self.z, extent, parts)


@dataclass
class Hedge(SceneObject):
    """A hedge 1 m thick centred on x, from z0 to z1, about ``h`` metres high (noise offset ``off``)."""

    x: float
    z0: float
    z1: float
    h: float
    off: float

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z0: float, z1: float) -> Hedge:
        h = rng.uniform(0.8, 1.8)
        return cls(x, z0, z1, h, rng.random())

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        h, off = self.h, self.off

        def deco(face, a, b):
            n = noise_at(a, b * 0 + off * 10, 1.7, off)
            return b < h - 0.25 + 0.25 * n, M.FOLIAGE, gb.colour(FOLIAGE * 0.9), 1.0 + 0.1 * n

        x = self.x
        box = Box(x - 0.5, x + 0.5, 0.0, h, self.z0, self.z1, VEGETATION, M.FOLIAGE, FOLIAGE, deco)
        draw_box(gb, cam, box)
