"""Multi-scale deformable attention (Deformable DETR), in plain PyTorch.

The sampling is `F.grid_sample(..., align_corners=False, padding_mode="zeros")`, the same function as
mmcv's CUDA kernel and its `multi_scale_deformable_attn_pytorch` reference: a location (x, y) in [0, 1]
reads pixel (x * W - 0.5, y * H - 0.5) bilinearly, and neighbours outside the map count as zero.
Parameter names and initialisation follow mmcv's `MultiScaleDeformableAttention`, so its weights load
unrenamed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

SpatialShapes = Sequence[tuple[int, int]] | Tensor


def _shape_list(spatial_shapes: SpatialShapes) -> list[tuple[int, int]]:
    if isinstance(spatial_shapes, Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


def multi_scale_deformable_attention(
    value: Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinear samples taken from several feature levels.

    Args:
        value: B x S x M x D, the levels' maps flattened row-major and concatenated
            (S = sum of H_l * W_l), M heads of D channels.
        spatial_shapes: the (H_l, W_l) of each of the L levels, in the order they are concatenated.
        sampling_locations: B x Q x M x L x P x 2, normalised (x, y) in [0, 1] (0 = left/top edge).
        attention_weights: B x Q x M x L x P, the weights of the samples (softmax over L * P).

    Returns:
        B x Q x (M * D). Computed in float32 (a bf16 grid would misplace samples), returned in
        value's dtype.
    """
    shapes = _shape_list(spatial_shapes)
    b, s, m, d = value.shape
    _, q, _, num_levels, p, _ = sampling_locations.shape
    if sum(h * w for h, w in shapes) != s:
        raise ValueError(
            f"spatial_shapes {shapes} cover {sum(h * w for h, w in shapes)} positions, value has {s}"
        )
    if num_levels != len(shapes):
        raise ValueError(f"sampling_locations has {num_levels} levels, spatial_shapes {len(shapes)}")
    out_dtype = value.dtype
    value_levels = value.float().split([h * w for h, w in shapes], dim=1)
    grids = 2.0 * sampling_locations.float() - 1.0
    # (B*M) x Q x L x P: the weights of one head's samples, beside its (B*M) x D x Q x P samples
    weights = attention_weights.float().transpose(1, 2).flatten(0, 1)
    out = None
    for level, (h, w) in enumerate(shapes):  # one level at a time: no stacked L x P copy of the samples
        # B x HW x M x D -> (B*M) x D x H x W
        v = value_levels[level].permute(0, 2, 3, 1).reshape(b * m, d, h, w)
        # B x Q x M x P x 2 -> (B*M) x Q x P x 2
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        # (B*M) x D x Q x P times (B*M) x 1 x Q x P, summed over P
        part = (sampled * weights[:, None, :, level]).sum(-1)
        out = part if out is None else out + part
    return out.view(b, m * d, q).transpose(1, 2).contiguous().to(out_dtype)


def _recomputed_attention(
    value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """`multi_scale_deformable_attention` whose samples are taken again in the backward pass.

    Autograd would keep every layer's fp32 samples, D x Q x L x P per head, for the gradient of the
    weights: 66 MB per 512 x 512 image and layer, most of the head's activation memory. Recomputing
    them keeps only the inputs (value, locations, weights), a tenth of that, for one more
    `grid_sample` per level in the backward pass. The result is the same function.
    """
    if not torch.is_grad_enabled() or not any(
        t.requires_grad for t in (value, sampling_locations, attention_weights)
    ):
        return multi_scale_deformable_attention(value, spatial_shapes, sampling_locations, attention_weights)
    return torch.utils.checkpoint.checkpoint(
        multi_scale_deformable_attention,
        value,
        spatial_shapes,
        sampling_locations,
        attention_weights,
        use_reentrant=False,
    )


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention over L feature levels, batch first, with mmcv's residual.

    forward returns `query + output_proj(attention)` (mmcv adds the identity inside the module).
    With `recompute_samples` (default) the backward pass takes the samples again instead of keeping them.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 3, num_points: int = 4):
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f"embed_dims {embed_dims} must be divisible by num_heads {num_heads}")
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.recompute_samples = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mmcv's init: zero offsets with a bias pointing each head along its own direction, at
        distances 1..P (in level pixels); uniform attention; xavier-uniform projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        for i in range(self.num_points):
            grid[:, :, i, :] *= i + 1
        self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: Tensor,
        value: Tensor,
        query_pos: Tensor | None,
        reference_points: Tensor,
        spatial_shapes: SpatialShapes,
    ) -> Tensor:
        """
        Args:
            query: B x Q x C.
            value: B x S x C, the flattened levels (no position added: mmcv projects the raw value).
            query_pos: B x Q x C or None, added to the query for the offsets and weights only.
            reference_points: B x Q x L x 2 (or 1 x Q x L x 2), normalised (x, y).
            spatial_shapes: (H_l, W_l) per level.

        Returns:
            B x Q x C: query + attention output.
        """
        identity = query
        if query_pos is not None:
            query = query + query_pos
        b, q, _ = query.shape
        s = value.shape[1]
        v = self.value_proj(value).view(b, s, self.num_heads, -1)
        offsets = self.sampling_offsets(query).view(b, q, self.num_heads, self.num_levels, self.num_points, 2)
        weights = self.attention_weights(query).view(b, q, self.num_heads, self.num_levels * self.num_points)
        weights = weights.softmax(-1).view(b, q, self.num_heads, self.num_levels, self.num_points)
        shapes = _shape_list(spatial_shapes)
        # offsets are in level pixels: divide by (W, H)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32, device=query.device)
        locations = (
            reference_points[:, :, None, :, None, :].float()
            + offsets.float() / normalizer[None, None, None, :, None, :]
        )
        attend = _recomputed_attention if self.recompute_samples else multi_scale_deformable_attention
        out = attend(v, shapes, locations, weights)
        return identity + self.output_proj(out)
