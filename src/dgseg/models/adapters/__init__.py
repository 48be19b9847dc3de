"""Adapters: how a method trains a frozen ViT. One file each, one registry line each."""

from __future__ import annotations

from dgseg.config import AdapterConfig
from dgseg.models.adapters.adaptformer import AdaptFormer
from dgseg.models.adapters.base import Adapter, Frozen, FullFineTune
from dgseg.models.adapters.lora import LoRA
from dgseg.models.adapters.rein import Rein
from dgseg.models.adapters.vpt import VPT


def _rein(cfg: AdapterConfig, backbone) -> Rein:
    layers = backbone.global_attention_blocks  # SAM: only after the global-attention blocks
    if not layers:
        raise ValueError(f"model.adapter.name=rein: the backbone's {len(backbone.vit.blocks)} blocks all use windowed "
                         f"attention, and Rein refines only after global-attention blocks; set "
                         f"model.backbone.model_kwargs.global_attn_indexes to blocks below the depth (e.g. a shrunk "
                         f"SAM keeps timm's [7, 15, 23, 31])")
    return Rein(len(layers), backbone.embed_dim, backbone.patch_size,
                tokens=100 if cfg.tokens is None else cfg.tokens, rank=16 if cfg.rank is None else cfg.rank,
                shared=cfg.shared, link=cfg.link, query_dim=cfg.query_dim, scale_init=cfg.scale_init,
                layers=layers)


ADAPTERS = {
    "rein": _rein,
    "lora": lambda cfg, bb: LoRA(bb.depth, bb.embed_dim, rank=8 if cfg.rank is None else cfg.rank),
    "adaptformer": lambda cfg, bb: AdaptFormer(bb.depth, bb.embed_dim, width=cfg.width, scale=cfg.scale),
    "vpt": lambda cfg, bb: VPT(bb.depth, bb.embed_dim, bb.patch_size, tokens=150 if cfg.tokens is None else cfg.tokens),
    "full": lambda cfg, bb: FullFineTune(lr_mult=cfg.lr_mult),
    "frozen": lambda cfg, bb: Frozen(),
}


def build_adapter(cfg: AdapterConfig, backbone) -> Adapter:
    if cfg.name not in ADAPTERS:
        raise ValueError(f"model.adapter.name: unknown adapter '{cfg.name}'; choose one of {', '.join(ADAPTERS)}")
    adapter = ADAPTERS[cfg.name](cfg, backbone)
    adapter.attach(backbone)
    backbone.attach_adapter(adapter)
    return adapter


__all__ = ["Adapter", "AdaptFormer", "Frozen", "FullFineTune", "LoRA", "Rein", "VPT", "build_adapter", "ADAPTERS"]
