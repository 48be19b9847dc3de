"""More recipe numbers pinned where a one-line mutation went unnoticed (mutation sweep of 2026-12-07): the
initialisation of the Mask2Former head as mmdet 3.x writes it (``MSDeformAttnPixelDecoder.init_weights``,
``Mask2FormerHead.init_weights``; mmcv ``caffe2_xavier_init``, ``xavier_init``, ``normal_init``), the head of
w1oves/Rein configs/_base_/models/rein_dinov2_mask2former.py. Each test states the value and its source."""

from __future__ import annotations

import math

import torch
from torch import nn

from dgseg.models.heads.mask2former import Mask2FormerHead


def _head() -> Mask2FormerHead:
    torch.manual_seed(0)  # the recipe's widths (256, FFN 1024 / 2048), one layer each to stay fast
    return Mask2FormerHead([64, 96, 128, 160], num_classes=19, enc_layers=1, dec_layers=1)


def _caffe2_xavier_bound(conv: nn.Conv2d) -> float:
    # mmcv caffe2_xavier_init: kaiming_uniform_(a=1, mode='fan_in', nonlinearity='leaky_relu'): gain 1
    fan_in = conv.weight[0].numel()
    return math.sqrt(3.0 / fan_in)


def _is_uniform_within(w: torch.Tensor, bound: float) -> bool:
    return bool(w.abs().max() <= bound and w.abs().max() > 0.95 * bound)


def _is_xavier_normal(w: torch.Tensor) -> bool:
    fan_out, fan_in = w.shape[0], w[0].numel()
    std = math.sqrt(2.0 / (fan_in + fan_out))
    # the std of xavier_normal_, and values beyond xavier_uniform_'s bound sqrt(3) * std (a normal, not a uniform)
    return bool(abs(w.std().item() / std - 1) < 0.05 and w.abs().max() > 1.2 * math.sqrt(3) * std)


def test_the_pixel_decoders_convolutions_start_as_mmdets_init_weights():
    """MSDeformAttnPixelDecoder.init_weights: xavier_init(input_convs[i].conv, distribution='uniform', bias=0);
    caffe2_xavier_init(lateral_convs / output_convs / mask_feature, bias=0)."""
    pd = _head().pixel_decoder
    for m in pd.input_convs:
        w = m.conv.weight
        assert _is_uniform_within(w, math.sqrt(6.0 / (w.shape[0] + w[0].numel())))
        assert m.conv.bias.abs().sum() == 0
    for conv in (pd.lateral_convs[0].conv, pd.output_convs[0].conv, pd.mask_feature):
        assert _is_uniform_within(conv.weight, _caffe2_xavier_bound(conv))
        assert conv.bias is None or conv.bias.abs().sum() == 0


def test_the_pixel_decoders_level_encoding_starts_standard_normal():
    """MSDeformAttnPixelDecoder.init_weights: normal_init(self.level_encoding, mean=0, std=1)."""
    w = _head().pixel_decoder.level_encoding.weight  # 3 levels x 256
    assert abs(w.mean().item()) < 0.1 and abs(w.std().item() - 1.0) < 0.1


def test_the_encoder_and_decoder_matrices_start_xavier_normal():
    """MSDeformAttnPixelDecoder.init_weights and Mask2FormerHead.init_weights: nn.init.xavier_normal_ on every
    parameter with more than one dimension of the deformable encoder (its attention then re-initialised by
    MultiScaleDeformableAttention.init_weights) and of the transformer decoder."""
    head = _head()
    encoder = [p for n, p in head.pixel_decoder.encoder.named_parameters() if p.dim() > 1 and "self_attn" not in n]
    decoder = [p for p in head.transformer_decoder.parameters() if p.dim() > 1]
    assert encoder and decoder
    for p in (*encoder, *decoder):
        assert _is_xavier_normal(p.detach())
