"""Transformer pieces of the Mask2Former head: sine position encoding, FFN, attention with residual,
and the masked-attention decoder (mmdet 3.x `Mask2FormerTransformerDecoder`).

Submodule names follow mmdet/mmcv (`layers.{i}.cross_attn.attn`, `layers.{i}.ffn.layers.0.0`,
`layers.{i}.norms.{0,1,2}`, `post_norm`), so an mmdet state dict loads unrenamed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sine_positional_encoding(
    height: int,
    width: int,
    num_feats: int = 128,
    device: torch.device | str | None = None,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    eps: float = 1e-6,
) -> Tensor:
    """mmdet's `SinePositionalEncoding(num_feats, normalize=True)` (offset 0) for an unpadded map.

    Row y (1-based) is encoded from y / (H + eps) * scale, column x likewise; channel pairs are
    (sin, cos) of that value over temperature^(2k / num_feats).

    Returns:
        1 x (2 * num_feats) x H x W, float32: the y features first, then the x features.
    """
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def encode(v: Tensor) -> Tensor:  # N -> N x num_feats, (sin, cos) interleaved
        p = v[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, num_feats)
    pos_x = encode(x)[None, :, :].expand(height, width, num_feats)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).unsqueeze(0)


class FFN(nn.Module):
    """Two-layer MLP with ReLU and residual: x + fc2(relu(fc1(x))) (mmcv `FFN`, num_fcs=2)."""

    def __init__(self, embed_dims: int = 256, feedforward_channels: int = 1024):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.ReLU(inplace=True)),
            nn.Linear(feedforward_channels, embed_dims),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class MultiheadAttention(nn.Module):
    """mmcv `MultiheadAttention`: positions added to query and key (not value), residual added.

    The weights live in an `nn.MultiheadAttention` (`attn.in_proj_weight`, `attn.out_proj`, as in mmcv),
    but the forward is written out batch first: three projections and `scaled_dot_product_attention`.
    `nn.MultiheadAttention(batch_first=True)` with a key that is not the value transposes its inputs to
    non-contiguous sequence-first views, and at batch > 1 its projection matmuls then expand the weight
    once per key (1.25 s against 0.1 s for 4,096 keys at batch 6 on a CPU core).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, batch_first=True)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        query_pos: Tensor | None = None,
        key_pos: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """query B x Q x C, key/value B x K x C; attn_mask (B*heads) x Q x K bool, True = blocked."""
        q = query if query_pos is None else query + query_pos
        k = key if key_pos is None else key + key_pos
        b, nq, c = q.shape
        nk, heads = k.shape[1], self.attn.num_heads
        w_q, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.attn.in_proj_bias.chunk(3)
        q = F.linear(q, w_q, b_q).view(b, nq, heads, -1).transpose(1, 2)
        k = F.linear(k, w_k, b_k).view(b, nk, heads, -1).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(b, nk, heads, -1).transpose(1, 2)
        allowed = None if attn_mask is None else ~attn_mask.view(b, heads, nq, nk)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return query + self.attn.out_proj(out.transpose(1, 2).reshape(b, nq, c))


class MaskedAttentionDecoderLayer(nn.Module):
    """Mask2Former decoder layer, post-norm: masked cross-attention -> norm -> self-attention -> norm ->
    FFN -> norm (mmdet `Mask2FormerTransformerDecoderLayer`)."""

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, feedforward_channels: int = 2048):
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dims, num_heads)
        self.cross_attn = MultiheadAttention(embed_dims, num_heads)
        self.ffn = FFN(embed_dims, feedforward_channels)
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(3))

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        query_pos: Tensor,
        key_pos: Tensor,
        cross_attn_mask: Tensor | None = None,
    ) -> Tensor:
        """
        Args:
            query: B x Q x C content queries; query_pos: B x Q x C positional queries.
            key, value: B x HW x C (one level of the pixel decoder, level embedding added);
            key_pos: B x HW x C (or 1 x HW x C) sine positions.
            cross_attn_mask: (B*heads) x Q x HW bool, True = not attended.

        Returns:
            B x Q x C.
        """
        query = self.cross_attn(query, key, value, query_pos, key_pos, attn_mask=cross_attn_mask)
        query = self.norms[0](query)
        query = self.self_attn(query, query, query, query_pos, query_pos)
        query = self.norms[1](query)
        query = self.ffn(query)
        return self.norms[2](query)


class Mask2FormerTransformerDecoder(nn.Module):
    """A stack of masked-attention layers plus the shared `post_norm` (LayerNorm) that is applied
    before every prediction. The head drives the layers one by one (it recomputes the mask between
    them), so this module has no forward of its own."""

    def __init__(
        self,
        num_layers: int = 9,
        embed_dims: int = 256,
        num_heads: int = 8,
        feedforward_channels: int = 2048,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            MaskedAttentionDecoderLayer(embed_dims, num_heads, feedforward_channels)
            for _ in range(num_layers)
        )
        self.post_norm = nn.LayerNorm(embed_dims)
        self.embed_dims = embed_dims
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mmdet's `Mask2FormerHead.init_weights`: xavier-normal for every matrix, the rest as built."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
