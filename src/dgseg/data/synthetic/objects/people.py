"""People: pedestrians (front or side view, walking) and two-wheelers (bicycles and motorcycles, seen from
the side or from behind, parked or with a rider), all sprites."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codes import (
    BICYCLE,
    CAR_COLOURS,
    CLOTH_COLOURS,
    MOTORCYCLE,
    PERSON,
    RIDER,
    SKIN_COLOURS,
    TYRE,
    M,
    rgb255,
)
from ..gbuffer import Camera, GBuffer
from ..raster import SceneObject, draw_sprite
from ..shapes import capsule, ellipse, rect, ring, superellipse


@dataclass
class Person(SceneObject):
    """A pedestrian at (x, z), ``h`` metres tall, facing the camera or (``side_view``) walking towards
    ``direction`` (+1 right, -1 left) with a stride of ``stride`` metres."""

    x: float
    z: float
    side_view: bool
    direction: int
    h: float
    top: np.ndarray
    trousers: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    stride: float
    bag: bool

    @classmethod
    def sample(
        cls, rng: np.random.Generator, x: float, z: float, side_view: bool = False, direction: int = 1
    ) -> Person:
        r = rng
        h = r.uniform(1.55, 1.95)
        top, trousers = (CLOTH_COLOURS[int(i)] for i in r.integers(len(CLOTH_COLOURS), size=2))
        skin = SKIN_COLOURS[int(r.integers(len(SKIN_COLOURS)))]
        hair = rgb255(40, 30, 20) * r.uniform(0.6, 2.5)
        stride = r.uniform(0.0, 0.18) * h
        bag = r.random() < 0.3
        return cls(x, z, side_view, direction, h, top, trousers, skin, hair, stride, bag)

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        side_view, direction, h, top, trousers, skin, hair, stride, bag = (
            self.side_view,
            self.direction,
            self.h,
            self.top,
            self.trousers,
            self.skin,
            self.hair,
            self.stride,
            self.bag,
        )
        lw = cam.min_width(0.04 * h, self.z)

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
                    (
                        rect(a, b, 0.1 * h, 0.24 * h, 0.4 * h, 0.55 * h),
                        PERSON,
                        M.CLOTH,
                        rgb255(60, 40, 30),
                        1.0,
                    )
                )
            return out

        draw_sprite(gb, cam, self.x, self.z, (-0.3 * h, 0.3 * h, 0, h), parts)


@dataclass
class TwoWheeler(SceneObject):
    """A bicycle or (``motor``) a motorcycle at (x, z), with or without a rider; seen from the side
    heading ``direction`` (+1 right, -1 left) or from behind."""

    x: float
    z: float
    motor: bool
    rider: bool
    side_view: bool
    direction: int
    frame_col: np.ndarray
    top: np.ndarray
    trousers: np.ndarray
    skin: np.ndarray
    helmet: np.ndarray

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        x: float,
        z: float,
        motor: bool,
        rider: bool,
        side_view: bool,
        direction: int,
    ) -> TwoWheeler:
        r = rng
        frame_col = CAR_COLOURS[int(r.integers(len(CAR_COLOURS)))]
        top = CLOTH_COLOURS[int(r.integers(len(CLOTH_COLOURS)))]
        trousers = CLOTH_COLOURS[int(r.integers(len(CLOTH_COLOURS)))]
        skin = SKIN_COLOURS[int(r.integers(len(SKIN_COLOURS)))]
        helmet = CAR_COLOURS[int(r.integers(len(CAR_COLOURS)))]
        return cls(x, z, motor, rider, side_view, direction, frame_col, top, trousers, skin, helmet)

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        z, motor, rider, side_view = self.z, self.motor, self.rider, self.side_view
        frame_col, top, trousers, skin, helmet = (
            self.frame_col,
            self.top,
            self.trousers,
            self.skin,
            self.helmet,
        )
        label = MOTORCYCLE if motor else BICYCLE
        d = self.direction
        wr = 0.32 if motor else 0.34
        hub = 0.7 if motor else 0.55
        t = cam.min_width(0.1 if motor else 0.045, z)
        ft = cam.min_width(0.035, z)

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
                        (lamp, label, M.TAILLIGHT, rgb255(200, 20, 20), 1.0),
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
                            helmet if motor else rgb255(50, 35, 25),
                            1.0,
                        ),
                    ]
            return out

        span = 1.2 if side_view else 0.5
        draw_sprite(gb, cam, self.x, z, (-span, span, 0, 1.9), parts)
