"""What a config changes in a timm ViT to match another implementation of the same encoder.

VLTSeg's re-implementation (github VLTSeg/VLTSeg ``vltseg/models/eva02.py``, loaded by mmengine's
``Pretrained`` init with ``prefix='visual.'``, ``strict=False``) builds EVA02-CLIP without the attention sub-LN
(EVA-CLIP's ``inner_attn_ln``, timm's ``blocks.*.attn.norm``) and without a final norm, so their weights in the
file are not loaded; and its 36 x 36 position embedding does not take the file's 16 x 16 one (a shape mismatch,
skipped), so it keeps its ``trunc_normal_(std=.02)`` initialisation. ``model.backbone.attn_norm: false`` /
``final_norm: false`` remove the layers here (``nn.Identity``: no parameters, no state-dict keys; their weights
in the file are not expected) and ``pos_embed_init: trunc_normal`` re-initialises the position embedding.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from dgseg.config import BackboneConfig, ConfigError


def _is_norm(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Module) and not isinstance(module, nn.Identity)


def remove_norms(vit: nn.Module, cfg: BackboneConfig) -> list[str]:
    """Replace with ``nn.Identity`` what ``cfg`` turns off; the names of the removed modules, in ``vit``'s
    naming (``blocks.0.attn.norm``, ..., ``norm``), for :func:`dgseg.models.backbones.load_vit_weights`.

    Raises ConfigError naming the key when the backbone has no such norm to remove (a timm ViT without EVA's
    attention sub-LN, or one whose final norm is already an identity)."""
    removed = []
    if not cfg.attn_norm:
        blocks = list(vit.blocks)
        lacking = [i for i, b in enumerate(blocks) if not _is_norm(getattr(getattr(b, "attn", None), "norm", None))]
        if lacking:
            raise ConfigError(
                f"model.backbone.attn_norm: false removes EVA's attention sub-LN (timm blocks.*.attn.norm), but "
                f"'{cfg.name}' has none in block(s) {lacking[:5]}; leave it true for this backbone")
        for i, b in enumerate(blocks):
            b.attn.norm = nn.Identity()
            removed.append(f"blocks.{i}.attn.norm")
    if not cfg.final_norm:
        if not _is_norm(getattr(vit, "norm", None)):
            raise ConfigError(f"model.backbone.final_norm: false removes the final norm (timm norm), but "
                              f"'{cfg.name}' has none; leave it true for this backbone")
        vit.norm = nn.Identity()
        removed.append("norm")
    return removed


def init_pos_embed(vit: nn.Module, cfg: BackboneConfig) -> None:
    """``pos_embed_init: trunc_normal``: the absolute position embedding drawn again, ``trunc_normal_(std=.02)``
    (cut at +-2), whatever the weights file held; ``file`` (the default) leaves it as loaded."""
    if cfg.pos_embed_init == "file":
        return
    pos = getattr(vit, "pos_embed", None)
    if not isinstance(pos, nn.Parameter):
        raise ConfigError(f"model.backbone.pos_embed_init: '{cfg.name}' has no absolute position embedding "
                          "(timm pos_embed) to initialise; leave it 'file'")
    trunc_normal_(pos, std=0.02)


def add_class_embedding_twice(vit: nn.Module, cfg: BackboneConfig) -> None:
    """``class_embedding_twice``: DenseCLIP's ``CLIPVisionTransformer.forward`` (Rein's ``clip.py``) builds the
    class token as ``class_embedding`` and adds ``positional_embedding[0] + class_embedding`` to it; the same
    forward here is the class entry of the position embedding plus the class token, once, after loading."""
    if not cfg.class_embedding_twice:
        return
    pos, cls = getattr(vit, "pos_embed", None), getattr(vit, "cls_token", None)
    if not isinstance(pos, nn.Parameter) or not isinstance(cls, nn.Parameter) or getattr(vit, "no_embed_class", False):
        raise ConfigError(f"model.backbone.class_embedding_twice: '{cfg.name}' has no class token with a position "
                          "of its own (timm cls_token and pos_embed[:, 0]); leave it false")
    with torch.no_grad():
        pos[:, 0] += cls[:, 0]
