"""A built-in synthetic domain-shift benchmark: procedural street scenes, no files needed.

Each scene is a street in perspective (road with lane markings, sidewalks, buildings with windows, walls,
fences, terrain, trees, street lamps, traffic lights and signs, cars, trucks, buses, trams, pedestrians,
cyclists and motorcyclists, sky) labelled in the 19 Cityscapes train IDs. Occlusion is exact (a depth
buffer). A scene is a pure function of ``(seed, split, index)``; the same scene (same layout, same
label map) can be rendered in several styles, which are the domains:

- ``game`` (the source): flat, saturated game-like shading, no texture, no noise.
- ``photo``: real photo textures from scikit-image's bundled images (brick, grass, gravel, moon,
  immunohistochemistry, coffee), soft light, sensor noise.
- ``night``: photo textures in the dark, lit by street lamps, head/tail lights, lit windows, ego headlights.
- ``fog``: photo textures with depth-dependent fog.
- ``snow``: snow cover on upward-facing surfaces, falling flakes, flat light.
- ``rain``: wet darkened ground with reflections, rain streaks, grey sky.
- ``palette``: the game style with a shifted colour palette (colour channels rotated).

Colour does not carry across these domains; shape and context do. Generation and rendering are
vectorised numpy: 25-40 images of 512x256 per second on one core, depending on the style (see
:func:`benchmark` and the README).

The modules follow the data:

1. :mod:`.layout` (with :mod:`.street`, :mod:`.traffic`): what stands where, a pure function of
   ``(seed, split, index)``; the objects themselves live in :mod:`.objects`, grouped by kind.
2. :mod:`.scene` (with :mod:`.raster`, :mod:`.gbuffer`, :mod:`.shapes`): the layout rasterised into a
   G-buffer (labels, materials, depth, texture coordinates) at the requested size.
3. :mod:`.styles` (with :mod:`.textures`, :mod:`.finish`): one function per style shades the G-buffer.
4. :mod:`.dataset`: :class:`SyntheticDataset` and :func:`benchmark`.

Usage: ``build_dataset("synthetic-night", root=None, split="val", length=100, size=(256, 512), seed=0)``
or :class:`SyntheticDataset` directly; :func:`make_scene` + :func:`render` for the raw arrays.
"""

from .codes import F, M
from .dataset import DEFAULT_LENGTH, SyntheticDataset, benchmark
from .gbuffer import Camera, GBuffer
from .layout import SPLITS, Layout, make_layout
from .raster import Light
from .scene import DEFAULT_SIZE, Scene, make_scene
from .styles import RENDERERS, SOURCE_STYLE, STYLES, TARGET_STYLES, render

__all__ = [
    "DEFAULT_LENGTH", "DEFAULT_SIZE", "RENDERERS", "SOURCE_STYLE", "SPLITS", "STYLES", "TARGET_STYLES",
    "Camera", "F", "GBuffer", "Layout", "Light", "M", "Scene", "SyntheticDataset",
    "benchmark", "make_layout", "make_scene", "render",
]  # fmt: skip
