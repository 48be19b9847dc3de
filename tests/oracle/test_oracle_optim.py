"""Oracle: dgseg's optimizer (parameter groups, AdamW settings, gradient clipping) and learning-rate
schedule against mmengine 0.10.7's own classes, built from the official configs' values.

Official files the values come from (each value is named next to its copy below):

- w1oves/Rein ``configs/dinov2/rein_dinov2_mask2former_512x512_bs1x4.py`` (Rein) and
  ``configs/dinov2/dinov2_mask2former_512x512_bs1x4.py`` (full fine-tuning): the same ``optim_wrapper``
  (constructor ``PEFTOptimWrapperConstructor``, AdamW, ``paramwise_cfg``, no ``clip_grad``) and
  ``param_scheduler`` (one ``PolyLR`` over 40k iterations, no warm-up);
- w1oves/Rein ``configs/_base_/schedules/schedule_40k.py``: ``LinearLR`` warm-up + ``PolyLR`` (a base
  file the DINOv2 configs above do not include; dgseg's ``train.warmup_iters`` claims to reproduce it);
- VLTSeg ``configs/_base_/schedules/schedule_5k.py``: AdamW, ``clip_grad`` and ``PolyLR(begin=500)``.
  github VLTSeg/VLTSeg is not in the reference store; the file was read from its copy jangminhyeok/VLTSeg
  (commit 9089d8aa).

Parameter groups. Rein's ``PEFTOptimWrapperConstructor.add_params`` (rein/optimizers/
peft_optimizer_constructor.py) is mmengine 0.10.7's ``DefaultOptimWrapperConstructor.add_params`` line for
line as far as lr and weight decay go (both skip frozen parameters, match ``custom_keys`` by substring of
the full name, longest key first, else apply ``norm_decay_mult`` to parameters owned directly by a
``_BatchNorm`` / ``_InstanceNorm`` / ``GroupNorm`` / ``LayerNorm``); its ``__call__`` adds ``model.train()``,
which freezes the backbone in Rein (dgseg's model is frozen from construction). So mmengine's class is run.
It sees dgseg's own ``Parameter`` objects, each under its official name and inside a shallow copy of the
module that owns it in dgseg (so mmengine's ``isinstance`` norm test sees dgseg's module classes):
``backbone.vit.*`` -> ``backbone.*`` (DINOv2's names), ``adapter.*`` -> ``backbone.reins.*`` (LoRAReins'
names, :data:`ADAPTER_NAMES`), ``head.*`` -> ``decode_head.*`` (mmdet's names, checked against mmseg's
head below). The tiny backbone is dgseg's test ViT (tests/tiny.py), random weights, on the CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from pathlib import Path

import mmcv_shim
from official_view import official_view as shared_official_view

mmcv_shim.require_oracle()

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny import TINY_HEAD, tiny_config  # noqa: E402
from torch import nn  # noqa: E402

import dgseg  # noqa: E402
from dgseg.config import TrainConfig  # noqa: E402
from dgseg.engine.optim import NORM_TYPES, build_optimizer, build_scheduler, param_groups  # noqa: E402

CONFIGS = Path(dgseg.__file__).parent / "configs"

# ------------------------------------------------------------------------ official values (copied)
# rein_dinov2_mask2former_512x512_bs1x4.py and dinov2_mask2former_512x512_bs1x4.py (identical dicts);
# the constructor "PEFTOptimWrapperConstructor" is run as mmengine's DefaultOptimWrapperConstructor (above)
EMBED_MULTI = dict(lr_mult=1.0, decay_mult=0.0)  # both Rein DINOv2 configs: embed_multi
REIN_OPTIMIZER = dict(type="AdamW", lr=0.0001, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999))  # both
REIN_PARAMWISE = dict(  # both Rein DINOv2 configs: optim_wrapper.paramwise_cfg
    custom_keys={"norm": dict(decay_mult=0.0), "query_embed": EMBED_MULTI, "level_embed": EMBED_MULTI,
                 "learnable_tokens": EMBED_MULTI, "reins.scale": EMBED_MULTI},
    norm_decay_mult=0.0,
)
REIN_CLIP_GRAD = None  # both Rein DINOv2 configs: optim_wrapper has no clip_grad
REIN_POLY = [dict(type="PolyLR", eta_min=0, power=0.9, begin=0, end=40000, by_epoch=False)]  # both
REIN_MAX_ITERS = 40000  # both: train_cfg max_iters
REIN_WARMUP_POLY = [  # Rein configs/_base_/schedules/schedule_40k.py
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1000),
    dict(type="PolyLR", eta_min=0.0, power=0.9, begin=1000, end=40000, by_epoch=False),
]
VLTSEG_OPTIMIZER = dict(type="AdamW", lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999))  # schedule_5k.py
VLTSEG_CLIP_GRAD = dict(max_norm=0.01, norm_type=2)  # VLTSeg schedule_5k.py: optim_wrapper.clip_grad
VLTSEG_POLY = [dict(type="PolyLR", eta_min=0, power=0.9, begin=500, end=5000, by_epoch=False)]  # schedule_5k.py
VLTSEG_MAX_ITERS = 5000  # VLTSeg schedule_5k.py: iterations

# dgseg adapter name -> LoRAReins name (Rein rein/models/backbones/reins.py: Reins.create_model, LoRAReins)
ADAPTER_NAMES = {"tokens_a": "learnable_tokens_a", "tokens_b": "learnable_tokens_b", "scale": "scale",
                 "token2feat": "mlp_token2feat", "delta_f": "mlp_delta_f", "query_proj": "transform",
                 "query_merge": "merge"}
LR_RTOL = 1e-12


def official_name(name: str) -> str:
    if name.startswith("backbone.vit."):
        return "backbone." + name[len("backbone.vit."):]
    if name.startswith("adapter."):
        first, dot, rest = name[len("adapter."):].partition(".")
        return "backbone.reins." + ADAPTER_NAMES[first] + dot + rest
    if name.startswith("head."):
        return "decode_head." + name[len("head."):]
    raise KeyError(f"no official name for {name}")


def official_view(model: nn.Module) -> nn.Module:
    return shared_official_view(model, official_name)


def mmengine_optim_wrapper(module: nn.Module, optimizer: dict, paramwise_cfg: dict | None, clip_grad=None):
    from mmengine.optim import DefaultOptimWrapperConstructor

    cfg = dict(type="OptimWrapper", optimizer=dict(optimizer))
    if clip_grad is not None:
        cfg["clip_grad"] = dict(clip_grad)
    return DefaultOptimWrapperConstructor(cfg, paramwise_cfg)(module)


def lr_wd_by_param(optimizer: torch.optim.Optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def recipe(name: str):
    return dgseg.load_config(CONFIGS / name)


def adapter_dict(cfg) -> dict:
    return dataclasses.asdict(cfg.model.adapter)


def tiny_model(adapter: dict) -> nn.Module:
    """The tiny ViT with the recipe's adapter (Rein: 8 tokens of query width 32 for the tiny head)."""
    if adapter["name"] == "rein":
        adapter = {**adapter, "tokens": 8, "query_dim": 32}
    torch.manual_seed(0)
    return dgseg.build_model(tiny_config(model__adapter=adapter))


