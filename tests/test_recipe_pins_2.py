"""More recipe numbers pinned where a one-line mutation went unnoticed (mutation sweep of 2026-12-07): the
initialisation of the Mask2Former head as mmdet 3.x writes it (``MSDeformAttnPixelDecoder.init_weights``,
``Mask2FormerHead.init_weights``; mmcv ``caffe2_xavier_init``, ``xavier_init``, ``normal_init``), the head of
w1oves/Rein configs/_base_/models/rein_dinov2_mask2former.py. Each test states the value and its source."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dgseg.config.schema import BackboneConfig
from dgseg.data.transforms import TrainTransform
from dgseg.models.heads.losses import Mask2FormerCriterion
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
    assert w.abs().max() > 1.2 * math.sqrt(3)  # a normal's tails: a uniform of std 1 stops at sqrt(3)


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


def test_the_learned_queries_and_level_embeddings_start_standard_normal():
    """mmdet Mask2FormerHead: query_embed, query_feat and level_embed are nn.Embedding, left at their N(0, 1) init
    (its init_weights touches none of them)."""
    head = _head()
    for emb in (head.query_embed, head.query_feat, head.level_embed):
        w = emb.weight.detach()
        assert abs(w.mean().item()) < 0.15 and abs(w.std().item() - 1.0) < 0.1
        assert w.abs().max() > 1.2 * math.sqrt(3)  # a normal's tails: a uniform of std 1 stops at sqrt(3)


def test_deep_supervision_scores_every_auxiliary_prediction_earliest_first():
    """REFERENCE.md section 2, deep supervision (mmdet Mask2FormerHead.loss_by_feat): the losses of every decoder
    output, the prediction before the first layer included (d0 ... d8 and the last: 10 sets for 9 layers)."""
    k = 4
    criterion = Mask2FormerCriterion(k, num_points=64)
    torch.manual_seed(0)

    def output(logits):
        return {"pred_logits": logits, "pred_masks": torch.randn(1, 5, 8, 8)}

    aux = [output(torch.zeros(1, 5, k + 1)), output(5 * torch.randn(1, 5, k + 1))]
    losses = criterion({**output(5 * torch.randn(1, 5, k + 1)), "aux_outputs": aux}, torch.randint(0, k, (1, 8, 8)))
    assert set(losses) == {f"{d}loss_{n}" for d in ("d0.", "d1.", "") for n in ("cls", "mask", "dice")}
    # d0 is the first prediction: uniform class logits give cross-entropy log(K + 1) whatever the matching, x 2.0
    assert losses["d0.loss_cls"].item() == pytest.approx(2.0 * math.log(k + 1), rel=1e-5)


def test_the_backbone_defaults_are_reins_patch_16_for_512_crops_with_bicubic_positions():
    """REFERENCE.md section 1: DINOv2's 14 x 14 patch kernel resampled to 16 for 512 crops; the position grid resized
    bicubically (w1oves/Rein tools/convert_models/convert_dinov2_large_512x512.py, rein/models/backbones/dino_v2.py
    interpolate_pos_encoding)."""
    backbone = BackboneConfig()
    assert (backbone.patch_size, backbone.img_size, backbone.pos_embed_resample) == (16, 512, "bicubic")


def test_the_training_flip_mirrors_left_to_right():
    """REFERENCE.md section 2, horizontal flip: mmseg RandomFlip(prob=0.5), direction 'horizontal' (the training
    pipeline of w1oves/Rein configs/_base_/datasets/dg_gta_512x512.py)."""
    image = torch.randint(0, 256, (3, 4, 6), dtype=torch.uint8)
    label = torch.arange(24).view(4, 6) % 19
    flip = TrainTransform(crop_size=(4, 6), scale=None, flip_prob=1.0, photometric=False)  # no resize, whole crop
    _, flipped = flip(image, label)
    assert torch.equal(flipped, label.flip(-1))
