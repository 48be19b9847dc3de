"""Rein (CVPR 2024): learnable low-rank tokens that refine a frozen ViT's features after every block.

Equations and initialisation follow the paper and its official code (rein/models/backbones/reins.py, class Reins)::

    T_i  = A_i @ B_i                                   # m x C  (full rank: a free m x C matrix)
    S_i  = softmax(f_i @ T_i^T * C^-0.5, dim=-1)       # B x N x m
    D_i  = S_i[:, :, 1:] @ token2feat(T_i[1:])         # token 0 is a sink, dropped after the softmax
    f_i' = f_i + scale * delta_f(D_i + f_i)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgseg.models.adapters.base import Adapter


class Rein(Adapter):
    """Rein tokens for ``num_layers`` blocks of width ``embed_dim``.

    Parameters: ``tokens_a`` [L, m, r] and ``tokens_b`` [L, r, C] (rank > 0) or ``tokens`` [L, m, C];
    ``token2feat`` and ``delta_f`` (Linear(C, C), one shared or a ModuleList of L); ``scale`` [];
    with ``link``: ``query_proj`` (Linear(C, query_dim), shared or per layer) and ``query_merge``.
    """

    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        patch_size: int,
        tokens: int = 100,
        rank: int = 16,
        shared: bool = True,
        link: bool = True,
        query_dim: int = 256,
        scale_init: float = 1e-3,
        layers: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.num_tokens = tokens
        self.rank = rank
        self.shared = shared
        self.link = link
        self.query_dim = query_dim
        self.layers = list(range(num_layers)) if layers is None else list(layers)
        if len(self.layers) != num_layers:
            raise ValueError(f"Rein: {len(self.layers)} layers given for num_layers={num_layers}")
        self._slot = {layer: i for i, layer in enumerate(self.layers)}
        patch_area = patch_size * patch_size
        if rank > 0:
            self.tokens_a = nn.Parameter(torch.empty(num_layers, tokens, rank))
            self.tokens_b = nn.Parameter(torch.empty(num_layers, rank, embed_dim))
            bound = math.sqrt(6.0 / float(3 * patch_area + math.sqrt(embed_dim * rank)))
            nn.init.uniform_(self.tokens_a, -bound, bound)
            nn.init.uniform_(self.tokens_b, -bound, bound)
        else:
            self.tokens = nn.Parameter(torch.empty(num_layers, tokens, embed_dim))
            bound = math.sqrt(6.0 / float(3 * patch_area + embed_dim))
            nn.init.uniform_(self.tokens, -bound, bound)

        def linear(out_dim: int) -> nn.Module:
            if shared:
                return nn.Linear(embed_dim, out_dim)
            return nn.ModuleList(nn.Linear(embed_dim, out_dim) for _ in range(num_layers))

        self.token2feat = linear(embed_dim)
        self.delta_f = linear(embed_dim)
        self.scale = nn.Parameter(torch.tensor(scale_init))
        if link:
            self.query_proj = linear(query_dim)
            self.query_merge = nn.Linear(3 * query_dim, query_dim)

    def layer_tokens(self, slot: int) -> Tensor:
        """T_i [m, C] of the ``slot``-th Rein layer."""
        if self.rank > 0:
            return self.tokens_a[slot] @ self.tokens_b[slot]
        return self.tokens[slot]

    def all_tokens(self) -> Tensor:
        """T [L, m, C] for all layers in one batched product."""
        if self.rank > 0:
            return torch.bmm(self.tokens_a, self.tokens_b)
        return self.tokens

    @staticmethod
    def _pick(module: nn.Module, slot: int) -> nn.Module:
        return module[slot] if isinstance(module, nn.ModuleList) else module

    def forward(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        """Refine ``x`` [B, P + N, C] after block ``layer``; prefix tokens pass through unchanged.

        Written for speed and activation memory, equal to the equations above:

        - all P + N tokens go through (no slicing of ``x`` and no ``cat`` at the end: two copies of the
          token tensor per layer saved) and the P prefix rows of the result are set back to ``x``'s;
        - the sink: token 0's feature row is zero, so ``attn @ rows`` over all m tokens is
          ``attn[..., 1:] @ token2feat(T[1:])`` without copying a slice of ``attn``;
        - ``scale * delta_f(h)`` is computed as ``F.linear(h, scale * W, scale * b)``, so autograd need
          not keep the B x N x C output of ``delta_f`` for the gradient of ``scale``.
        """
        slot = self._slot[layer]
        tokens = self.layer_tokens(slot).to(x.dtype)
        attn = torch.matmul(x, tokens.t()) * (self.embed_dim ** -0.5)
        attn = attn.softmax(dim=-1)
        rows = self._pick(self.token2feat, slot)(tokens[1:])
        delta = torch.matmul(attn, F.pad(rows, (0, 0, 1, 0)))  # row 0 (the sink) is zero
        delta_f = self._pick(self.delta_f, slot)
        out = x + F.linear(delta + x, delta_f.weight * self.scale, delta_f.bias * self.scale)
        if num_prefix_tokens:
            out[:, :num_prefix_tokens] = x[:, :num_prefix_tokens]
        return out

    def after_block(self, x: Tensor, layer: int, num_prefix: int) -> Tensor:
        return self(x, layer, num_prefix)

    def queries(self) -> Tensor | None:
        """Rein-link object queries [m, query_dim]: merge of max / mean / last over the layers."""
        if not self.link:
            return None
        tokens = self.all_tokens()
        if isinstance(self.query_proj, nn.ModuleList):
            q = torch.stack([proj(tokens[i]) for i, proj in enumerate(self.query_proj)])
        else:
            q = self.query_proj(tokens)  # L x m x D
        q = q.permute(1, 2, 0)  # m x D x L
        q = torch.stack([q.max(dim=-1).values, q.mean(dim=-1), q[:, :, -1]], dim=-1)  # m x D x 3
        return self.query_merge(q.flatten(-2))