def dgseg_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """As the trainer builds it (dgseg/engine/train_setup.py ``_build_model_and_optimizer``)."""
    lr_mult = getattr(model.adapter, "lr_mult", 1.0) if model.adapter.trains_backbone else 1.0
    return build_optimizer(model, train, backbone_lr_mult=lr_mult)


def group_differences(model: nn.Module, train: TrainConfig) -> list[str]:
    """Every trainable parameter whose (lr, weight decay) differs between dgseg and mmengine."""
    ours = lr_wd_by_param(dgseg_optimizer(model, train))
    theirs = lr_wd_by_param(mmengine_optim_wrapper(official_view(model), REIN_OPTIMIZER, REIN_PARAMWISE).optimizer)
    names = {id(p): official_name(n) for n, p in model.named_parameters()}
    assert ours.keys() == theirs.keys(), "not the same trainable parameters"
    return [f"{names[k]}: dgseg (lr, wd) {ours[k]} vs mmengine {theirs[k]}" for k in ours if ours[k] != theirs[k]]


# ------------------------------------------------------------------------------------- parameter groups
def test_the_dgseg_under_test_is_this_checkout():
    assert Path(dgseg.__file__).resolve().is_relative_to(Path(__file__).resolve().parents[2] / "src")


def test_head_parameters_map_onto_mmseg_head_names():
    """The ``head.* -> decode_head.*`` rule lands on mmseg's own Mask2FormerHead names (the tiny sizes);
    Rein-link drops ``query_embed`` / ``query_feat`` for ``querys2feat`` (Rein rein/models/heads/
    rein_mask2former.py, ``ReinMask2FormerHead(replace_query_feat=True)``). The official DINOv2 backbone also
    has a ``mask_token`` that dgseg lacks: trainable in full fine-tuning, but never given a gradient."""
    from rein_head_config import build_mmseg_head

    sizes = {k: TINY_HEAD[k] for k in ("num_queries", "num_heads", "enc_layers", "enc_ffn", "dec_layers", "dec_ffn")}
    mmseg = build_mmseg_head(in_channels=[32] * 4, num_classes=19, feat_channels=TINY_HEAD["hidden_dim"], **sizes)
    theirs = {f"decode_head.{n}" for n, _ in mmseg.named_parameters()}
    full = tiny_model({"name": "full", "link": False, "lr_mult": 1.0})
    assert {official_name(n) for n, _ in full.named_parameters() if n.startswith("head.")} == theirs
    rein = tiny_model(adapter_dict(recipe("rein_dinov2_l_gta.yaml")))
    linked = {official_name(n) for n, _ in rein.named_parameters() if n.startswith("head.")}
    dropped = {"decode_head.query_embed.weight", "decode_head.query_feat.weight"}
    assert linked == (theirs - dropped) | {"decode_head.querys2feat.weight", "decode_head.querys2feat.bias"}


