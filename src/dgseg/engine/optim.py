"""Optimizer parameter groups, LAMB, and the poly learning-rate schedule with linear warm-up.

The groups and the schedule follow Rein's official recipe (w1oves/Rein
``configs/dinov2/rein_dinov2_mask2former_*.py`` with ``rein/optimizers/peft_optimizer_constructor.py``,
built on mmengine's ``DefaultOptimWrapperConstructor`` and ``LinearLR`` / ``PolyLR``).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from dgseg.config import TrainConfig

NO_DECAY_KEYS = ("norm", "tokens", "prompts", "query_embed", "query_feat", "level_embed", "adapter.scale",
                 "pos_embed", "cls_token", "reg_token")
# ``norm_decay_mult=0`` of Rein's optimizer constructor: the parameters of these module types get no decay,
# whatever their names (the pixel decoder's ``...gn.weight``), as mmengine's ``is_norm`` decides.
NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                                nn.GroupNorm, nn.LayerNorm)


def norm_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the parameters owned directly by a normalisation layer (:data:`NORM_TYPES`)."""
    return {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}


def key_order(keys) -> list[str]:
    """``train.custom_keys`` in the order mmengine's ``DefaultOptimWrapperConstructor.add_params`` tries them:
    sorted alphabetically, then by length, longest first (a stable sort: keys of one length stay alphabetical)."""
    return sorted(sorted(keys or ()), key=len, reverse=True)


def key_in(key: str, name: str) -> bool:
    """``key`` is a substring of ``name``; a ``*`` in ``key`` stands for any run of characters (dgseg's one
    addition to mmengine's plain substrings: one key for every block, ``backbone.vit.blocks.*.norm1``)."""
    if "*" not in key:
        return key in name
    return re.search(".*".join(map(re.escape, key.split("*"))), name) is not None


def custom_key(name: str, ordered: list[str]) -> str | None:
    """The first key of ``ordered`` (:func:`key_order`) found in the full parameter name (:func:`key_in`)."""
    return next((key for key in ordered if key_in(key, name)), None)


def param_groups(model: nn.Module, cfg: TrainConfig, backbone_lr_mult: float = 1.0) -> list[dict]:
    """AdamW groups: no weight decay on normalisation layers (by module type, :data:`NORM_TYPES`) and on
    names holding one of ``cfg.no_decay_keys`` (null: :data:`NO_DECAY_KEYS`: norms, tokens, query/level/position
    embeddings, the Rein scale);
    backbone weights (when they train) get ``lr * backbone_lr_mult``.

    A parameter whose name holds a key of ``cfg.custom_keys`` (mmengine's ``paramwise_cfg.custom_keys``; the
    longest matching key, :func:`key_order`) gets that key's ``lr * lr_mult`` and ``weight_decay * decay_mult``
    and nothing else: the norm-type rule, ``no_decay_keys`` and ``backbone_lr_mult`` apply only to the other
    parameters (mmengine's ``is_custom``). Groups hold the parameters of one (lr, weight decay) pair, in the
    order of ``model.named_parameters()``; without keys (null) they are those of dgseg before the key existed."""
    groups: dict[tuple[float, float], list] = {}
    norms = norm_parameter_ids(model)
    keys = NO_DECAY_KEYS if cfg.no_decay_keys is None else tuple(cfg.no_decay_keys)
    custom = cfg.custom_keys or {}
    ordered = key_order(custom)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = custom_key(name, ordered)
        if key is not None:
            mults = custom[key]
            lr = cfg.lr * mults.get("lr_mult", 1.0)
            decay = cfg.weight_decay * mults.get("decay_mult", 1.0)
        else:
            decay = 0.0 if id(p) in norms or any(k in name for k in keys) else cfg.weight_decay
            lr = cfg.lr * (backbone_lr_mult if name.startswith("backbone.") else 1.0)
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def build_lamb(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2) as timm ships it
    (``timm.optim.Lamb``, NVIDIA's FusedLAMB behaviour): Adam moments with bias correction, betas
    (0.9, 0.999), eps 1e-6; for a tensor w with weight decay wd > 0 the step is
    ``w -= lr * (|w| / |u|) * u`` with ``u = m_hat / (sqrt(v_hat) + eps) + wd * w`` (trust ratio 1 when a
    norm is 0); tensors of the no-decay groups take the plain Adam step ``w -= lr * u`` (no layer
    adaptation, as the LAMB reference code excludes norms and biases from it). timm's own global
    gradient clipping (``max_grad_norm``) is off: dgseg clips with ``train.grad_clip``."""
    from timm.optim import Lamb

    return Lamb(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6, max_grad_norm=None, always_adapt=False)


def build_optimizer(model: nn.Module, cfg: TrainConfig, backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, backbone_lr_mult)
    if not groups:
        raise ValueError("nothing to train: no parameter of the model requires grad")
    if cfg.optimizer == "lamb":
        return build_lamb(groups, cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


WARMUP_START = 1e-6
"""``start_factor`` of Rein's ``LinearLR`` warm-up."""


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning-rate factor of iteration ``step`` (0-based): mmengine's ``LinearLR`` and ``PolyLR`` in
    closed form, as Rein's configs chain them (``param_scheduler = [LinearLR(begin=0, end=W), PolyLR(begin=B,
    end=max_iters)]``).

    - warm-up (``warmup_iters`` W > 0): ``s + (1 - s) * step / (W - 1)`` for step < W, s = 1e-6
      (mmengine: ``total_iters = end - begin - 1``, so the factor reaches 1.0 at step W - 1);
    - poly from ``poly_begin`` B: ``(1 - (step - B) / (max_iters - B - 1)) ** power`` for step >= B, 1 before;
      the poly factor starts at 1.0 at B and is 0 at the last iteration.

    Both are chained (multiplied) where they overlap, as mmengine's chainable schedulers are.
    """
    factor = 1.0
    w = cfg.warmup_iters
    if w > 0 and step < w:
        factor = WARMUP_START + (1.0 - WARMUP_START) * step / max(w - 1, 1)
    b = cfg.poly_begin
    if step >= b:
        # 1 - (step - B) / (T - B - 1) written as (T - 1 - step) / (T - B - 1): the integer numerator keeps
        # the digits that the subtraction from 1 loses near the end of the run (oracle: mmengine's PolyLR)
        span = cfg.max_iters - b - 1  # 0 when poly starts at the last iteration: mmengine keeps the lr there
        factor *= 1.0 if span <= 0 else (max(cfg.max_iters - 1 - step, 0) / span) ** cfg.power
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


def is_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def grad_norm(params) -> float:
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def lr_reference(optimizer: torch.optim.Optimizer, lr: float) -> tuple[int, float]:
    """(index, multiplier) of the parameter group that shows ``train.lr`` on its schedule, chosen from the groups
    as built (their initial lrs, before a warm-up scales them): the first at ``lr`` itself (multiplier 1), else (every parameter under a ``train.custom_keys``
    entry, or a backbone at its own multiplier) the first with a learning rate, at its lr / ``lr``. Chosen by
    position, not by value, so that after a resume (which restores the checkpoint's rates) the log still shows
    what that group applies, divided by its multiplier; (0, 0.0) when no group has a learning rate."""
    built = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]  # before any warm-up
    for i, group_lr in enumerate(built):
        if group_lr == lr:
            return i, 1.0
    for i, group_lr in enumerate(built):
        if group_lr > 0 and lr > 0:
            return i, group_lr / lr
    return 0, 0.0


__all__ = ["param_groups", "custom_key", "key_order", "build_optimizer", "build_lamb", "build_scheduler", "lr_factor",
           "lr_reference"]
