"""The street's frame, sampled first by the layout: the camera rig (independent of the image size) and the
cross-section of the street (lanes, sidewalks, an optional crossing street, the end of the street); and
:class:`Layout`, the container the placement functions (:mod:`.layout`, :mod:`.traffic`) fill."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .gbuffer import Camera
from .raster import Light, SceneObject

LANE_WIDTH = 3.3  # metres


@dataclass
class CameraRig:
    """The camera as sampled: focal length as a factor of 0.85 W, principal column offset (fraction of W),
    horizon row (fraction of H), height above the road (metres). :meth:`camera` sizes it for an image."""

    focal: float
    shift: float
    horizon: float
    height_m: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> CameraRig:
        return cls(
            rng.uniform(0.88, 1.12), rng.uniform(-0.06, 0.06), rng.uniform(0.36, 0.47), rng.uniform(1.3, 1.8)
        )

    def camera(self, height: int, width: int) -> Camera:
        return Camera(
            height,
            width,
            f=0.85 * width * self.focal,
            cx=width * (0.5 + self.shift),
            cy=height * self.horizon,
            ch=self.height_m,
        )


@dataclass
class Street:
    """Street geometry in metres (X right, Z ahead): the road spans [xl, xr] in ``n_lanes`` lanes of
    ``lane_w``; lanes [0, oncoming) come towards the camera; sidewalks of widths sw_l / sw_r; the street
    ends at z_end; ``cross`` = (z start, width) of a crossing street or None; ``tram_lane`` the lane
    with tram rails or None."""

    n_lanes: int
    lane_w: float
    xl: float
    xr: float
    sw_l: float
    sw_r: float
    z_end: float
    cross: tuple[float, float] | None
    oncoming: int
    tram_lane: int | None = None

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Street:
        r, lane = rng, LANE_WIDTH
        n_lanes = int(r.integers(2, 5))
        ego = n_lanes - 1 if r.random() < 0.7 else int(r.integers(0, n_lanes))
        xl = -(ego + 0.5) * lane + r.uniform(-0.5, 0.5)
        xr = xl + n_lanes * lane
        sw_l, sw_r = r.uniform(2.0, 5.0), r.uniform(2.0, 5.0)
        z_end = r.uniform(70.0, 170.0)
        cross = (r.uniform(18.0, 60.0), r.uniform(9.0, 16.0)) if r.random() < 0.55 else None
        oncoming = n_lanes // 2 if n_lanes > 1 else 0
        return cls(n_lanes, lane, xl, xr, sw_l, sw_r, z_end, cross, oncoming)

    def in_cross(self, z0: float, z1: float) -> bool:
        """Whether [z0, z1] overlaps the crossing street (with a metre to spare)."""
        if self.cross is None:
            return False
        c0, w = self.cross
        return z1 > c0 - 1.0 and z0 < c0 + w + 1.0

    def lane_x(self, i: int) -> float:
        """X of the centre of lane i."""
        return self.xl + (i + 0.5) * self.lane_w


@dataclass
class Layout:
    """One street: the camera rig, the street's cross-section, the objects in drawing order and the
    lights they cast; ``key`` seeds which windows are lit."""

    seed: int
    split: str
    index: int
    rig: CameraRig
    street: Street
    key: int
    objects: list[SceneObject] = field(default_factory=list)
    lights: list[Light] = field(default_factory=list)

    def add(self, obj: SceneObject) -> None:
        """Place an object (drawn after those placed before it) and keep its light, if any."""
        self.objects.append(obj)
        light = obj.light()
        if light is not None:
            self.lights.append(light)

    def facade_key(self, bid: int) -> int:
        return self.key + bid * 7919
