"""DenseCLIP's context decoder (post-model prompting): class embeddings attend to the visual context.

Follows ``ContextDecoder``, ``TransformerDecoderLayer`` and ``Attention`` of DenseCLIP's official code
(github raoyongming/DenseCLIP, ``segmentation/denseclip/models.py``) layer by layer and name by name, so
its weights map one to one: ``memory_proj`` (LN, Linear(D, w), LN), ``text_proj`` (LN, Linear(D, w)),
``decoder.i`` (pre-norm self-attention, cross-attention to the memory, MLP x4 with GELU; q/k/v without
bias, output projections with dropout), ``out_proj`` (LN, Linear(w, D)); Linear weights trunc-normal std
0.02 with zero bias, LayerNorms 1 / 0. The scale ``gamma`` of ``t + gamma * decoder(t, v)`` lives in the
caller (DenseCLIP keeps it in the segmentor, ``segmentation/denseclip/denseclip.py``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections (no bias) and a biased output projection."""

    def __init__(self, dim: int, heads: int, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"context decoder: width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q [B, N, C], k = v [B, M, C] -> [B, N, C]; softmax(q k^T / sqrt(C / heads)) v per head."""
        b, n, c = q.shape
        m = k.shape[1]
        q = self.q_proj(q).reshape(b, n, self.heads, -1).transpose(1, 2)
        k = self.k_proj(k).reshape(b, m, self.heads, -1).transpose(1, 2)
        v = self.v_proj(v).reshape(b, m, self.heads, -1).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class TransformerDecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = Attention(width, heads, proj_drop=dropout)
        self.cross_attn = Attention(width, heads, proj_drop=dropout)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * 4), nn.GELU(), nn.Dropout(dropout), nn.Linear(width * 4, width)
        )

    def forward(self, x: Tensor, mem: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)
        x = x + self.cross_attn(self.norm2(x), mem, mem)
        return x + self.dropout(self.mlp(self.norm3(x)))


class ContextDecoder(nn.Module):
    """``forward(text [B, K, D], visual [B, 1 + HW, D]) -> [B, K, D]``, the update the caller scales by gamma.

    ``visual`` is DenseCLIP's visual context: the global (cls) embedding followed by the dense embeddings,
    both after the image encoder's final norm and visual projection. For D = 768, width 256 and 3 layers
    it has 3,750,912 parameters.
    """

    def __init__(self, visual_dim: int, width: int = 256, heads: int = 4, layers: int = 3,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width), nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width))
        self.decoder = nn.ModuleList(TransformerDecoderLayer(width, heads, dropout) for _ in range(layers))
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, visual_dim))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, text: Tensor, visual: Tensor) -> Tensor:
        if text.ndim != 3 or visual.ndim != 3 or text.shape[0] != visual.shape[0] or text.shape[2] != visual.shape[2]:
            raise ValueError(f"ContextDecoder: expected text [B, K, D] and visual [B, 1 + HW, D], got "
                             f"{tuple(text.shape)} and {tuple(visual.shape)}")
        mem = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.decoder:
            x = layer(x, mem)
        return self.out_proj(x)
