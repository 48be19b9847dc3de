"""LoRA (rank r on the attention query and value projections) as hooks on timm's attention layers.

The frozen projection is left untouched; its output gets ``(alpha / r) * B(A(x))`` added on the q and v
slices (a fused ``qkv`` Linear) or on ``q_proj`` / ``v_proj``. ``B`` starts at zero, so training
starts from the pretrained function.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgseg.models.adapters.base import Adapter


class LoRALinear(nn.Module):
    """``x -> scale * B(A(x))`` with A: C_in -> r (Kaiming-uniform) and B: r -> C_out (zeros), no bias."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, scale: float = 1.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.empty(rank, in_dim))
        self.b = nn.Parameter(torch.zeros(out_dim, rank))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.a.t().to(x.dtype)) @ self.b.t().to(x.dtype) * self.scale


class LoRA(Adapter):
    def __init__(self, num_layers: int, embed_dim: int, rank: int = 8, alpha: float | None = None) -> None:
        super().__init__()
        self.rank = rank
        scale = (alpha if alpha is not None else rank) / rank
        self.q = nn.ModuleList(LoRALinear(embed_dim, embed_dim, rank, scale) for _ in range(num_layers))
        self.v = nn.ModuleList(LoRALinear(embed_dim, embed_dim, rank, scale) for _ in range(num_layers))
        self._handles: list = []

    def attach(self, backbone: nn.Module) -> None:
        for i, blk in enumerate(backbone.vit.blocks):
            attn = blk.attn
            qkv = getattr(attn, "qkv", None)
            if isinstance(qkv, nn.Linear):
                if getattr(attn, "q_bias", None) is not None and hasattr(attn, "qkv_bias_separate"):
                    # timm's Eva attention (EVA02, DINOv3) adds its q/v biases through
                    # F.linear(x, qkv.weight, bias), which bypasses qkv's forward and so this hook: make it
                    # call qkv(x) and add the bias after (the same function)
                    attn.qkv_bias_separate = True
                self._handles.append(qkv.register_forward_hook(self._fused_hook(i)))
            elif isinstance(getattr(attn, "q_proj", None), nn.Linear):
                self._handles.append(attn.q_proj.register_forward_hook(self._add_hook(self.q[i])))
                self._handles.append(attn.v_proj.register_forward_hook(self._add_hook(self.v[i])))
            else:
                raise ValueError(f"LoRA: block {i} of '{backbone.name}' has no qkv / q_proj+v_proj Linear")

    def _fused_hook(self, i: int):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
            x = args[0]
            c = out.shape[-1] // 3
            zeros = out.new_zeros(*out.shape[:-1], c)
            return out + torch.cat([self.q[i](x), zeros, self.v[i](x)], dim=-1)

        return hook

    @staticmethod
    def _add_hook(lora: LoRALinear):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
            return out + lora(args[0])

        return hook