def test_rein_recipe_groups_equal_mmengine_constructor_from_official_paramwise_cfg():
    """rein_dinov2_l_gta.yaml on the tiny ViT: per trainable parameter (adapter tokens / scale / linears,
    every head parameter incl. GroupNorms, level encodings, querys2feat, biases) the same lr and decay."""
    cfg = recipe("rein_dinov2_l_gta.yaml")
    model = tiny_model(adapter_dict(cfg))
    assert group_differences(model, cfg.train) == []


def test_full_fine_tuning_at_the_official_backbone_lr_equals_mmengine():
    """full_dinov2_l_gta.yaml with ``model.adapter.lr_mult=1.0`` (its own comment: the official file's
    backbone lr): every backbone and head parameter (pos_embed, cls_token, LayerScale, norms, biases,
    query_embed / query_feat / level_embed) gets mmengine's lr and decay."""
    cfg = recipe("full_dinov2_l_gta.yaml")
    model = tiny_model(adapter_dict(cfg) | {"lr_mult": 1.0})
    assert group_differences(model, cfg.train) == []


def test_full_fine_tuning_as_shipped_differs_from_the_official_file_only_in_the_papers_backbone_lr():
    """full_dinov2_l_gta.yaml ships ``model.adapter.lr_mult: 0.1`` on purpose (the paper's Table 3: backbone lr x
    0.1), where dinov2_mask2former_512x512_bs1x4.py has no backbone multiplier: every trainable backbone
    parameter, and nothing else, gets 1e-05 against mmengine's 1e-04; weight decay agrees everywhere."""
    cfg = recipe("full_dinov2_l_gta.yaml")
    model = tiny_model(adapter_dict(cfg))
    diffs = group_differences(model, cfg.train)
    backbone = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    assert backbone and len(diffs) == len(backbone)
    lr, wd = REIN_OPTIMIZER["lr"], REIN_OPTIMIZER["weight_decay"]
    for diff in diffs:
        assert diff.startswith("backbone.") and "dgseg (lr, wd) (1e-05, " in diff and f"mmengine ({lr}, " in diff
        assert diff.split("dgseg (lr, wd) (1e-05, ")[1].split(")")[0] == diff.split(f"mmengine ({lr}, ")[1].split(")")[0]
    assert wd == 0.05


def test_norm_layers_are_the_module_types_mmengine_treats_as_norms():
    """``norm_decay_mult=0``: mmengine's ``is_norm`` types are dgseg's NORM_TYPES; probed on parameters whose
    names hold no custom key (a BatchNorm, SyncBatchNorm, InstanceNorm, GroupNorm, LayerNorm, timm's
    LayerNorm2d subclass; RMSNorm and a Linear are no norm to either, their biases decay)."""
    from mmengine.optim.optimizer import default_constructor as dc
    from timm.layers import LayerNorm2d

    assert set(NORM_TYPES) == {dc._BatchNorm, dc._InstanceNorm, dc.GroupNorm, dc.LayerNorm}
    probe = nn.Sequential(nn.BatchNorm2d(4), nn.SyncBatchNorm(4), nn.InstanceNorm2d(4, affine=True),
                          nn.GroupNorm(2, 4), nn.LayerNorm(4), LayerNorm2d(4), nn.RMSNorm(4), nn.Linear(4, 4))
    train = TrainConfig(lr=REIN_OPTIMIZER["lr"], weight_decay=REIN_OPTIMIZER["weight_decay"],
                        no_decay_keys=list(REIN_PARAMWISE["custom_keys"]))
    ours = {id(p): (g["lr"], g["weight_decay"]) for g in param_groups(probe, train) for p in g["params"]}
    theirs = lr_wd_by_param(mmengine_optim_wrapper(probe, REIN_OPTIMIZER, REIN_PARAMWISE).optimizer)
    decays = {n: theirs[id(p)][1] for n, p in probe.named_parameters()}
    assert decays["6.weight"] == decays["7.bias"] == 0.05 and decays["0.bias"] == 0.0
    assert ours == theirs


