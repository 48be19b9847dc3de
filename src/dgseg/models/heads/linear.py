"""Linear decode head: the baseline probe on frozen features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a B x C x H x W map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LinearHead(nn.Module):
    """Upsample every pyramid map to stride 4 (bilinear), concatenate, LayerNorm over channels, 1x1 conv to K.

    The normalisation is per pixel (no batch statistics), so the head computes the same function for any
    batch split: one process or DDP, batch 1 or 16.

    Args:
        in_channels: channels of the input maps, finest first (the first map sets the output size).
        num_classes: K.
        ignore_index: label value excluded from the loss.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int = 19, ignore_index: int = 255):
        super().__init__()
        channels = sum(in_channels)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.norm = LayerNorm2d(channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[Tensor], queries: Tensor | None = None) -> dict[str, Any]:
        """features: maps B x C_i x H_i x W_i, finest first; queries are not used.

        Returns:
            {"logits": B x K x H_0 x W_0}.
        """
        size = features[0].shape[-2:]
        x = torch.cat(
            [
                f
                if f.shape[-2:] == size
                else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                for f in features
            ],
            dim=1,
        )
        return {"logits": self.classifier(self.norm(x))}

    def loss(self, outputs: dict[str, Any], labels: Tensor) -> dict[str, Tensor]:
        """Pixel cross-entropy at the label's resolution (logits upsampled), `ignore_index` excluded.

        labels: B x H x W int64. Returns {"loss_ce": scalar} (0 with gradient when every pixel is ignored).
        """
        logits = self.semantic(outputs, labels.shape[-2:]).float()
        if not (labels != self.ignore_index).any():
            return {"loss_ce": logits.sum() * 0.0}
        return {"loss_ce": F.cross_entropy(logits, labels, ignore_index=self.ignore_index)}

    @staticmethod
    def semantic(outputs: dict[str, Any], size: tuple[int, int]) -> Tensor:
        """Logits resized bilinearly (align_corners=False) to `size`: B x K x H x W."""
        logits = outputs["logits"]
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
