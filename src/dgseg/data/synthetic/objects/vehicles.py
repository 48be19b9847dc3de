"""Motor vehicles: cars (body and glass cabin boxes), trucks (cab and cargo boxes), buses and trams (a
long box with a window band; trams with a pantograph), and a car crossing the street (a side-view sprite).
Vehicles facing the camera cast headlight pools at night."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codes import BUS_COLOURS, CAR, CAR_COLOURS, GLASS, METAL, TRAIN, TRUCK, TYRE, F, M, rgb255
from ..gbuffer import Camera, GBuffer, Paint
from ..raster import Box, Light, SceneObject, draw_box, draw_sprite
from ..shapes import capsule, ellipse, superellipse


@dataclass
class Car(SceneObject):
    """A car centred on x, rear/front at z, ``w`` x ``length`` metres, body ``hb`` and cabin ``hc`` high."""

    x: float
    z: float
    facing_us: bool
    parked: bool
    w: float
    length: float
    hb: float
    hc: float
    colour: np.ndarray

    @classmethod
    def sample(
        cls, rng: np.random.Generator, x: float, z: float, facing_us: bool, parked: bool = False
    ) -> Car:
        w, length = rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.8)
        hb, hc = rng.uniform(0.95, 1.1), rng.uniform(1.4, 1.6)
        colour = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))] * rng.uniform(0.9, 1.05)
        return cls(x, z, facing_us, parked, w, length, hb, hc, colour)

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        x, z, facing_us, w, length, hb, hc, colour = (
            self.x,
            self.z,
            self.facing_us,
            self.w,
            self.length,
            self.hb,
            self.hc,
            self.colour,
        )
        x0, x1 = x - w / 2, x + w / 2
        wheel = 0.33
        light_mat = M.HEADLIGHT if facing_us else M.TAILLIGHT
        light_col = rgb255(240, 240, 220) if facing_us else rgb255(200, 20, 20)

        def body(face, a, b):
            p = Paint(gb, a, b, M.CAR_PAINT, colour)
            keep = True
            if face == F.FRONT:
                tyres = (a < 0.28) | (a > w - 0.28)
                keep = (b > 0.28) | tyres
                p.put((b <= 0.28) & tyres, M.TYRE, TYRE)
                p.put(((a < 0.35) | (a > w - 0.35)) & (b > 0.7) & (b < 0.86), light_mat, light_col)
                p.put((np.abs(a - w / 2) < 0.26) & (b > 0.42) & (b < 0.54), None, rgb255(235, 235, 235))
                p.darken((b > 0.28) & (b < 0.4), 0.55)
            elif face in (F.SIDE_L, F.SIDE_R):
                d1, d2 = (a - 0.9) ** 2 + (b - wheel) ** 2, (a - (length - 0.9)) ** 2 + (b - wheel) ** 2
                wheels = (d1 < wheel**2) | (d2 < wheel**2)
                keep = (b > 0.22) | wheels
                p.put(wheels, M.TYRE, TYRE).put((d1 < 0.02) | (d2 < 0.02), M.METAL, METAL)
                p.darken((b > 0.5) & (b < 0.54), 0.8)
            return p.result(keep)

        def cabin(face, a, b):
            p = Paint(gb, a, b, M.GLASS, GLASS)
            if face == F.TOP:
                return p.put(True, M.CAR_PAINT, colour).result()
            span = (w - 0.2) if face == F.FRONT else (length * 0.55)
            frame = (a < 0.1) | (a > span - 0.1) | (b > hc - 0.06)
            if face != F.FRONT:
                frame |= np.abs(a - span * 0.5) < 0.06
            return p.put(frame, M.CAR_PAINT, colour).result()

        zc0 = z + length * (0.28 if facing_us else 0.2)
        draw_box(gb, cam, Box(x0, x1, 0.0, hb, z, z + length, CAR, M.CAR_PAINT, colour, body))
        draw_box(
            gb,
            cam,
            Box(x0 + 0.1, x1 - 0.1, hb - 0.01, hc, zc0, zc0 + length * 0.55, CAR, M.GLASS, GLASS, cabin),
        )

    def light(self) -> Light | None:
        if self.facing_us and not self.parked:
            return Light(self.x, self.z - 5.0, 4.0, rgb255(255, 250, 230) * 1.0)
        return None


@dataclass
class Truck(SceneObject):
    """A truck centred on x from z: a cab (``cab_col``) and a cargo box ``cargo`` metres long, ``h`` high."""

    x: float
    z: float
    facing_us: bool
    h: float
    cargo: float
    colour: np.ndarray
    cab_col: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z: float, facing_us: bool) -> Truck:
        h, cargo = rng.uniform(3.2, 3.9), rng.uniform(5.5, 9.0)
        colour = [rgb255(230, 230, 230), rgb255(60, 90, 150), rgb255(180, 40, 30), rgb255(90, 100, 90)][
            int(rng.integers(4))
        ]
        cab_col = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))]
        return cls(x, z, facing_us, h, cargo, colour, cab_col)

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        z, h, cargo, colour, cab_col = self.z, self.h, self.cargo, self.colour, self.cab_col
        w = 2.5
        x0 = self.x - w / 2

        def cargo_deco(face, a, b):
            p = Paint(gb, a, b, M.CAR_PAINT, colour)
            keep = b > 0.9
            if face == F.FRONT:
                keep = keep | (b > 0.5) & ((a < 0.35) | (a > w - 0.35))
                p.darken(np.abs(a - w / 2) < 0.03, 0.5)
                p.put((b > 0.95) & (b < 1.15) & ((a < 0.3) | (a > w - 0.3)), M.TAILLIGHT, rgb255(200, 20, 20))
                p.put(b <= 0.9, M.TYRE, TYRE)
            elif face in (F.SIDE_L, F.SIDE_R):
                wheels = ((a - (cargo - 1.2)) ** 2 + (b - 0.5) ** 2 < 0.25) | (
                    (a - (cargo - 2.3)) ** 2 + (b - 0.5) ** 2 < 0.25
                )
                keep = keep | wheels
                p.put(wheels, M.TYRE, TYRE).darken((b > 0.9) & (b < 1.05), 0.6)
            return p.result(keep)

        def cab_deco(face, a, b):
            p = Paint(gb, a, b, M.CAR_PAINT, cab_col)
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
                p.put(
                    (b > 0.7) & (b < 0.9) & ((a < 0.35) | (a > w - 0.35)), M.HEADLIGHT, rgb255(240, 240, 220)
                )
            return p.result(keep)

        if self.facing_us:
            draw_box(gb, cam, Box(x0, x0 + w, 0, 2.9, z, z + 2.3, TRUCK, M.CAR_PAINT, cab_col, cab_deco))
            draw_box(
                gb,
                cam,
                Box(x0, x0 + w, 0, h, z + 2.4, z + 2.4 + cargo, TRUCK, M.CAR_PAINT, colour, cargo_deco),
            )
        else:
            draw_box(gb, cam, Box(x0, x0 + w, 0, h, z, z + cargo, TRUCK, M.CAR_PAINT, colour, cargo_deco))
            cab_z0, cab_z1 = z + cargo + 0.1, z + cargo + 2.4
            draw_box(gb, cam, Box(x0, x0 + w, 0, 2.9, cab_z0, cab_z1, TRUCK, M.CAR_PAINT, cab_col, cab_deco))

    def light(self) -> Light | None:
        return Light(self.x, self.z - 6.0, 5.0, rgb255(255, 250, 230)) if self.facing_us else None


@dataclass
class LongVehicle(SceneObject):
    """A bus (``label`` BUS) or a tram (``label`` TRAIN) centred on x from z: a long box ``w`` x ``h``
    x ``length`` metres with a band of windows and doors; a tram also has a pantograph on its roof."""

    x: float
    z: float
    label: int
    facing_us: bool
    w: float
    h: float
    length: float
    colour: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z: float, label: int, facing_us: bool) -> LongVehicle:
        r = rng
        tram = label == TRAIN
        w = 2.65 if tram else 2.55
        h = 3.5 if tram else r.uniform(3.0, 3.3)
        length = r.uniform(20.0, 32.0) if tram else r.uniform(11.0, 13.0)
        colour = (
            (rgb255(220, 220, 210) if r.random() < 0.5 else rgb255(200, 40, 40))
            if tram
            else BUS_COLOURS[int(r.integers(len(BUS_COLOURS)))]
        )
        return cls(x, z, label, facing_us, w, h, length, colour)

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        x, z, label, facing_us, w, h, length, colour = (
            self.x,
            self.z,
            self.label,
            self.facing_us,
            self.w,
            self.h,
            self.length,
            self.colour,
        )
        tram = label == TRAIN
        stripe = rgb255(40, 40, 45)
        x0 = x - w / 2

        def deco(face, a, b):
            p = Paint(gb, a, b, M.CAR_PAINT, colour)
            keep = b > (0.35 if not tram else 0.45)
            if face == F.FRONT:
                glass = (b > (1.0 if facing_us else 1.7)) & (b < h - 0.35) & (a > 0.15) & (a < w - 0.15)
                if tram:
                    p.put((b > 0.5) & (b < 0.9), None, stripe)
                p.put(
                    (b > 0.6) & (b < 0.85) & ((a < 0.35) | (a > w - 0.35)),
                    M.HEADLIGHT if facing_us else M.TAILLIGHT,
                    rgb255(240, 240, 220) if facing_us else rgb255(200, 20, 20),
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

        draw_box(gb, cam, Box(x0, x0 + w, 0.0, h, z, z + length, label, M.CAR_PAINT, colour, deco))
        if tram:  # pantograph on the roof
            zp = z + 3.0
            pw = cam.min_width(0.04, zp)

            def panto(a, b):
                m = capsule(a, b, (-0.4, h), (0.0, h + 1.0), pw) | capsule(a, b, (0.4, h), (0.0, h + 1.0), pw)
                m |= capsule(a, b, (-0.7, h + 1.0), (0.7, h + 1.0), pw)
                return [(m, TRAIN, M.METAL, rgb255(60, 60, 60), 1.0)]

            draw_sprite(gb, cam, x, zp, (-0.8, 0.8, h, h + 1.1), panto)

    def light(self) -> Light | None:
        return Light(self.x, self.z - 6.0, 5.0, rgb255(255, 250, 230)) if self.facing_us else None


@dataclass
class CrossingCar(SceneObject):
    """A car driving along the crossing street, seen from the side: centred on x at depth z, ``length``
    metres long, heading ``d`` (+1 right, -1 left)."""

    x: float
    z: float
    length: float
    colour: np.ndarray
    d: int

    @classmethod
    def sample(cls, rng: np.random.Generator, x: float, z: float) -> CrossingCar:
        length = rng.uniform(3.9, 4.6)
        colour = CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))]
        return cls(x, z, length, colour, int(rng.choice([-1, 1])))

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        length, colour, d, w = self.length, self.colour, self.d, 1.8

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

        draw_sprite(gb, cam, self.x, self.z + w / 2, (-length / 2, length / 2, 0, 1.5), parts)
