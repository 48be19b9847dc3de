"""DINOv2's own position-embedding resampling, for timm's DINOv2 ViTs.

timm resamples the position grid with ``F.interpolate(size=(h, w), mode="bicubic", antialias=True)``.
DINOv2 (``facebookresearch/dinov2`` ``dinov2/models/vision_transformer.py``, ``interpolate_pos_encoding``;
Rein vendors it as ``rein/models/backbones/dino_v2.py``) uses plain bicubic with
``scale_factor=((h + 0.1) / M, (w + 0.1) / M)`` on the M x M grid: the output has h x w cells, but the
sampling positions follow the scale factor, not h / M. The two differ on every input whose grid is not
the stored one (512 x 1024 whole-image inference: logits up to ~3 apart with random position
embeddings). DINOv2 keeps the stored grid only when the input is square with the same number of patches.
:func:`use_dinov2_pos_embed` makes a timm DINOv2 model follow DINOv2's formula, as the official model does.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OFFSET = 0.1
"""DINOv2's ``interpolate_offset`` (facebookresearch/dino issue 8)."""


def dinov2_resample(patch_pos: Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """Patch position embeddings [1, M_h * M_w, C] on ``grid`` -> [1, h * w, C] on ``new_grid`` = (h, w),
    by DINOv2's ``interpolate_pos_encoding`` (float32, plain bicubic, ``scale_factor`` with the 0.1 offset).
    Returned unchanged when the new grid is square with as many cells as the stored one (DINOv2's shortcut)."""
    (mh, mw), (h, w) = grid, new_grid
    if h == w and h * w == mh * mw:
        return patch_pos
    dim = patch_pos.shape[-1]
    # DINOv2 divides by sqrt(N) for both axes (its grid is square); per axis here, equal for square grids
    sh = (h + OFFSET) / (math.sqrt(mh * mw) if mh == mw else mh)
    sw = (w + OFFSET) / (math.sqrt(mh * mw) if mh == mw else mw)
    grid_map = patch_pos.float().reshape(1, mh, mw, dim).permute(0, 3, 1, 2)
    out = F.interpolate(grid_map, scale_factor=(float(sh), float(sw)), mode="bicubic")
    if tuple(out.shape[-2:]) != (h, w):
        raise RuntimeError(f"DINOv2 position resampling gave a {tuple(out.shape[-2:])} grid, expected {(h, w)}")
    return out.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(patch_pos.dtype)


def _pos_embed(self: nn.Module, x: Tensor) -> Tensor:
    """timm ``VisionTransformer._pos_embed`` (dynamic image size, x [B, H, W, C]) with DINOv2's resampling."""
    b, h, w, c = x.shape
    prefix = [t.expand(b, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
    pos = self.pos_embed
    n_pos_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
    patch = dinov2_resample(pos[:, n_pos_prefix:], tuple(self.patch_embed.grid_size), (h, w))
    x = x.reshape(b, h * w, c)
    if self.no_embed_class:  # DINOv2 with registers in timm: the cls position is folded into cls_token
        x = torch.cat(prefix + [x + patch], dim=1)
    else:
        x = torch.cat(prefix + [x], dim=1) + torch.cat([pos[:, :n_pos_prefix], patch], dim=1)
    return self.pos_drop(x)


def is_dinov2(name: str) -> bool:
    return "dinov2" in name


def use_dinov2_pos_embed(vit: nn.Module) -> None:
    """Make a timm DINOv2 ``VisionTransformer`` (``dynamic_img_size``) resample its position grid as DINOv2."""
    if not (getattr(vit, "dynamic_img_size", False) and getattr(vit, "pos_embed", None) is not None):
        raise ValueError("DINOv2 position resampling needs a timm VisionTransformer with dynamic_img_size=True")
    vit._pos_embed = types.MethodType(_pos_embed, vit)
