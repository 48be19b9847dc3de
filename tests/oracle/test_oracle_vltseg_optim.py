"""Oracle: the optimizer groups of dgseg's VLTSeg recipes against mmengine 0.10.7's own
``DefaultOptimWrapperConstructor`` run with VLTSeg's official ``optim_wrapper``.

Official files (github VLTSeg/VLTSeg, not in the reference store; read from its copy jangminhyeok/VLTSeg at
96c3ce6, whose only change over upstream's last commit 1e7daac is a dataset converter):

- ``configs/_base_/schedules/schedule_5k.py`` (last changed in 75f75d2, the ``custom_keys`` in 98cafed):
  AdamW lr 1e-4, weight decay 0.05, ``paramwise_cfg=dict(custom_keys=custom_keys, norm_decay_mult=0.0)``,
  copied below as :data:`VLTSEG_PARAMWISE`. Its first version (9089d8a) had other keys ('.norm.weight',
  '.inner_attn_norm.weight', 'decode_head.query_embed', ...) for an earlier backbone (``ViTEVA02WithXAttn``);
  98cafed replaced both with the current ones.
- ``vltseg/models/eva02.py`` ``EVA02`` (``configs/_base_/models/eva-clip+mask2former.py``: subln, naiveswiglu,
  qkv_bias, rope, patch 14, no ``init_values``): its parameter names, :func:`vltseg_eva02_names`, including the
  simple FPN ``fpn1`` (ConvTranspose2d, SyncBatchNorm, GELU, ConvTranspose2d) / ``fpn2`` INSIDE the backbone,
  so matched by 'backbone'. Its ``Attention`` has no sub-LN (``inner_attn_ln``) and the backbone no final
  norm: EVA-CLIP's pretrained weights for both are dropped when it loads the file (not strict).

dgseg's model (tests/tiny.py ``tiny_vltseg_config``: the recipe's 24 blocks at width 32, random weights) is
viewed under the official names (:func:`official_name`): ``backbone.vit.*`` -> ``backbone.*`` with timm's
EVA renames undone (timm ``eva.checkpoint_filter_fn``), ``neck.up4.k`` -> ``backbone.fpn1.k``, ``neck.up2``
-> ``backbone.fpn2.0``, ``head.*`` -> ``decode_head.*`` (checked against mmseg's head in
test_oracle_optim.py). dgseg's sub-LNs (``attn.norm``) and final norm keep EVA-CLIP's names
(``attn.inner_attn_ln``, ``norm``), the names VLTSeg's keys would have met.
"""

from __future__ import annotations

import mmcv_shim
from official_view import official_view as shared_official_view

mmcv_shim.require_oracle()

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny import tiny_vltseg_config  # noqa: E402
from torch import nn  # noqa: E402

import dgseg  # noqa: E402
from dgseg.config import TrainConfig  # noqa: E402
from dgseg.engine.optim import build_optimizer, param_groups  # noqa: E402

# ------------------------------------------------------------------ official values (schedule_5k.py, copied)
backbone_embed_multi = dict(lr_mult=0.1, decay_mult=0.0)
backbone_norm_multi = dict(lr_mult=0.1, decay_mult=0.0)
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
custom_keys = {
    "backbone": dict(lr_mult=0.1, decay_mult=1.0),
    "backbone.norm": backbone_norm_multi,
    "backbone.pos_embed": backbone_embed_multi,
    "query_embed": embed_multi,
    "query_feat": embed_multi,
    "level_embed": embed_multi,
}
custom_keys.update({f"backbone.blocks.{block_id}.norm1": backbone_norm_multi for block_id in range(24)})
custom_keys.update({f"backbone.blocks.{block_id}.norm2": backbone_norm_multi for block_id in range(24)})
VLTSEG_OPTIMIZER = dict(type="AdamW", lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999))
VLTSEG_PARAMWISE = dict(custom_keys=custom_keys, norm_decay_mult=0.0)

