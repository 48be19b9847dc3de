"""Geometry -> pixels: the two primitives every object is made of, rasterised into the G-buffer with a
depth test. A :class:`Box` is an axis-aligned cuboid (front, side and top faces in perspective, each face
painted by a ``decorate`` function); a sprite (:func:`draw_sprite`) is a flat cut-out facing the camera,
made of masked parts. Also the contract between the layout and the rasteriser: :class:`SceneObject`
(every object's random choices are made when the layout samples it; ``draw`` consumes no randomness) and
:class:`Light` (light pools the night style adds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codes import FACE_SHADE, F
from .gbuffer import Camera, GBuffer, pixel_window


@dataclass
class Light:
    """A light pool on the ground (night style): centre (x, z) metres, radius metres, RGB intensity."""

    x: float
    z: float
    radius: float
    rgb: np.ndarray


class SceneObject:
    """An object placed by the layout, its look already sampled: ``draw`` writes it into a G-buffer (and
    uses no random numbers), ``light`` is the light it casts at night, if any."""

    def draw(self, gb: GBuffer, cam: Camera) -> None:
        raise NotImplementedError

    def light(self) -> Light | None:
        return None


Decorate = Callable[[int, np.ndarray, np.ndarray], tuple[Any, Any, Any, Any]]


@dataclass
class Box:
    """Axis-aligned box [x0, x1] x [y0, y1] x [z0, z1] (metres). ``decorate(face, a, b)`` returns
    (keep mask, material, colour id, shade) over face coordinates a (along the face) and b (height, or
    depth along Z for the top face), e.g. from :class:`.gbuffer.Paint`; None paints the whole box plainly."""

    x0: float
    x1: float
    y0: float
    y1: float
    z0: float
    z1: float
    label: int
    mat: int
    albedo: np.ndarray
    decorate: Decorate | None = None


def draw_box(gb: GBuffer, cam: Camera, box: Box) -> None:
    x0, x1, y0, y1, z0, z1 = box.x0, box.x1, box.y0, box.y1, box.z0, box.z1
    if z1 <= 0.3:
        return
    front_visible = z0 >= 0.3
    z0 = max(z0, 0.3)
    faces = []
    # front face (z = z0), facing the camera
    win = (
        pixel_window(cam, cam.col(x0, z0), cam.col(x1, z0), cam.row(y1, z0), cam.row(y0, z0))
        if front_visible
        else None
    )
    if win is not None:
        r0, c0, U, V = win
        a = (U - cam.cx) * z0 / cam.f - x0
        b = cam.ch - (V - cam.cy) * z0 / cam.f
        faces.append((F.FRONT, r0, c0, a, b, np.float32(z0), a + x0, b))
    # side face at X = x0 (seen when the box is right of the camera) or X = x1 (left of it)
    for xs, face in ((x0, F.SIDE_L), (x1, F.SIDE_R)):
        if (face == F.SIDE_L and xs <= 0.05) or (face == F.SIDE_R and xs >= -0.05):
            continue
        ua, ub = sorted((cam.col(xs, z0), cam.col(xs, z1)))
        va = min(cam.row(y1, z0), cam.row(y1, z1))
        vb = max(cam.row(y0, z0), cam.row(y0, z1))
        win = pixel_window(cam, ua, ub, va, vb)
        if win is None:
            continue
        r0, c0, U, V = win
        du = U - cam.cx
        du = np.where(np.abs(du) < 1e-3, 1e-3, du)
        z = xs * cam.f / du  # [1, w]
        b = cam.ch - (V - cam.cy) * z / cam.f  # [h, w]
        inside = (z >= z0) & (z <= z1) & (b >= y0) & (b <= y1)
        a = z - z0
        faces.append((face, r0, c0, a, b, np.where(inside, z, np.inf).astype(np.float32), z, b))
    # top face (Y = y1), seen from above
    if y1 < cam.ch - 0.05:
        dh = cam.ch - y1
        va, vb = cam.cy + dh * cam.f / z1, cam.cy + dh * cam.f / z0
        ua = min(cam.col(x0, z0), cam.col(x0, z1))
        ub = max(cam.col(x1, z0), cam.col(x1, z1))
        win = pixel_window(cam, ua, ub, va, vb)
        if win is not None:
            r0, c0, U, V = win
            z = dh * cam.f / np.maximum(V - cam.cy, 1e-3)  # [h, 1]
            X = (U - cam.cx) * z / cam.f  # [h, w]
            inside = (z >= z0) & (z <= z1) & (X >= x0) & (X <= x1)
            a, b = X - x0, z - z0
            faces.append((F.TOP, r0, c0, a, b, np.where(inside, z, np.inf).astype(np.float32), X, z + 0 * X))
    for face, r0, c0, a, b, depth, tu, tv in faces:
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
        if box.decorate is None:
            keep, mat, cid, shade = True, box.mat, gb.colour(box.albedo), 1.0
        else:
            keep, mat, cid, shade = box.decorate(face, a, b)
        keep = np.logical_and(keep, np.isfinite(depth))
        if keep.shape != shape:
            keep = np.broadcast_to(keep, shape)
        gb.write(r0, c0, keep, depth, box.label, mat, cid, FACE_SHADE[face] * shade, face, tu, tv)


Part = tuple[np.ndarray, int, int, np.ndarray, Any]  # (mask, label, material, RGB, shade)


def draw_sprite(
    gb: GBuffer,
    cam: Camera,
    x: float,
    z: float,
    extent: tuple[float, float, float, float],
    parts: Callable[[np.ndarray, np.ndarray], list[Part]],
) -> None:
    """A flat object facing the camera at depth z, local coordinates a = X - x (metres, right) and
    b = height (metres, up) within ``extent`` = (a0, a1, b0, b1); later parts cover earlier ones."""
    if z <= 0.5:
        return
    a0, a1, b0, b1 = extent
    win = pixel_window(cam, cam.col(x + a0, z), cam.col(x + a1, z), cam.row(b1, z), cam.row(b0, z))
    if win is None:
        return
    r0, c0, U, V = win
    a = (U - cam.cx) * z / cam.f - x
    b = cam.ch - (V - cam.cy) * z / cam.f
    shape = (V.shape[0], U.shape[1])
    part = np.zeros(shape, np.uint8)  # 0 = empty, k = the k-th part (the last one drawn wins)
    labels, mats, cids, shades = [0], [0], [0], [1.0]
    varying = []
    for k, (mask, label, mat, rgb, shade) in enumerate(parts(a, b), start=1):
        np.copyto(part, k, where=mask)
        labels.append(label), mats.append(mat), cids.append(gb.colour(rgb))
        shades.append(shade if np.ndim(shade) == 0 else 1.0)
        if np.ndim(shade) != 0:
            varying.append((k, shade))
    shade_map = np.asarray(shades, np.float32)[part] * FACE_SHADE[F.SPRITE]
    for k, shade in varying:
        sel = part == k
        shade_map[sel] *= np.broadcast_to(shade, shape)[sel]
    labels_map = np.asarray(labels, np.uint8)[part]
    mats_map = np.asarray(mats, np.uint8)[part]
    cids_map = np.asarray(cids, np.uint16)[part]
    gb.write(r0, c0, part > 0, np.float32(z), labels_map, mats_map, cids_map, shade_map, F.SPRITE, a + x, b)
