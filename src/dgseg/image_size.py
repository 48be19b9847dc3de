"""The smallest image a dgseg model takes, and the check that names the file when one is smaller.

The image is zero-padded to whole patches; the neck's coarsest level halves the patch grid (rounding
down), so the grid must be at least 2 x 2 patches, and that halved level must hold more than one cell
(a 1 x 1 map has no spread for the GroupNorm layers that follow): a grid of at least 2 x 4 patches, either
way round. With ``p``-pixel patches: at least ``p + 1`` px on the shorter side and ``3p + 1`` px on the
longer one.
"""

from __future__ import annotations

import math

DEFAULT_PATCH = 16
"""The patch size ``dgseg data check`` assumes (that of every shipped config)."""


def model_patch_size(model: object) -> int | None:
    """The patch size of a Segmentor's backbone (None for any other module)."""
    patch = getattr(getattr(model, "backbone", None), "patch_size", None)
    return int(patch) if isinstance(patch, int) else None


def min_image_size(patch: int) -> tuple[int, int]:
    """(shorter side, longer side) in pixels of the smallest image a model with ``patch``-px patches takes."""
    return patch + 1, 3 * patch + 1


def image_size_problem(height: int, width: int, patch: int) -> str | None:
    """None when an image of ``height`` x ``width`` px fits a model with ``patch``-px patches; else why not."""
    gh, gw = math.ceil(height / patch), math.ceil(width / patch)
    if min(gh, gw) >= 2 and max(gh, gw) >= 4:
        return None
    short, long = min_image_size(patch)
    return (f"image is {width}x{height} px (WxH), smaller than the model takes: with {patch}-px patches an image "
            f"needs at least {short} px on its shorter side and {long} px on its longer side")


def check_image_size(height: int, width: int, patch: int | None, where: str) -> None:
    """Raises ValueError naming ``where`` (a file) when the image is too small for the model (``patch`` None:
    a model without patches, nothing to check)."""
    if patch is None:
        return
    problem = image_size_problem(height, width, patch)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")
