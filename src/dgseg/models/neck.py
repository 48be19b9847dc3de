"""Necks: from the ViT's single-stride block outputs to a 4-level pyramid at strides 4/8/16/32."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dgseg.models.heads.linear import LayerNorm2d


class SimplePyramid(nn.Module):
    """Rein's parameter-free pyramid: bilinear x4, x2, x1 and x0.5 of the four block outputs."""

    factors = (4.0, 2.0, 1.0, 0.5)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_channels = [channels] * 4

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return [
            f if s == 1.0 else F.interpolate(f, scale_factor=s, mode="bilinear", align_corners=False)
            for f, s in zip(feats, self.factors)
        ]


NORMS = {"layer": LayerNorm2d, "batch": nn.BatchNorm2d}


class SimpleFPN(nn.Module):
    """ViTDet-style learnable simple FPN (VLTSeg): 2x deconv twice / once / identity / max-pool.

    ``norm`` between the two deconvolutions of the stride-4 level: ``layer`` (LayerNorm2d over channels) or
    ``batch`` (BatchNorm2d, VLTSeg's re-implementation ``fpn1``; made a SyncBatchNorm under DDP on GPUs by
    :func:`dgseg.engine.distributed.sync_batchnorm`).
    """

    def __init__(self, channels: int, norm: str = "layer") -> None:
        super().__init__()
        c = channels
        self.out_channels = [c] * 4
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(c, c, 2, 2), NORMS[norm](c), nn.GELU(), nn.ConvTranspose2d(c, c, 2, 2)
        )
        self.up2 = nn.ConvTranspose2d(c, c, 2, 2)
        self.down2 = nn.MaxPool2d(2, 2)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return [self.up4(feats[0]), self.up2(feats[1]), feats[2], self.down2(feats[3])]


NECKS = {"simple": SimplePyramid, "fpn": SimpleFPN}
