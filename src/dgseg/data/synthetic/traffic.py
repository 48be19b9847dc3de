"""Traffic placement (part of the layout): a tram on its rails, buses, trucks and cars in the lanes without
overlapping, cars parked along the curbs, cyclists and motorcyclists, and the vehicle crossing at the
crossing street."""

from __future__ import annotations

import numpy as np

from .codes import BUS, TRAIN
from .objects.people import TwoWheeler
from .objects.vehicles import Car, CrossingCar, LongVehicle, Truck
from .street import Layout


def crossing_vehicle(rng: np.random.Generator, out: Layout, z: float) -> None:
    """A car (side view) or a two-wheeler with a rider driving along the crossing street at depth z."""
    r, st = rng, out.street
    x = r.uniform(st.xl - 8.0, st.xr + 8.0)
    if r.random() < 0.65:
        out.add(CrossingCar.sample(r, x, z))
    else:
        motor = r.random() < 0.5
        out.add(
            TwoWheeler.sample(
                r, x, z, motor=motor, rider=True, side_view=True, direction=int(r.choice([-1, 1]))
            )
        )


def traffic(rng: np.random.Generator, out: Layout, tram: bool) -> None:
    """Vehicles in the lanes (lanes [0, oncoming) face the camera), parked cars, two-wheelers."""
    r, st = rng, out.street
    occupied: list[tuple[int, float, float]] = []

    def free(lane: int, z0: float, z1: float) -> bool:
        return all(not (lane == ln and z1 > a - 2.0 and z0 < b + 2.0) for ln, a, b in occupied)

    def place(lane: int, length: float, lo: float = 6.0, hi: float = 80.0) -> float | None:
        for _ in range(6):
            z = r.uniform(lo, hi)
            if free(lane, z, z + length) and not st.in_cross(z, z + length):
                occupied.append((lane, z, z + length))
                return z
        return None

    if tram and st.tram_lane is not None:
        z = place(st.tram_lane, 30.0, 10.0, 60.0)
        if z is not None:
            out.add(LongVehicle.sample(r, st.lane_x(st.tram_lane), z, TRAIN, st.tram_lane < st.oncoming))
    if r.random() < 0.45:
        lane = int(r.integers(st.n_lanes))
        z = place(lane, 13.0, 10.0, 70.0)
        if z is not None:
            out.add(LongVehicle.sample(r, st.lane_x(lane) + r.uniform(-0.2, 0.2), z, BUS, lane < st.oncoming))
    for _ in range(int(r.integers(0, 3)) if r.random() < 0.55 else 0):
        lane = int(r.integers(st.n_lanes))
        z = place(lane, 11.0, 8.0, 80.0)
        if z is not None:
            out.add(Truck.sample(r, st.lane_x(lane) + r.uniform(-0.2, 0.2), z, lane < st.oncoming))
    for _ in range(int(r.integers(1, 8))):
        lane = int(r.integers(st.n_lanes))
        z = place(lane, 5.0, 5.0, 80.0)
        if z is not None:
            out.add(Car.sample(r, st.lane_x(lane) + r.uniform(-0.3, 0.3), z, lane < st.oncoming))
    # parked cars along the curbs (in the outermost lanes)
    for side in (-1, 1):
        if r.random() < 0.55:
            x = st.xr - 1.1 if side > 0 else st.xl + 1.1
            lane = st.n_lanes - 1 if side > 0 else 0
            z = r.uniform(3.0, 10.0)
            while z < 60.0:
                length = 5.0
                if r.random() < 0.7 and free(lane, z, z + length) and not st.in_cross(z, z + length):
                    occupied.append((lane, z, z + length))
                    out.add(Car.sample(r, x, z, facing_us=False, parked=True))
                z += length + r.uniform(0.5, 6.0)
    # cyclists and motorcyclists in the road
    for _ in range(int(r.integers(1, 3)) if r.random() < 0.6 else 0):
        motor = r.random() < 0.45
        lane = st.n_lanes - 1 if not motor else int(r.integers(st.n_lanes))
        xr = st.lane_x(lane) + (1.0 if not motor else r.uniform(-0.5, 0.5))
        z = place(lane, 2.5, 5.0, 45.0)
        if z is not None:
            out.add(TwoWheeler.sample(r, xr, z, motor=motor, rider=True, side_view=False, direction=1))
