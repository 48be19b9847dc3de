"""Which trainable parameters a training forward never reaches, found before DistributedDataParallel wraps the
model: DDP without ``find_unused_parameters`` waits for their gradients and stops at the second step ("Expected
to have finished reduction in the prior iteration"), while turning it on for every run costs a walk of the
autograd graph at every step. dgseg turns it on exactly when this check finds such parameters (full fine-tuning
leaves the backbone's final norm unread; ``out_indices`` short of the last block leave the blocks after it).

The check runs the model once on the meta device (shapes only: no memory, no arithmetic, no random draws):
every parameter and buffer replaced by a meta tensor, one [1, 3, H, W] image forward, and a walk of its
autograd graph from every output down to the leaves; a trainable parameter the walk does not reach is
unread. The losses are not part of the forward (the matcher needs numbers); their inputs are these outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten


def _reached(outputs) -> set[int]:
    """ids of the leaf tensors the autograd graph of ``outputs`` leads to, found by walking the graph
    (``grad_fn.next_functions`` down to each ``AccumulateGrad``'s variable). Nothing is run backward: the
    autograd engine would start a worker thread for the meta device, which can abort the process at exit."""
    leaves = [t for t in tree_flatten(outputs)[0] if isinstance(t, Tensor) and t.requires_grad]
    found = {id(t) for t in leaves if t.grad_fn is None}
    stack, seen = [t.grad_fn for t in leaves if t.grad_fn is not None], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)  # AccumulateGrad: a leaf
        if variable is not None:
            found.add(id(variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


class _Probe(nn.Module):
    """The forward and the walk of its graph in one call, while ``functional_call`` has the meta tensors in
    place."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> set[int]:
        return _reached(self.model(image))


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
    try:
        reached = torch.func.functional_call(_Probe(model), state, (image,))
    except Exception:  # noqa: BLE001 - any op without a meta kernel: the caller falls back to the safe setting
        return None
    return [name for name in trainable if id(state[f"model.{name}"]) not in reached]