# timm's EVA names -> EVA-CLIP's (timm/models/eva.py checkpoint_filter_fn, inverted)
TIMM_TO_EVA_CLIP = [("attn.q_proj.bias", "attn.q_bias"), ("attn.v_proj.bias", "attn.v_bias"),
                    ("mlp.fc1_g.", "mlp.w1."), ("mlp.fc1_x.", "mlp.w2."), ("mlp.fc2.", "mlp.w3."),
                    ("mlp.norm.", "mlp.ffn_ln."), ("attn.norm.", "attn.inner_attn_ln.")]
NECK_TO_FPN = {"up4.0": "fpn1.0", "up4.1": "fpn1.1", "up4.3": "fpn1.3", "up2": "fpn2.0"}


def official_name(name: str) -> str:
    if name.startswith("backbone.vit."):
        rest = name[len("backbone.vit."):]
        for ours, theirs in TIMM_TO_EVA_CLIP:
            rest = rest.replace(ours, theirs)
        return "backbone." + rest
    if name.startswith("neck."):
        module, _, leaf = name[len("neck."):].rpartition(".")
        return f"backbone.{NECK_TO_FPN[module]}.{leaf}"
    if name.startswith("head."):
        return "decode_head." + name[len("head."):]
    raise KeyError(f"no official name for {name}")


def vltseg_eva02_names(depth: int = 24) -> set[str]:
    """Every parameter of VLTSeg's ``EVA02`` as configured (vltseg/models/eva02.py: Block, Attention with
    subln -> q/k/v_proj without bias + q_bias / v_bias, SwiGLU w1 / w2 / ffn_ln / w3, PatchEmbed.proj,
    patch 14 -> fpn1 / fpn2; rope holds buffers only)."""
    block = ["norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.q_proj.weight", "attn.k_proj.weight",
             "attn.v_proj.weight", "attn.q_bias", "attn.v_bias", "attn.proj.weight", "attn.proj.bias"]
    block += [f"mlp.{m}.{w}" for m in ("w1", "w2", "ffn_ln", "w3") for w in ("weight", "bias")]
    names = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    names |= {f"blocks.{i}.{n}" for i in range(depth) for n in block}
    names |= {f"fpn1.{k}.{w}" for k in (0, 1, 3) for w in ("weight", "bias")} | {"fpn2.0.weight", "fpn2.0.bias"}
    return {"backbone." + n for n in names}


def official_view(model: nn.Module) -> nn.Module:
    return shared_official_view(model, official_name, trainable_only=True)


def mmengine_lr_wd(module: nn.Module, optimizer: dict, paramwise_cfg: dict) -> dict[int, tuple[float, float]]:
    from mmengine.optim import DefaultOptimWrapperConstructor

    wrapper = DefaultOptimWrapperConstructor(dict(type="OptimWrapper", optimizer=dict(optimizer)), paramwise_cfg)(module)
    return {id(p): (g["lr"], g["weight_decay"]) for g in wrapper.optimizer.param_groups for p in g["params"]}


