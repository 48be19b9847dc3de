"""Mask2Former pixel decoder: a deformable-attention encoder over the three coarsest levels and an
FPN step that adds the stride-4 level (mmdet 3.x `MSDeformAttnPixelDecoder`).

Names follow mmdet (`input_convs.{i}.conv/gn`, `encoder.layers.{i}.self_attn...`, `level_encoding`,
`lateral_convs.0.conv/gn`, `output_convs.0.conv/gn`, `mask_feature`) so its state dict loads unrenamed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .ms_deform_attn import MultiScaleDeformableAttention
from .transformer_decoder import FFN, sine_positional_encoding


def caffe2_xavier_init_(conv: nn.Conv2d) -> None:
    """mmcv `caffe2_xavier_init`: kaiming-uniform with a=1 (fan in), zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1, mode="fan_in", nonlinearity="leaky_relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConvGN(nn.Module):
    """Conv -> GroupNorm(32) -> optional ReLU (mmcv `ConvModule` with GN: submodules `conv`, `gn`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        bias: bool = False,
        relu: bool = False,
        num_groups: int = 32,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.gn = nn.GroupNorm(num_groups, out_channels)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.gn(self.conv(x))
        return F.relu(x) if self.relu else x


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention -> norm -> FFN -> norm."""

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 3,
        num_points: int = 4,
        feedforward_channels: int = 1024,
    ):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(embed_dims, num_heads, num_levels, num_points)
        self.ffn = FFN(embed_dims, feedforward_channels)
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(2))

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> Tensor:
        """query, query_pos: B x S x C (all levels flattened); reference_points 1 x S x L x 2."""
        query = self.self_attn(query, query, query_pos, reference_points, spatial_shapes)
        query = self.norms[0](query)
        query = self.ffn(query)
        return self.norms[1](query)


class DeformableEncoder(nn.Module):
    """`num_layers` encoder layers; with `grad_checkpointing` each layer keeps only its input for the
    backward pass and runs again there (what `train.grad_checkpointing` turns on)."""

    def __init__(self, num_layers: int = 6, **layer_kwargs: int):
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers))
        self.grad_checkpointing = False

    @property
    def grad_checkpointing(self) -> bool:
        return self._grad_checkpointing

    @grad_checkpointing.setter
    def grad_checkpointing(self, enable: bool) -> None:
        # a checkpointed layer is recomputed whole: its attention need not also recompute its samples
        self._grad_checkpointing = bool(enable)
        for layer in self.layers:
            layer.self_attn.recompute_samples = not enable

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
    ) -> Tensor:
        recompute = self.grad_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                query = torch.utils.checkpoint.checkpoint(
                    layer, query, query_pos, reference_points, spatial_shapes, use_reentrant=False
                )
            else:
                query = layer(query, query_pos, reference_points, spatial_shapes)
        return query


def encoder_reference_points(
    spatial_shapes: Sequence[tuple[int, int]], device: torch.device | str | None = None
) -> Tensor:
    """Pixel centres ((x + 0.5) / W, (y + 0.5) / H) of every level, row-major, levels concatenated,
    the same point repeated for every level (no padding, valid ratios 1).

    Returns:
        1 x S x L x 2.
    """
    points = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((xx.reshape(-1), yy.reshape(-1)), -1))
    ref = torch.cat(points, 0)
    return ref[None, :, None, :].expand(1, ref.shape[0], len(spatial_shapes), 2)


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder of Mask2Former.

    Input: 4 maps at strides 4, 8, 16, 32 (any sizes). The strides 32/16/8 maps go through a 1x1 conv +
    GN (`input_convs`, coarsest first), get sine positions + a learned `level_encoding`, and are refined
    jointly by `num_layers` deformable-attention encoder layers. The stride-4 map gets a 1x1 conv + GN
    (`lateral_convs.0`), plus the bilinearly upsampled stride-8 encoder output, then a 3x3 conv + GN +
    ReLU (`output_convs.0`); `mask_feature` (1x1 conv) of that is the per-pixel embedding.

    Returns from forward:
        mask_features: B x C_out x H/4 x W/4.
        multi_scale_memorys: [B x C x H/32 x W/32, B x C x H/16 x W/16, B x C x H/8 x W/8]
            (low to high resolution).
    """

    num_encoder_levels = 3

    def __init__(
        self,
        in_channels: Sequence[int],
        feat_channels: int = 256,
        out_channels: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        feedforward_channels: int = 1024,
    ):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(
                f"the pixel decoder takes 4 maps (strides 4, 8, 16, 32), got in_channels={in_channels}"
            )
        self.feat_channels = feat_channels
        # coarsest first: input_convs[0] <- stride 32, [1] <- 16, [2] <- 8
        self.input_convs = nn.ModuleList(
            ConvGN(in_channels[3 - i], feat_channels, 1, bias=True) for i in range(self.num_encoder_levels)
        )
        self.encoder = DeformableEncoder(
            num_layers,
            embed_dims=feat_channels,
            num_heads=num_heads,
            num_levels=self.num_encoder_levels,
            num_points=num_points,
            feedforward_channels=feedforward_channels,
        )
        self.level_encoding = nn.Embedding(self.num_encoder_levels, feat_channels)
        self.lateral_convs = nn.ModuleList([ConvGN(in_channels[0], feat_channels, 1)])
        self.output_convs = nn.ModuleList([ConvGN(feat_channels, feat_channels, 3, relu=True)])
        self.mask_feature = nn.Conv2d(feat_channels, out_channels, 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mmdet `MSDeformAttnPixelDecoder.init_weights`."""
        for m in self.input_convs:
            nn.init.xavier_uniform_(m.conv.weight)
            nn.init.zeros_(m.conv.bias)
        for m in (*self.lateral_convs, *self.output_convs):
            caffe2_xavier_init_(m.conv)
        caffe2_xavier_init_(self.mask_feature)
        nn.init.normal_(self.level_encoding.weight, 0.0, 1.0)
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for layer in self.encoder.layers:
            layer.self_attn.reset_parameters()

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        b = feats[0].shape[0]
        inputs, positions, shapes = [], [], []
        for i in range(self.num_encoder_levels):
            feat = feats[3 - i]
            h, w = feat.shape[-2:]
            x = self.input_convs[i](feat)
            pos = sine_positional_encoding(h, w, self.feat_channels // 2, device=feat.device)
            pos = pos + self.level_encoding.weight[i].view(1, -1, 1, 1)
            inputs.append(x.flatten(2).transpose(1, 2))
            positions.append(pos.flatten(2).transpose(1, 2))
            shapes.append((int(h), int(w)))
        query = torch.cat(inputs, 1)
        query_pos = torch.cat(positions, 1)
        ref = encoder_reference_points(shapes, device=query.device)
        memory = self.encoder(query, query_pos, ref, shapes)

        outs = [
            m.transpose(1, 2).reshape(b, -1, h, w)
            for m, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        lateral = self.lateral_convs[0](feats[0])
        y = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.output_convs[0](y)
        return self.mask_feature(y), outs
