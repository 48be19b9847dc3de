"""Scene layout: what stands where in one street, a pure function of ``(seed, split, index)`` and
independent of the image size. :func:`make_layout` samples the camera rig and the street, then places the
ground, the far background, buildings and gaps between them, street furniture, pedestrians and (in
:mod:`.traffic`) the vehicles, each object with its look already sampled. Objects are listed in drawing
order; nothing is drawn here (see :mod:`.scene`)."""

from __future__ import annotations

import numpy as np

from .codes import BUILDING_COLOURS
from .objects.buildings import Building, Facade, Fence, Railing, Wall
from .objects.furniture import Lamp, Sign, TrafficLight
from .objects.ground import Far, Ground
from .objects.people import Person, TwoWheeler
from .objects.plants import Hedge, Tree
from .raster import SceneObject
from .street import CameraRig, Layout, Street
from .traffic import crossing_vehicle, traffic

SPLITS = {"train": 0, "val": 1, "test": 2}


def make_layout(seed: int = 0, split: str = "train", index: int = 0) -> Layout:
    """The layout of scene ``index`` of ``split`` for ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"synthetic split '{split}' unknown; expected one of {list(SPLITS)}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([int(seed), SPLITS[split], int(index)])
    rig = CameraRig.sample(rng)
    key = int(rng.integers(1 << 30))
    out = Layout(int(seed), split, int(index), rig, Street.sample(rng), key)
    place_street(rng, out)
    return out


def place_street(rng: np.random.Generator, out: Layout) -> None:
    """Everything in the street, in drawing order: ground, background, buildings, furniture, people,
    traffic."""
    r, st = rng, out.street
    tram = r.random() < 0.28
    if tram:
        st.tram_lane = int(r.integers(st.n_lanes))
    out.add(Ground.sample(r, st))
    out.add(Far.sample(r))
    if r.random() < 0.6:  # buildings closing the street
        x = -r.uniform(40.0, 80.0)
        while x < 80.0:
            wdt = r.uniform(8.0, 25.0)
            if r.random() < 0.85:
                colour = BUILDING_COLOURS[int(r.integers(len(BUILDING_COLOURS)))]
                facade = Facade(
                    colour, r.random() < 0.3, 3.2, 1.3, 3.0, False, out.facade_key(int(r.integers(1000)))
                )
                out.add(Building(x, x + wdt, r.uniform(8, 35), st.z_end, st.z_end + 15, facade))
            else:
                out.add(Tree.sample(r, x + wdt / 2, st.z_end + 2))
            x += wdt
    for side in (-1, 1):
        place_buildings(r, out, side)
    for side in (-1, 1):
        place_furniture(r, out, side)
    if st.cross is not None:
        c0, w = st.cross
        for xs, zs in (
            (st.xr + 0.7, c0 - 2.5),
            (st.xl - 0.7, c0 - 2.5),
            (st.xr + 0.7, c0 + w + 2.0),
            (st.xl - 0.7, c0 + w + 2.0),
        ):
            if r.random() < 0.8:
                out.add(TrafficLight.sample(r, xs, zs, int(r.integers(3))))
        for _ in range(int(r.integers(0, 4))):  # pedestrians on the crosswalk
            out.add(
                Person.sample(
                    r,
                    r.uniform(st.xl, st.xr),
                    c0 - r.uniform(1.2, 3.8),
                    side_view=True,
                    direction=int(r.choice([-1, 1])),
                )
            )
        if r.random() < 0.5:  # a vehicle crossing: side view of a car
            crossing_vehicle(r, out, c0 + w / 2)
    elif r.random() < 0.5:
        out.add(TrafficLight.sample(r, st.xr + 0.7, r.uniform(10, 40), int(r.integers(3))))
    place_people(r, out)
    traffic(r, out, tram)


def place_buildings(rng: np.random.Generator, out: Layout, side: int) -> None:
    """Buildings along one side of the street (``side`` -1 left, +1 right), with gaps between them."""
    r, st = rng, out.street
    line = (st.xr + st.sw_r) if side > 0 else (st.xl - st.sw_l)
    urban = r.random() < 0.8
    z = r.uniform(-8.0, 2.0)
    bid = 0
    while z < st.z_end + 5:
        length = r.uniform(8.0, 28.0)
        if st.in_cross(z, z + length):
            assert st.cross is not None
            z = st.cross[0] + st.cross[1] + r.uniform(0.5, 3.0)
            continue
        if urban and r.random() < 0.8:
            setback = r.uniform(0.0, 1.5) if r.random() < 0.7 else r.uniform(2.0, 6.0)
            h = r.uniform(7.0, 28.0)
            depth = r.uniform(10.0, 20.0)
            bid += 1
            colour = BUILDING_COLOURS[int(r.integers(len(BUILDING_COLOURS)))] * r.uniform(0.85, 1.1)
            facade = Facade(
                colour,
                r.random() < 0.35,
                r.uniform(2.9, 3.6),
                r.uniform(0.9, 1.6),
                r.uniform(2.2, 3.6),
                r.random() < 0.4,
                out.facade_key(bid + side * 100),
            )
            x0 = line + setback if side > 0 else line - setback - depth
            out.add(Building(x0, x0 + depth, h, z, z + length, facade))
            if setback > 1.8:
                out.add(hedge_or_wall(r, line + side * 0.3, z + 0.5, z + length - 0.5))
        else:
            place_gap(r, out, side, line, z, z + length)
        z += length + (r.uniform(0.0, 0.4) if r.random() < 0.75 else r.uniform(3.0, 12.0))


def place_gap(rng: np.random.Generator, out: Layout, side: int, line: float, z0: float, z1: float) -> None:
    """A gap between buildings from z0 to z1: a wall, fence or hedge, trees, maybe a building set back."""
    r = rng
    kind = r.choice(4, p=[0.3, 0.3, 0.2, 0.2])
    xb = line + side * r.uniform(0.2, 1.5)
    if kind == 0:
        out.add(Wall.sample(r, xb, z0, z1, r.uniform(1.0, 3.0)))
    elif kind == 1:
        out.add(Fence.sample(r, xb, z0, z1, r.uniform(1.0, 2.2)))
    elif kind == 2:
        out.add(hedge_or_wall(r, xb, z0, z1))
    for zt in np.arange(z0 + r.uniform(1, 4), z1, r.uniform(5.0, 9.0)):
        out.add(Tree.sample(r, xb + side * r.uniform(1.0, 6.0), zt))
    if r.random() < 0.6:  # a building set far back
        h, d = r.uniform(8.0, 25.0), r.uniform(8.0, 16.0)
        x0 = xb + side * r.uniform(10.0, 25.0)
        x0 = x0 if side > 0 else x0 - d
        colour = BUILDING_COLOURS[int(r.integers(len(BUILDING_COLOURS)))]
        facade = Facade(colour, False, 3.2, 1.2, 3.0, False, out.facade_key(int(r.integers(1000))))
        out.add(Building(x0, x0 + d, h, z0, z1 + r.uniform(0, 10), facade))


def hedge_or_wall(rng: np.random.Generator, x: float, z0: float, z1: float) -> SceneObject:
    """A low wall or a hedge along x from z0 to z1, even odds."""
    if rng.random() < 0.5:
        return Wall.sample(rng, x, z0, z1, rng.uniform(0.8, 1.8))
    return Hedge.sample(rng, x, z0, z1)


def place_furniture(rng: np.random.Generator, out: Layout, side: int) -> None:
    """Street lamps, trees, a railing and signs on one sidewalk (``side`` -1 left, +1 right)."""
    r, st = rng, out.street
    curb = st.xr + 0.6 if side > 0 else st.xl - 0.6
    outer = (st.xr + st.sw_r - 0.6) if side > 0 else (st.xl - st.sw_l + 0.6)
    if r.random() < 0.75:
        spacing = r.uniform(18.0, 30.0)
        for zl in np.arange(r.uniform(3.0, 15.0), st.z_end, spacing):
            if not st.in_cross(zl - 1, zl + 1):
                out.add(Lamp.sample(r, curb, zl, side))
    if r.random() < 0.6:
        for zt in np.arange(r.uniform(4.0, 10.0), st.z_end, r.uniform(7.0, 14.0)):
            if not st.in_cross(zt - 2, zt + 2):
                out.add(Tree.sample(r, outer if r.random() < 0.5 else curb + side * 0.6, zt))
    if r.random() < 0.25:
        z0 = r.uniform(2.0, 20.0)
        z1 = z0 + r.uniform(8.0, 30.0)
        if not st.in_cross(z0, z1):
            out.add(Railing(curb - side * 0.35, z0, z1))
    for _ in range(int(r.integers(0, 3))):
        zs = r.uniform(6.0, 60.0)
        if not st.in_cross(zs - 1, zs + 1):
            out.add(Sign.sample(r, curb, zs))


def place_people(rng: np.random.Generator, out: Layout) -> None:
    """A sign by the road, pedestrians on the sidewalks and parked bicycles/motorcycles."""
    r, st = rng, out.street
    if r.random() < 0.7:
        out.add(Sign.sample(r, st.xr + 0.6, r.uniform(5.0, 35.0)))
    for _ in range(int(r.integers(1, 9))):
        side = 1 if r.random() < 0.5 else -1
        lo, hi = (st.xr + 0.4, st.xr + st.sw_r - 0.3) if side > 0 else (st.xl - st.sw_l + 0.3, st.xl - 0.4)
        zp = r.uniform(4.0, 50.0)
        if not st.in_cross(zp, zp):
            out.add(
                Person.sample(
                    r, r.uniform(lo, hi), zp, side_view=r.random() < 0.5, direction=int(r.choice([-1, 1]))
                )
            )
    for _ in range(int(r.integers(0, 3)) if r.random() < 0.45 else 0):
        side = 1 if r.random() < 0.5 else -1
        xb = st.xr + st.sw_r - 0.5 if side > 0 else st.xl - st.sw_l + 0.5
        zb = r.uniform(4.0, 30.0)
        out.add(
            TwoWheeler.sample(
                r,
                xb,
                zb,
                motor=r.random() < 0.4,
                rider=False,
                side_view=True,
                direction=int(r.choice([-1, 1])),
            )
        )
