"""Optimizer parameter groups, LAMB, and the poly learning-rate schedule with linear warm-up."""

from __future__ import annotations

import torch
from torch import nn

from dgseg.config import TrainConfig

NO_DECAY_KEYS = ("norm", "tokens", "prompts", "query_embed", "query_feat", "level_embed", "adapter.scale",
                 "pos_embed", "cls_token", "reg_token")


def param_groups(model: nn.Module, cfg: TrainConfig, backbone_lr_mult: float = 1.0) -> list[dict]:
    """AdamW groups: no weight decay on norms, tokens, query/level embeddings, position embeddings and the
    Rein scale; backbone weights (when they train) get ``lr * backbone_lr_mult``."""
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if any(k in name for k in NO_DECAY_KEYS) else cfg.weight_decay
        lr = cfg.lr * (backbone_lr_mult if name.startswith("backbone.") else 1.0)
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020): Adam moments with a per-tensor trust ratio ||w|| / ||update||."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update + group["weight_decay"] * p
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def build_optimizer(model: nn.Module, cfg: TrainConfig, backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg, backbone_lr_mult)
    if not groups:
        raise ValueError("nothing to train: no parameter of the model requires grad")
    if cfg.optimizer == "lamb":
        return Lamb(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Poly decay ``(1 - step / max_iters) ** power`` after a linear warm-up of ``warmup_iters`` steps."""
    if cfg.warmup_iters and step < cfg.warmup_iters:
        return 1e-6 + (1 - 1e-6) * step / cfg.warmup_iters
    return max(1.0 - step / cfg.max_iters, 0.0) ** cfg.power


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


def is_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def grad_norm(params) -> float:
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


__all__ = ["param_groups", "build_optimizer", "build_scheduler", "lr_factor", "Lamb"]
