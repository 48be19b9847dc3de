"""The smallest image a dgseg model takes, and the check that names the file when one is smaller.

The image is zero-padded to whole patches and the neck's coarsest level halves the patch grid (rounding
down), so the grid must be at least 2 x 2 patches: with ``p``-pixel patches, ``p + 1`` px on each side.
A head with a GroupNorm of one channel per group (Mask2Former with ``hidden_dim`` 32) also needs more
than one cell in that coarsest map (a 1 x 1 map has no spread to normalise): a grid of at least 2 x 4
patches, either way round, i.e. ``p + 1`` px on the shorter side and ``3p + 1`` px on the longer one.
With ``model.backbone.patch_remainder: drop`` the grid holds only whole patches: ``2p`` and ``4p`` px.
"""

from __future__ import annotations

import math
from typing import NamedTuple

DEFAULT_PATCH = 16
"""The patch size ``dgseg data check`` assumes (that of every shipped config)."""


class SizeRule(NamedTuple):
    """What a model needs: ``patch`` px patches, ``coarse_cells`` cells at least in the coarsest map; ``drop``:
    a side's last partial patch is left out (``model.backbone.patch_remainder: drop``), not padded."""

    patch: int
    coarse_cells: int = 1
    drop: bool = False

    def for_batch(self, images: int) -> SizeRule:
        """The rule for a forward of ``images`` images: a GroupNorm of one channel per group (``coarse_cells``
        2) fails only on a lone image; two or more give it more than one value per group."""
        return self._replace(coarse_cells=1) if images >= 2 else self


def model_size_rule(model: object) -> SizeRule | None:
    """The :class:`SizeRule` of a Segmentor (None for a module without a patch backbone: nothing to check)."""
    import torch.nn as nn

    backbone = getattr(model, "backbone", None)
    patch = getattr(backbone, "patch_size", None)
    if not isinstance(patch, int) or not isinstance(model, nn.Module):
        return None
    single = any(isinstance(m, nn.GroupNorm) and m.num_channels == m.num_groups for m in model.modules())
    return SizeRule(patch, 2 if single else 1, getattr(backbone, "patch_remainder", "pad") == "drop")


def min_image_size(rule: SizeRule) -> tuple[int, int]:
    """(shorter side, longer side) in pixels of the smallest image a model with ``rule`` takes."""
    if rule.drop:
        return 2 * rule.patch, (4 * rule.patch if rule.coarse_cells > 1 else 2 * rule.patch)
    return rule.patch + 1, (3 * rule.patch + 1 if rule.coarse_cells > 1 else rule.patch + 1)


def image_size_problem(height: int, width: int, rule: SizeRule, what: str | None = None) -> str | None:
    """None when an image of ``height`` x ``width`` px fits a model with ``rule``; else why not (starting with
    ``what``, default ``image is WxH px (WxH)``)."""
    whole = math.floor if rule.drop else math.ceil
    gh, gw = whole(height / rule.patch), whole(width / rule.patch)
    if min(gh, gw) >= 2 and (gh // 2) * (gw // 2) >= rule.coarse_cells:
        return None
    short, long = min_image_size(rule)
    need = (f"at least {short} px on each side" if short == long
            else f"at least {short} px on its shorter side and {long} px on its longer side")
    what = what or f"image is {width}x{height} px (WxH)"
    return f"{what}, smaller than the model takes: with {rule.patch}-px patches an image needs {need}"


def check_image_size(height: int, width: int, rule: SizeRule | None, where: str) -> None:
    """Raises ValueError naming ``where`` (a file) when the image is too small (``rule`` None: no check)."""
    if rule is None:
        return
    problem = image_size_problem(height, width, rule)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")


MAX_RESIZE_SIDE = 8192
"""``--resize W,H``: the most pixels a side, as ``dgseg export --size``."""


def resize_option(text: str) -> tuple[int, int] | float:
    """``predict --resize``: ``W,H`` (each image scaled keeping its aspect ratio as a ``data.val`` entry's
    ``resize: [W, H]``, i.e. mmseg's ``Resize(scale=(W, H), keep_ratio=True)``: the longer side at most the larger
    of W and H, the shorter at most the smaller) or a factor in (0, 4] (``0.5``: half size). The model predicts
    at that size; the prediction is resized back to the image's own."""
    import argparse

    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) == 2:
            w, h = int(parts[0]), int(parts[1])
            if 1 <= w <= MAX_RESIZE_SIDE and 1 <= h <= MAX_RESIZE_SIDE:
                return w, h
        elif len(parts) == 1:
            factor = float(parts[0])
            if 0 < factor <= 4:
                return factor
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"{text!r}: expected W,H (e.g. 1024,512: each image scaled keeping its aspect ratio, as mmseg's Resize; "
        f"1 to {MAX_RESIZE_SIDE} px a side) or a scale factor in (0, 4] (e.g. 0.5)")