def dgseg_lr_wd(model: nn.Module, train: TrainConfig) -> dict[int, tuple[float, float]]:
    lr_mult = model.adapter.lr_mult if model.adapter.trains_backbone else 1.0  # as dgseg/engine/train_setup.py
    opt = build_optimizer(model, train, backbone_lr_mult=lr_mult)
    return {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


@pytest.fixture(scope="module")
def plain():
    cfg = tiny_vltseg_config()
    torch.manual_seed(0)
    return cfg, dgseg.build_model(cfg)


def test_the_plain_recipes_encoder_and_fpn_are_vltsegs_eva02_name_for_name(plain):
    """attn_norm: false and final_norm: false drop what VLTSeg's eva02.py does not have (EVA-CLIP's
    inner_attn_ln, the final norm), so no parameter is left over on either side."""
    _, model = plain
    ours = {official_name(n) for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")}
    assert ours == vltseg_eva02_names(), (sorted(ours - vltseg_eva02_names()), sorted(vltseg_eva02_names() - ours))


def test_plain_recipe_groups_equal_mmengine_with_the_official_paramwise_cfg(plain):
    """Every trainable parameter of vltseg_plain_eva02_clip_l_gta.yaml (cls_token, pos_embed, patch_embed, each
    block's norms / sub-LNs / q,k,v / SwiGLU, the FPN and its norm, every head parameter) gets the lr and
    weight decay mmengine gives it under its official name."""
    cfg, model = plain
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay) == ("adamw", VLTSEG_OPTIMIZER["lr"],
                                                                          VLTSEG_OPTIMIZER["weight_decay"])
    ours, theirs = dgseg_lr_wd(model, cfg.train), mmengine_lr_wd(official_view(model), VLTSEG_OPTIMIZER,
                                                                  VLTSEG_PARAMWISE)
    names = {id(p): official_name(n) for n, p in model.named_parameters() if p.requires_grad}
    assert ours.keys() == theirs.keys() == names.keys()
    assert {names[k]: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]} == {}
    # the classes that make it more than "backbone x 0.1": all present, each with its own outcome
    by_name = {names[k]: v for k, v in theirs.items()}
    assert by_name["backbone.cls_token"] == by_name["backbone.blocks.0.mlp.ffn_ln.weight"] == (1e-5, 0.05)
    assert by_name["backbone.fpn1.1.weight"] == (1e-5, 0.05)
    assert by_name["backbone.blocks.11.norm2.bias"] == by_name["backbone.pos_embed"] == (1e-5, 0.0)
    assert by_name["decode_head.query_feat.weight"] == by_name["decode_head.transformer_decoder.post_norm.bias"] == (
        1e-4, 0.0)


def test_v1_recipe_groups_equal_mmengine_with_the_official_paramwise_cfg():
    """v1 (LAMB, weight decay 0.01; the official file has no such recipe) with the same keys: mmengine on the
    encoder, its visual projection, final norm, FPN and head agrees; the text branch, which no official file
    has, is left out of the view (tests/test_vltseg_groups.py pins it)."""
    cfg = tiny_vltseg_config("vltseg_eva02_clip_l_gta.yaml")
    torch.manual_seed(0)
    model = dgseg.build_model(cfg)
    text = {id(p) for n, p in model.named_parameters() if n.startswith("text.")}
    vision = nn.Module()
    vision.backbone, vision.neck, vision.head = model.backbone, model.neck, model.head
    groups = param_groups(model, cfg.train, model.adapter.lr_mult)
    ours = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"] if id(p) not in text}
    optimizer = dict(VLTSEG_OPTIMIZER, weight_decay=cfg.train.weight_decay)
    theirs = mmengine_lr_wd(official_view(vision), optimizer, VLTSEG_PARAMWISE)
    assert ours == theirs
    assert any(n == "backbone.vit.head.weight" for n, _ in model.named_parameters())


def test_key_order_and_matching_equal_mmengines():
    """Keys of equal length that both match (mmengine's stable sort keeps them alphabetical), a longer key
    beating a shorter one, a matched LayerNorm that decays, an unmatched one that does not."""
    model = nn.Module()
    model.ab = nn.Module()
    model.ab.cd = nn.Linear(2, 2)
    model.ab.norm = nn.LayerNorm(2)
    model.xy = nn.LayerNorm(2)
    keys = {"cd": dict(lr_mult=3.0), "ab": dict(lr_mult=2.0, decay_mult=0.5), "ab.norm": dict(lr_mult=0.1)}
    train = TrainConfig(lr=1.0, weight_decay=0.1, custom_keys=keys, no_decay_keys=[])
    ours = {id(p): (g["lr"], g["weight_decay"]) for g in param_groups(model, train) for p in g["params"]}
    theirs = mmengine_lr_wd(model, dict(type="AdamW", lr=1.0, weight_decay=0.1),
                            dict(custom_keys=keys, norm_decay_mult=0.0))
    assert ours == theirs
    assert theirs[id(model.ab.cd.weight)] == (2.0, 0.05) and theirs[id(model.ab.norm.weight)] == (0.1, 0.1)
    assert theirs[id(model.xy.weight)] == (1.0, 0.0)
