"""Mask2Former decode head (mmdet 3.x `Mask2FormerHead` as mmseg wraps it), with Rein's query link
(`ReinMask2FormerHead(replace_query_feat=True)`).

The function and the parameter names are mmdet's: an mmseg `decode_head.*` state dict loads after
stripping the `decode_head.` prefix (Rein-link checkpoints have `querys2feat` and no
`query_embed`/`query_feat`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import Mask2FormerCriterion
from .pixel_decoder import MSDeformAttnPixelDecoder
from .transformer_decoder import Mask2FormerTransformerDecoder, sine_positional_encoding


def attention_mask(mask_logits: Tensor, size: tuple[int, int], num_heads: int) -> Tensor:
    """Mask2Former's masked-attention rule.

    The mask logits are resized bilinearly (align_corners=False) to the attended level's size; a query
    may attend where sigmoid(logit) >= 0.5; a query that could attend nowhere attends everywhere.

    mask_logits: B x Q x h x w -> (B*heads) x Q x (H*W) bool, True = not attended (batch-major, as
    nn.MultiheadAttention expects).
    """
    resized = F.interpolate(mask_logits.detach(), size, mode="bilinear", align_corners=False)
    blocked = resized.flatten(2).sigmoid() < 0.5
    blocked = blocked & ~blocked.all(-1, keepdim=True)
    return blocked.repeat_interleave(num_heads, dim=0)


class Mask2FormerHead(nn.Module):
    """Pixel decoder + masked-attention transformer decoder + class/mask predictors.

    Args:
        in_channels: channels of the 4 input maps (strides 4, 8, 16, 32).
        num_classes: K; the class predictor has K + 1 outputs (the last is "no object").
        hidden_dim: width of the pixel decoder, the queries and the mask embeddings.
        num_queries: learned queries (ignored with query_link: the number of given queries is used).
        enc_layers / enc_ffn: deformable encoder layers of the pixel decoder and their FFN width.
        dec_layers / dec_ffn: masked-attention decoder layers and their FFN width.
        num_heads: attention heads (encoder and decoder); num_points: samples per head and level.
        train_points, oversample_ratio, importance_sample_ratio: point sampling of the mask losses
            and the matcher.
        class_weight, mask_weight, dice_weight: loss (and matching cost) weights;
        no_object_weight: class weight of the no-object class in the cross-entropy.
        query_link: Rein-link. No learned query_embed/query_feat; `forward` takes queries Q x C (or
            B x Q x C) as positional queries and `querys2feat(queries)` as content queries.
    """

    num_levels = 3

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int = 19,
        hidden_dim: int = 256,
        num_queries: int = 100,
        enc_layers: int = 6,
        enc_ffn: int = 1024,
        dec_layers: int = 9,
        dec_ffn: int = 2048,
        num_heads: int = 8,
        num_points: int = 4,
        train_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        query_link: bool = False,
    ):
        super().__init__()
        in_channels = list(in_channels)
        if len(in_channels) != 4:
            raise ValueError(
                f"Mask2FormerHead takes 4 feature maps (strides 4, 8, 16, 32), got in_channels={in_channels}"
            )
        if hidden_dim % 32 != 0:
            raise ValueError(f"hidden_dim must be a multiple of 32 (GroupNorm(32)), got {hidden_dim}")
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.num_heads = num_heads
        self.query_link = query_link
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            in_channels,
            feat_channels=hidden_dim,
            out_channels=hidden_dim,
            num_layers=enc_layers,
            num_heads=num_heads,
            num_points=num_points,
            feedforward_channels=enc_ffn,
        )
        self.transformer_decoder = Mask2FormerTransformerDecoder(dec_layers, hidden_dim, num_heads, dec_ffn)
        # mmdet's projections are identities when the decoder width equals the pixel decoder's
        self.decoder_input_projs = nn.ModuleList(nn.Identity() for _ in range(self.num_levels))
        if query_link:
            self.querys2feat = nn.Linear(hidden_dim, hidden_dim)
        else:
            self.query_embed = nn.Embedding(num_queries, hidden_dim)
            self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_levels, hidden_dim)
        self.cls_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
        )
        self.criterion = Mask2FormerCriterion(
            num_classes,
            class_weight=class_weight,
            mask_weight=mask_weight,
            dice_weight=dice_weight,
            no_object_weight=no_object_weight,
            num_points=train_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
        )

    def _predict(
        self, query: Tensor, mask_features: Tensor, mask_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Class and mask predictions from the decoder state, and the attention mask for the next layer.

        query: B x Q x C; mask_features: B x C x h x w; mask_size: the next level's (H_l, W_l).

        Returns:
            cls B x Q x (K+1), masks B x Q x h x w, attn_mask (B*heads) x Q x (H_l*W_l) bool.
        """
        query = self.transformer_decoder.post_norm(query)
        cls_pred = self.cls_embed(query)
        mask_pred = torch.einsum("bqc,bchw->bqhw", self.mask_embed(query), mask_features)
        return cls_pred, mask_pred, attention_mask(mask_pred, mask_size, self.num_heads)

    def _queries(self, batch: int, queries: Tensor | None) -> tuple[Tensor, Tensor]:
        """(content queries, positional queries), each B x Q x C."""
        if self.query_link:
            if queries is None:
                raise ValueError(
                    "this Mask2FormerHead was built with query_link=True and needs the adapter's queries "
                    "(Rein with link=True): forward(features, queries)"
                )
            if queries.dim() == 2:
                queries = queries.unsqueeze(0).expand(batch, -1, -1)
            if queries.dim() != 3 or queries.shape[0] != batch:
                raise ValueError(f"queries must be Q x C or {batch} x Q x C, got {tuple(queries.shape)}")
            return self.querys2feat(queries), queries
        if queries is not None:
            raise ValueError(
                "this Mask2FormerHead was built with query_link=False (learned queries) but was given "
                "queries; build it with query_link=True (from a config: model.adapter.link=true with Rein) to use "
                "the adapter's queries"
            )
        return (
            self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1),
            self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1),
        )

    def forward(self, features: Sequence[Tensor], queries: Tensor | None = None) -> dict[str, Any]:
        """
        Args:
            features: 4 maps B x C_i x H_i x W_i at strides 4, 8, 16, 32 (any sizes).
            queries: Rein-link queries Q x C or B x Q x C (query_link only).

        Returns:
            {"pred_logits": B x Q x (K+1), "pred_masks": B x Q x H_0 x W_0 (stride 4, logits),
             "aux_outputs": [{"pred_logits", "pred_masks"}] for the prediction made before the first
             decoder layer and after each layer but the last (dec_layers entries, earliest first)}.
        """
        if len(features) != 4:
            raise ValueError(
                f"Mask2FormerHead takes 4 feature maps (strides 4, 8, 16, 32), got {len(features)}"
            )
        b = features[0].shape[0]
        mask_features, memorys = self.pixel_decoder(features)
        keys, key_pos, sizes = [], [], []
        for i in range(self.num_levels):
            h, w = memorys[i].shape[-2:]
            x = self.decoder_input_projs[i](memorys[i]).flatten(2).transpose(1, 2)
            keys.append(x + self.level_embed.weight[i].view(1, 1, -1))
            pos = sine_positional_encoding(h, w, x.shape[-1] // 2, device=x.device)
            key_pos.append(pos.flatten(2).transpose(1, 2))
            sizes.append((int(h), int(w)))
        query, query_pos = self._queries(b, queries)

        predictions = []
        cls_pred, mask_pred, attn_mask = self._predict(query, mask_features, sizes[0])
        predictions.append((cls_pred, mask_pred))
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % self.num_levels
            query = layer(
                query, keys[level], keys[level], query_pos, key_pos[level], cross_attn_mask=attn_mask
            )
            cls_pred, mask_pred, attn_mask = self._predict(
                query, mask_features, sizes[(i + 1) % self.num_levels]
            )
            predictions.append((cls_pred, mask_pred))

        return {
            "pred_logits": predictions[-1][0],
            "pred_masks": predictions[-1][1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in predictions[:-1]],
        }

    def loss(self, outputs: dict[str, Any], labels: Tensor) -> dict[str, Tensor]:
        """labels: B x H x W int64, 255 = ignore. Returns mmdet's loss names: `loss_cls`, `loss_mask`,
        `loss_dice` (last layer) and `d{i}.loss_*` (auxiliary predictions), all weighted."""
        return self.criterion(outputs, labels)

    @staticmethod
    def semantic(outputs: dict[str, Any], size: tuple[int, int]) -> Tensor:
        """mmseg's Mask2Former inference: sum over queries of softmax(class)[:K] x sigmoid(mask), the
        masks resized bilinearly (align_corners=False) to `size`.

        Returns:
            B x K x H x W scores (not normalised over classes).
        """
        masks = F.interpolate(outputs["pred_masks"], size=tuple(size), mode="bilinear", align_corners=False)
        cls = outputs["pred_logits"].softmax(-1)[..., :-1]
        return torch.einsum("bqc,bqhw->bchw", cls, masks.sigmoid())
