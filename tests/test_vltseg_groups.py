"""The VLTSeg recipes' optimizer groups (``train.custom_keys`` of ``_base_/vltseg_eva02_clip_l.yaml``): per class
of parameter, the lr and weight decay that VLTSeg's re-implementation gives the same parameter under
mmengine (github VLTSeg/VLTSeg ``configs/_base_/schedules/schedule_5k.py``; the oracle
tests/oracle/test_oracle_vltseg_optim.py runs mmengine's own constructor on the official names)."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import torch
from tiny import tiny_vltseg_config

import dgseg
from dgseg.config import config_from_dict
from dgseg.engine.optim import NORM_TYPES, param_groups

LR, WD, V1_WD = 1e-4, 0.05, 0.01
BLOCK = r"backbone\.vit\.blocks\.\d+\."
# (dgseg parameter names, lr_mult, decay_mult), the first class that matches decides; official names in comments
CLASSES = [
    (r"backbone\.vit\.pos_embed", 0.1, 0.0),  # backbone.pos_embed: 'backbone.pos_embed'
    (BLOCK + r"norm[12]\.(weight|bias)", 0.1, 0.0),  # backbone.blocks.i.norm1/2: 'backbone.blocks.{i}.norm1/2'
    (r"backbone\.vit\.norm\.(weight|bias)", 0.1, 0.0),  # EVA-CLIP's final norm: 'backbone.norm'
    (r"backbone\.vit\.(cls_token|patch_embed\.proj\.(weight|bias))", 0.1, 1.0),  # 'backbone'
    (BLOCK + r"attn\.((q|k|v)_proj|proj)\.(weight|bias)", 0.1, 1.0),  # attn.q_proj / q_bias / v_bias / proj
    (BLOCK + r"attn\.norm\.(weight|bias)", 0.1, 1.0),  # EVA-CLIP's attn.inner_attn_ln (VLTSeg's EVA02 has none)
    (BLOCK + r"mlp\.(fc1_g|fc1_x|fc2)\.(weight|bias)", 0.1, 1.0),  # mlp.w1 / w2 / w3
    (BLOCK + r"mlp\.norm\.(weight|bias)", 0.1, 1.0),  # mlp.ffn_ln: only 'backbone' matches, so it decays
    (r"backbone\.vit\.head\.(weight|bias)", 0.1, 1.0),  # v1: EVA-CLIP's visual projection (not in VLTSeg)
    (r"neck\.(up4\.[013]|up2)\.(weight|bias)", 0.1, 1.0),  # backbone.fpn1.0/1/3, fpn2.0 (its norm decays)
    (r"head\.(query_embed|query_feat|level_embed)\.weight", 1.0, 0.0),  # 'query_embed' ... 'level_embed'
]


def _expected(name: str, is_norm: bool, wd: float) -> tuple[float, float]:
    for pattern, lr_mult, decay_mult in CLASSES:
        if re.fullmatch(pattern, name):
            return LR * lr_mult, wd * decay_mult
    # no key: the head (and v1's text branch) at lr x 1; norm_decay_mult=0.0 on normalisation layers (dgseg's
    # no_decay_keys: also v1's prompt context)
    assert name.startswith(("head.", "text.")), f"{name}: no class"
    return LR, 0.0 if is_norm or name == "text.prompts.context" else wd


def _groups_by_name(model, cfg) -> dict[str, tuple[float, float]]:
    lr_mult = model.adapter.lr_mult if model.adapter.trains_backbone else 1.0
    got = {id(p): (g["lr"], g["weight_decay"]) for g in param_groups(model, cfg.train, lr_mult) for p in g["params"]}
    return {n: got[id(p)] for n, p in model.named_parameters() if p.requires_grad}


def _check(model, cfg, wd: float) -> None:
    norms = {f"{m_name}.{p_name}" if m_name else p_name
             for m_name, m in model.named_modules() if isinstance(m, NORM_TYPES)
             for p_name, _ in m.named_parameters(recurse=False)}
    got = _groups_by_name(model, cfg)
    bad = {}
    for name, (lr, decay) in got.items():
        want = _expected(name, name in norms, wd)
        if not (math.isclose(lr, want[0], rel_tol=1e-12) and decay == want[1]):
            bad[name] = (lr, decay, want)
    assert not bad, bad


def test_plain_vltseg_groups_are_the_reimplementations():
    cfg = tiny_vltseg_config()
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.model.adapter.lr_mult) == (LR, WD, 0.1)
    torch.manual_seed(0)
    model = dgseg.build_model(cfg)
    _check(model, cfg, WD)
    got = _groups_by_name(model, cfg)
    # the classes the re-implementation decays and dgseg's own default (no_decay_keys, by type) does not
    assert got["backbone.vit.cls_token"] == got["backbone.vit.blocks.23.mlp.norm.weight"] == (LR * 0.1, WD)
    assert got["backbone.vit.blocks.10.norm1.bias"] == got["backbone.vit.pos_embed"] == (LR * 0.1, 0.0)
    assert got["neck.up4.1.weight"] == got["neck.up2.bias"] == (LR * 0.1, WD)  # VLTSeg's FPN is in its backbone
    assert got["head.pixel_decoder.input_convs.0.gn.weight"] == got["head.level_embed.weight"] == (LR, 0.0)
    assert got["head.pixel_decoder.level_encoding.weight"] == got["head.cls_embed.bias"] == (LR, WD)


def test_v1_vltseg_groups_on_the_full_size_model():
    """v1 shares the base's custom_keys (its LAMB weight decay 0.01): the visual projection and final norm
    train with the encoder; the text branch matches no key. Built on the meta device at full size (24
    blocks of width 1024, the text tower), so every real parameter name is checked."""
    cfg = _v1_config()
    with torch.device("meta"):
        model = dgseg.build_model(cfg)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "backbone.vit.head.weight" in names and "text.decoder.decoder.0.norm1.weight" in names
    assert sum(n.startswith("backbone.vit.blocks.") and n.endswith("norm1.weight") for n in names) == 24
    _check(model, cfg, V1_WD)
    got = _groups_by_name(model, cfg)
    assert got["text.decoder.decoder.2.norm1.weight"] == (LR, 0.0)  # not a backbone block norm: lr x 1
    assert got["text.gamma"] == (LR, V1_WD) and got["backbone.vit.norm.weight"] == (LR * 0.1, 0.0)


def _v1_config():
    data = dataclasses.asdict(dgseg.load_config(Path(dgseg.__file__).parent / "configs" / "vltseg_eva02_clip_l_gta.yaml"))
    data["model"]["backbone"]["weights"] = None
    data["model"]["text"]["weights"] = None
    return config_from_dict(data)
