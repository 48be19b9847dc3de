"""Which trainable parameters a training forward never reaches, found before DistributedDataParallel wraps the
model: DDP without ``find_unused_parameters`` waits for their gradients and stops at the second step ("Expected
to have finished reduction in the prior iteration"), while turning it on for every run costs a walk of the
autograd graph at every step. dgseg turns it on exactly when this check finds such parameters (full fine-tuning
leaves the backbone's final norm unread; ``out_indices`` short of the last block leave the blocks after it).

The check runs the model once on the meta device (shapes only: no memory, no arithmetic, no random draws):
every parameter and buffer replaced by a meta tensor, one [1, 3, H, W] image forward, and the gradient of the
sum of every output with respect to each trainable parameter; a parameter without one is unreached. The losses
are not part of the forward (the matcher needs numbers); their own inputs are the outputs summed here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten


class _Probe(nn.Module):
    """The forward and its backward in one call, so that both run while ``functional_call`` has the meta
    tensors in place (a checkpointed block recomputes its forward during the backward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, wrt: list[Tensor]) -> tuple[Tensor | None, ...] | None:
        leaves = [t for t in tree_flatten(self.model(image))[0] if isinstance(t, Tensor) and t.requires_grad]
        if not leaves:
            return None
        return torch.autograd.grad(sum(t.float().sum() for t in leaves), wrt, allow_unused=True)


def unreached_parameters(model: nn.Module, size: tuple[int, int]) -> list[str] | None:
    """Names of ``model``'s trainable parameters that its forward on one image of ``size`` (H, W) does not reach,
    in ``named_parameters`` order; ``None`` when the forward cannot run on the meta device (a data-dependent
    step), so the caller must assume some may be unreached."""
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        return []
    state = {f"model.{name}": torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
             for name, t in [*model.named_parameters(), *model.named_buffers()]}
    image = torch.zeros(1, 3, *size, device="meta")
    wrt = [state[f"model.{name}"] for name in trainable]
    try:
        grads = torch.func.functional_call(_Probe(model), state, (image, wrt))
    except Exception:  # noqa: BLE001 - any op without a meta kernel: the caller falls back to the safe setting
        return None
    if grads is None:
        return list(trainable)
    return [name for name, g in zip(trainable, grads) if g is None]
