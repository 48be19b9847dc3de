"""Street furniture on the sidewalks (sprites on a pole): street lamps (which light the ground at night),
traffic lights (one lamp on) and traffic signs (four kinds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codes import LIGHT, METAL, POLE, SIGN, SIGN_COLOURS, M, rgb255
from ..gbuffer import Camera, GBuffer
from ..raster import Light, SceneObject, draw_sprite
from ..shapes import capsule, ellipse, rect


@dataclass
class Lamp(SceneObject):
    """A street lamp at (x, z), ``h`` metres high, its head on an arm reaching ``arm`` metres along X."""

    x: float
    z: float
    h: float
    arm: float

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z: float, side: int) -> Lamp:
        h = rng.uniform(6.0, 9.0)
        return cls(x, z, h, -side * rng.uniform(1.0, 2.5))

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        z, h, arm = self.z, self.h, self.arm
        pw = cam.min_width(0.09, z)

        def parts(a, b):
            pole = capsule(a, b, (0, 0), (0, h), pw) | capsule(a, b, (0, h - 0.1), (arm, h + 0.2), pw * 0.7)
            head = ellipse(a, b, arm, h + 0.1, 0.45, cam.min_width(0.14, z))
            return [(pole, POLE, M.METAL, METAL * 0.8, 1.0), (head, POLE, M.LAMP, rgb255(200, 200, 190), 1.0)]

        draw_sprite(gb, cam, self.x, z, (min(arm, 0) - 0.6, max(arm, 0) + 0.6, 0, h + 0.6), parts)

    def light(self) -> Light:
        return Light(self.x + self.arm, self.z, 0.6 * self.h, rgb255(255, 210, 150) * 1.2)


@dataclass
class TrafficLight(SceneObject):
    """A traffic light at (x, z) on a pole ``h`` metres high; ``state`` 0, 1, 2 = red, amber, green on."""

    x: float
    z: float
    state: int
    h: float

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z: float, state: int) -> TrafficLight:
        return cls(x, z, state, rng.uniform(2.6, 3.6))

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        h, state = self.h, self.state
        pw = cam.min_width(0.07, self.z)
        colours = (rgb255(255, 40, 30), rgb255(255, 180, 20), rgb255(60, 255, 120))

        def parts(a, b):
            out = [
                (capsule(a, b, (0, 0), (0, h), pw), POLE, M.METAL, METAL * 0.7, 1.0),
                (rect(a, b, -0.18, 0.18, h - 0.2, h + 0.8), LIGHT, M.TL_HOUSING, rgb255(35, 35, 35), 1.0),
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

        draw_sprite(gb, cam, self.x, self.z, (-0.3, 0.3, 0, h + 0.9), parts)


@dataclass
class Sign(SceneObject):
    """A traffic sign at (x, z), its face ``h`` metres up, size ``s`` metres; ``kind`` 0 round
    prohibitory, 1 warning triangle, 2 blue information plate, 3 priority diamond."""

    x: float
    z: float
    h: float
    kind: int
    s: float

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z: float) -> Sign:
        h = rng.uniform(2.0, 2.8)
        kind = int(rng.integers(4))
        return cls(x, z, h, kind, rng.uniform(0.3, 0.45))

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        h, kind, s = self.h, self.kind, self.s
        pw = cam.min_width(0.05, self.z)

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

        draw_sprite(gb, cam, self.x, self.z, (-s - 0.1, s + 0.1, 0, h + 2.2 * s), parts)
