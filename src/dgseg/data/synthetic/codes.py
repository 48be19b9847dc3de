"""The vocabulary every stage shares: label IDs (the 19 Cityscapes train IDs), material and face codes of
the G-buffer, and the base colours the objects are painted with (RGB 0..1)."""

from __future__ import annotations

import numpy as np

from ..labels import CLASSES

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR,
 TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(19)  # fmt: skip
assert CLASSES[SKY] == "sky" and CLASSES[BICYCLE] == "bicycle"


class M:
    """Material codes of the G-buffer (what a surface is made of; the styles texture by material)."""

    SKY, ASPHALT, PAINT, PAVING, CURB, BRICK, PLASTER, WINDOW, WINDOW_LIT, CONCRETE = range(10)
    METAL, LAMP, TL_HOUSING, TL_ON, SIGN_FACE, FOLIAGE, BARK, GRASS, DIRT, SKIN = range(10, 20)
    CLOTH, CAR_PAINT, GLASS, TYRE, HEADLIGHT, TAILLIGHT, HAIR, WOOD, FAR = range(20, 29)
    COUNT = 29


class F:
    """Face codes: which way a surface faces (for shading, snow cover, wet ground)."""

    SKY, GROUND, FRONT, SIDE_L, SIDE_R, TOP, SPRITE, FAR = range(8)


FACE_SHADE = np.array([1.0, 1.0, 0.84, 0.96, 0.72, 1.1, 0.92, 0.9], np.float32)


def rgb255(*rgb: float) -> np.ndarray:
    """An RGB colour given in 0..255 as float32 [3] in 0..1."""
    return np.array(rgb, np.float32) / 255.0


ASPHALT = rgb255(88, 88, 92)
PAINT = rgb255(235, 235, 225)
PAVING = rgb255(178, 170, 160)
CURB = rgb255(150, 150, 150)
GRASS = rgb255(110, 150, 60)
DIRT = rgb255(150, 125, 90)
FOLIAGE = rgb255(60, 120, 40)
BARK = rgb255(90, 70, 50)
GLASS = rgb255(60, 80, 100)
TYRE = rgb255(30, 30, 32)
METAL = rgb255(120, 125, 130)
BUILDING_COLOURS = [rgb255(170, 90, 70), rgb255(205, 185, 150), rgb255(160, 160, 165), rgb255(220, 215, 205),
                    rgb255(200, 160, 90), rgb255(150, 165, 180), rgb255(120, 100, 90)]  # fmt: skip
CAR_COLOURS = [rgb255(230, 230, 230), rgb255(30, 30, 35), rgb255(165, 168, 172), rgb255(170, 30, 30),
               rgb255(40, 60, 140), rgb255(70, 75, 80), rgb255(40, 90, 60), rgb255(200, 160, 40)]  # fmt: skip
BUS_COLOURS = [rgb255(230, 190, 40), rgb255(200, 40, 40), rgb255(240, 240, 240), rgb255(40, 110, 180)]
CLOTH_COLOURS = [rgb255(40, 40, 60), rgb255(180, 30, 40), rgb255(30, 80, 150), rgb255(220, 220, 210),
                 rgb255(90, 90, 90), rgb255(120, 80, 40), rgb255(40, 120, 70), rgb255(200, 120, 30),
                 rgb255(20, 20, 20)]  # fmt: skip
SKIN_COLOURS = [rgb255(240, 200, 170), rgb255(220, 170, 130), rgb255(170, 120, 90), rgb255(110, 75, 55)]
SIGN_COLOURS = {
    "red": rgb255(200, 30, 30),
    "white": rgb255(240, 240, 240),
    "blue": rgb255(30, 70, 170),
    "yellow": rgb255(240, 200, 20),
}