# ------------------------------------------------------------------------------ AdamW and clipping
@pytest.mark.parametrize("config", ["rein_dinov2_l_gta.yaml", "full_dinov2_l_gta.yaml"])
def test_adamw_settings_and_one_step_equal_mmengine(config):
    """torch AdamW with the official lr / betas / eps / amsgrad; every dgseg group sets its own weight decay
    (so the optimizer-wide default, torch's 0.01 in dgseg, is never read), and one step from the same
    gradients moves every parameter exactly as mmengine's optimizer does (full: at lr_mult 1.0)."""
    cfg = recipe(config)
    adapter = adapter_dict(cfg) | ({"lr_mult": 1.0} if adapter_dict(cfg)["name"] == "full" else {})
    ours_model, their_model = tiny_model(adapter), tiny_model(adapter)
    ours = dgseg_optimizer(ours_model, cfg.train)
    theirs = mmengine_optim_wrapper(official_view(their_model), REIN_OPTIMIZER, REIN_PARAMWISE).optimizer
    assert type(ours) is type(theirs) is torch.optim.AdamW
    skip = {"weight_decay"}
    assert {k: v for k, v in ours.defaults.items() if k not in skip} == \
        {k: v for k, v in theirs.defaults.items() if k not in skip}
    assert cfg.train.weight_decay == REIN_OPTIMIZER["weight_decay"]
    assert all("weight_decay" in g for g in ours.param_groups)
    g = torch.Generator().manual_seed(1)
    for a, b in zip(ours_model.parameters(), their_model.parameters(), strict=True):
        if a.requires_grad:
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
    ours.step()
    theirs.step()
    for (n, a), (_, b) in zip(ours_model.named_parameters(), their_model.named_parameters(), strict=True):
        assert torch.equal(a, b), n


@pytest.mark.parametrize(("config", "clip_grad"), [("rein_dinov2_l_gta.yaml", REIN_CLIP_GRAD),
                                                   ("full_dinov2_l_gta.yaml", REIN_CLIP_GRAD),
                                                   ("vltseg_plain_eva02_clip_l_gta.yaml", VLTSEG_CLIP_GRAD)])
def test_gradient_clipping_equals_mmengine_optim_wrapper(config, clip_grad):
    """None for Rein (no ``clip_grad``); VLTSeg: max norm 0.01, L2. The gradients after dgseg's trainer
    clips (``train._clip_gradients``) equal those after mmengine's ``OptimWrapper._clip_grad``."""
    from dgseg.engine.train import _clip_gradients

    cfg = recipe(config)
    ours_params = [nn.Parameter(torch.zeros(s)) for s in ((3, 5), (5,), (7,))]
    their_params = [nn.Parameter(torch.zeros(s)) for s in ((3, 5), (5,), (7,))]
    g = torch.Generator().manual_seed(2)
    for a, b in zip(ours_params, their_params, strict=True):
        a.grad = torch.randn(a.shape, generator=g)
        b.grad = a.grad.clone()
    wrapper = mmengine_optim_wrapper(nn.ParameterList(their_params), VLTSEG_OPTIMIZER, None, clip_grad)
    assert wrapper.clip_grad_kwargs == (dict(clip_grad) if clip_grad else None)
    expected_clip = None if clip_grad is None else clip_grad["max_norm"]
    assert cfg.train.grad_clip == expected_clip and (clip_grad is None or clip_grad["norm_type"] == 2)
    if clip_grad is not None:
        wrapper._clip_grad()
    run = types.SimpleNamespace(scaler=torch.amp.GradScaler("cpu", enabled=False), trainable=ours_params,
                                cfg=cfg, optimizer=None)
    _clip_gradients(run)
    for a, b in zip(ours_params, their_params, strict=True):
        assert torch.equal(a.grad, b.grad)


