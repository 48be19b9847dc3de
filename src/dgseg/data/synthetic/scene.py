"""Layout -> G-buffer: :func:`make_scene` sizes the sampled camera for the image and rasterises the
layout's objects in order (a depth test resolves occlusion), giving a :class:`Scene` the styles shade."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .gbuffer import Camera, GBuffer
from .layout import make_layout
from .raster import Light

DEFAULT_SIZE = (256, 512)  # (H, W)


@dataclass
class Scene:
    """One generated scene: the G-buffer (``gb.label`` is the label map), camera and night lights;
    ``road`` = (left, right) edges of the road in metres."""

    seed: int
    split: str
    index: int
    camera: Camera
    gb: GBuffer
    lights: list[Light] = field(default_factory=list)
    road: tuple[float, float] = (-5.0, 5.0)

    @property
    def label(self) -> np.ndarray:
        return self.gb.label


def make_scene(
    seed: int = 0, split: str = "train", index: int = 0, size: tuple[int, int] = DEFAULT_SIZE
) -> Scene:
    """Generate scene ``index`` of ``split`` for ``seed``: a pure function of (seed, split, index).

    ``size`` = (H, W) only sets the resolution: the layout is the same at any size.
    """
    layout = make_layout(seed, split, index)
    height, width = int(size[0]), int(size[1])
    cam = layout.rig.camera(height, width)
    gb = GBuffer(height, width)
    for obj in layout.objects:
        obj.draw(gb, cam)
    road = (layout.street.xl, layout.street.xr)
    return Scene(layout.seed, split, layout.index, cam, gb, layout.lights, road)
