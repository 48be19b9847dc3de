"""``train.custom_keys``: mmengine's ``paramwise_cfg.custom_keys`` in dgseg's optimizer groups, and the default
(null) groups kept bit-identical to those before the key existed (a resumed run matches optimizer state by
group and position)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config, tiny_vltseg_config
from torch import nn

import dgseg
from dgseg.config import ConfigError, TrainConfig
from dgseg.engine.optim import NO_DECAY_KEYS, custom_key, key_order, norm_parameter_ids, param_groups


def _param_groups_before(model: nn.Module, cfg: TrainConfig, backbone_lr_mult: float = 1.0) -> list[dict]:
    """``dgseg.engine.optim.param_groups`` as it was before ``train.custom_keys`` (commit f25f47c), verbatim."""
    groups: dict[tuple[float, float], list] = {}
    norms = norm_parameter_ids(model)
    keys = NO_DECAY_KEYS if cfg.no_decay_keys is None else tuple(cfg.no_decay_keys)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if id(p) in norms or any(k in name for k in keys) else cfg.weight_decay
        lr = cfg.lr * (backbone_lr_mult if name.startswith("backbone.") else 1.0)
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def _same_groups(ours: list[dict], before: list[dict]) -> None:
    assert len(ours) == len(before)
    for a, b in zip(ours, before, strict=True):
        assert a.keys() == b.keys()
        assert (a["lr"], a["initial_lr"], a["weight_decay"]) == (b["lr"], b["initial_lr"], b["weight_decay"])
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]  # same parameters, same order


@pytest.mark.parametrize("adapter", [{"name": "rein", "tokens": 8, "query_dim": 32},
                                     {"name": "full", "link": False, "lr_mult": 0.1}])
@pytest.mark.parametrize("no_decay_keys", [None, ["norm", "query_embed", "level_embed"]])
def test_without_custom_keys_the_groups_are_bit_identical_to_before(adapter, no_decay_keys):
    model = dgseg.build_model(tiny_config(model__adapter=adapter))
    mult = adapter.get("lr_mult", 1.0)
    for custom in (None, {}):
        train = TrainConfig(lr=1e-4, weight_decay=0.05, no_decay_keys=no_decay_keys, custom_keys=custom)
        before = _param_groups_before(model, train, mult)
        assert len(before) >= 2
        _same_groups(param_groups(model, train, mult), before)


def test_vltseg_model_without_custom_keys_groups_as_before():
    cfg = tiny_vltseg_config()
    model = dgseg.build_model(cfg)
    train = TrainConfig(**{**vars(cfg.train), "custom_keys": None})
    _same_groups(param_groups(model, train, 0.1), _param_groups_before(model, train, 0.1))


def _probe() -> nn.Module:
    """Parameters named backbone.{blk.norm, blk.fc, cls_token}, neck.conv, head.{norm, query_embed, fc}."""
    backbone = nn.Module()
    backbone.blk = nn.Module()
    backbone.blk.norm = nn.LayerNorm(4)
    backbone.blk.fc = nn.Linear(4, 4)
    backbone.cls_token = nn.Parameter(torch.zeros(4))
    head = nn.Module()
    head.norm = nn.LayerNorm(4)
    head.query_embed = nn.Embedding(2, 4)
    head.fc = nn.Linear(4, 4)
    model = nn.Module()
    model.backbone, model.neck, model.head = backbone, nn.Conv2d(4, 4, 1), head
    return model


def _by_name(model: nn.Module, custom: dict | None, backbone_lr_mult: float = 0.5, **train) -> dict:
    cfg = TrainConfig(lr=1.0, weight_decay=0.1, custom_keys=custom, **train)
    got = {id(p): (g["lr"], g["weight_decay"]) for g in param_groups(model, cfg, backbone_lr_mult)
           for p in g["params"]}
    return {n: got[id(p)] for n, p in model.named_parameters()}


def test_a_matched_key_decides_alone_and_the_rest_follow_the_old_rules():
    model = _probe()
    got = _by_name(model, {"backbone": {"lr_mult": 0.1, "decay_mult": 1.0}, "query_embed": {"decay_mult": 0.0}})
    # matched: lr x lr_mult (not backbone_lr_mult 0.5), decay x decay_mult even on a LayerNorm and on names
    # holding no_decay_keys ("norm", "cls_token"): mmengine's is_custom skips norm_decay_mult
    assert got["backbone.blk.norm.weight"] == got["backbone.blk.norm.bias"] == (0.1, 0.1)
    assert got["backbone.cls_token"] == got["backbone.blk.fc.weight"] == (0.1, 0.1)
    assert got["head.query_embed.weight"] == (1.0, 0.0)  # lr_mult left out: 1.0
    # unmatched: the norm-type rule, no_decay_keys, lr x 1 outside the backbone
    assert got["head.norm.weight"] == (1.0, 0.0) and got["head.fc.weight"] == got["neck.weight"] == (1.0, 0.1)
    # no key matches a backbone parameter: backbone_lr_mult applies
    got = _by_name(model, {"blk.fc": {"lr_mult": 2.0}})
    assert got["backbone.blk.fc.bias"] == (2.0, 0.1) and got["backbone.blk.norm.weight"] == (0.5, 0.0)
    assert got["backbone.cls_token"] == (0.5, 0.0)  # NO_DECAY_KEYS
    assert _by_name(model, {"head": {}}, no_decay_keys=["fc"])["backbone.blk.fc.weight"] == (0.5, 0.0)


def test_the_longest_key_wins_and_ties_go_alphabetically_as_in_mmengine():
    model = _probe()
    keys = {"backbone": {"lr_mult": 0.1}, "backbone.blk.norm": {"lr_mult": 0.2, "decay_mult": 0.0}}
    got = _by_name(model, keys)
    assert got["backbone.blk.norm.weight"] == (0.2, 0.0) and got["backbone.blk.fc.weight"] == (0.1, 0.1)
    got = _by_name(model, dict(reversed(keys.items())))  # the order written does not matter
    assert got["backbone.blk.norm.weight"] == (0.2, 0.0)
    # "blk" and "fc." both hold 3 characters and match backbone.blk.fc.*: "blk" sorts first
    got = _by_name(model, {"fc.": {"lr_mult": 3.0}, "blk": {"lr_mult": 4.0}})
    assert got["backbone.blk.fc.weight"] == (4.0, 0.1) and got["head.fc.weight"] == (3.0, 0.1)
    assert key_order({"fc.": {}, "blk": {}, "backbone": {}, "a": {}}) == ["backbone", "blk", "fc.", "a"]
    assert custom_key("backbone.blocks.10.norm1.weight", key_order({"backbone.blocks.1.norm1": {}})) is None


def test_a_star_in_a_key_stands_for_any_run_of_characters_and_the_key_keeps_its_written_length():
    from dgseg.engine.optim import key_in

    assert key_in("blocks.*.norm1", "backbone.vit.blocks.17.norm1.weight")
    assert not key_in("blocks.*.norm1", "backbone.vit.blocks.17.norm2.weight")
    assert key_in("blocks.1", "backbone.vit.blocks.17.norm1.weight") and not key_in("blocks.1*x", "blocks.1.norm")
    assert key_in("a.b", "xa.bx") and not key_in("a.b", "axb")  # "." and the rest are literal, never regex
    keys = key_order({"backbone": {}, "backbone.vit.blocks.*.norm1": {}})
    assert custom_key("backbone.vit.blocks.3.norm1.bias", keys) == "backbone.vit.blocks.*.norm1"
    assert custom_key("backbone.vit.blocks.3.attn.norm.bias", keys) == "backbone"


@pytest.mark.parametrize(("value", "message"), [
    ({"backbone": {"lr": 0.1}}, r"train.custom_keys.backbone: unknown \['lr'\]; expected a mapping of lr_mult / "
                                r"decay_mult"),
    ({"backbone": {"lr_mult": "x"}}, "train.custom_keys.backbone.lr_mult: expected a number"),
    ({"backbone": {"decay_mult": True}}, "train.custom_keys.backbone.decay_mult: expected a number"),
    ({"backbone": {"lr_mult": -0.1}}, "train.custom_keys.backbone: lr_mult must be >= 0"),
    ({"backbone": 0.1}, "train.custom_keys.backbone: expected a mapping"),
    ({" ": {"lr_mult": 0.1}}, "train.custom_keys: expected parameter-name parts"),
    ([0.1], "train.custom_keys: expected a mapping"),
])
def test_custom_keys_are_validated(value, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(train__custom_keys=value)


def test_custom_keys_read_from_yaml_numbers():
    cfg = tiny_config(train__custom_keys={"backbone": {"lr_mult": "1e-1", "decay_mult": 0}})
    assert cfg.train.custom_keys == {"backbone": {"lr_mult": 0.1, "decay_mult": 0.0}}