# --------------------------------------------------------------------------------- learning-rate schedule
def mmengine_lrs(schedulers: list[dict], max_iters: int, lr: float) -> list[float]:
    """The lr of each iteration as mmengine's runner sets it: schedulers built on the optimizer, stepped in
    order after every iteration (ParamSchedulerHook.after_train_iter, by_epoch=False)."""
    from mmengine.optim import LinearLR, PolyLR

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    classes = {"LinearLR": LinearLR, "PolyLR": PolyLR}
    built = [classes[c["type"]](opt, **{k: v for k, v in c.items() if k != "type"}) for c in schedulers]
    lrs = []
    for _ in range(max_iters):
        lrs.append(opt.param_groups[0]["lr"])
        for s in built:
            s.step()
    return lrs


def dgseg_lrs(train: TrainConfig) -> list[float]:
    """The lr of each iteration as dgseg's trainer sets it (scheduler stepped after each optimizer step)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=train.lr)
    sched = build_scheduler(opt, train)
    lrs = []
    for _ in range(train.max_iters):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def check_points(max_iters: int, *boundaries: int) -> list[int]:
    points = {0, 1, 2, 100, max_iters // 2, max_iters - 2, max_iters - 1}
    for b in boundaries:
        points |= {b - 1, b, b + 1}
    return sorted(p for p in points if 0 <= p < max_iters)


def assert_same_lrs(ours: list[float], theirs: list[float], points: list[int]) -> None:
    assert len(ours) == len(theirs)
    bad = {i: (ours[i], theirs[i]) for i in points if not math.isclose(ours[i], theirs[i], rel_tol=LR_RTOL)}
    assert not bad, f"iteration: (dgseg, mmengine) {bad}"


@pytest.mark.parametrize("config", ["rein_dinov2_l_gta.yaml", "full_dinov2_l_gta.yaml"])
def test_rein_40k_poly_schedule_equals_mmengine(config):
    train = recipe(config).train
    assert (train.max_iters, train.lr) == (REIN_MAX_ITERS, REIN_OPTIMIZER["lr"])
    ours, theirs = dgseg_lrs(train), mmengine_lrs(REIN_POLY, REIN_MAX_ITERS, REIN_OPTIMIZER["lr"])
    assert_same_lrs(ours, theirs, check_points(REIN_MAX_ITERS))
    assert theirs[-1] == ours[-1] == 0.0


@functools.cache
def warmup_poly_lrs() -> tuple[list[float], list[float]]:
    """schedule_40k.py's LinearLR(1e-6, 0 -> 1000) + PolyLR(1000 -> 40000) as dgseg's warmup_iters /
    poly_begin (no shipped dgseg config uses it; the DINOv2 configs do not include that base file)."""
    train = TrainConfig(max_iters=REIN_MAX_ITERS, lr=REIN_OPTIMIZER["lr"], power=0.9, warmup_iters=1000,
                        poly_begin=1000)
    return dgseg_lrs(train), mmengine_lrs(REIN_WARMUP_POLY, REIN_MAX_ITERS, REIN_OPTIMIZER["lr"])


def test_rein_base_schedule_warmup_then_poly_equals_mmengine():
    ours, theirs = warmup_poly_lrs()
    assert_same_lrs(ours, theirs, check_points(REIN_MAX_ITERS, 1000, 999, 500))
    assert ours[999] == REIN_OPTIMIZER["lr"] and ours[-1] == theirs[-1] == 0.0  # mmengine: 1e-4 * (1 + 3e-15)


def test_vltseg_5k_schedule_constant_then_poly_equals_mmengine():
    train = recipe("vltseg_plain_eva02_clip_l_gta.yaml").train
    assert (train.max_iters, train.lr, train.warmup_iters) == (VLTSEG_MAX_ITERS, VLTSEG_OPTIMIZER["lr"], 0)
    ours, theirs = dgseg_lrs(train), mmengine_lrs(VLTSEG_POLY, VLTSEG_MAX_ITERS, VLTSEG_OPTIMIZER["lr"])
    assert_same_lrs(ours, theirs, check_points(VLTSEG_MAX_ITERS, 500))
    assert theirs[499] == theirs[500] == VLTSEG_OPTIMIZER["lr"]
