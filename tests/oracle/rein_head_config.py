"""The decode head of the Rein recipe as the official config builds it, for the oracle tests.

Facts from w1oves/Rein `configs/_base_/models/rein_dinov2_mask2former.py` (`decode_head`): mmseg's
`Mask2FormerHead` on mmdet 3.x (`MSDeformAttnPixelDecoder`, `Mask2FormerTransformerDecoder`, the
Hungarian assigner with its three match costs and the three losses). Rein's own
`ReinMask2FormerHead(replace_query_feat=True)` only swaps the learned queries for its linked ones; it is
not on PyPI, so the tests build mmseg's head and feed the linked queries through mmdet's own query
embeddings (test_oracle_head.py says how); with a checkout of w1oves/Rein, test_oracle_rein_official.py builds
``ReinMask2FormerHead`` itself from the same dict. The sizes are parameters so the same dict builds a tiny head.
"""

from __future__ import annotations


def rein_head_dict(
    in_channels=(1024, 1024, 1024, 1024),
    num_classes: int = 19,
    feat_channels: int = 256,
    num_queries: int = 100,
    num_heads: int = 8,
    enc_layers: int = 6,
    enc_ffn: int = 1024,
    dec_layers: int = 9,
    dec_ffn: int = 2048,
    num_points: int = 12544,
) -> dict:
    """The Rein config's `decode_head` (recipe values by default) with `type` mmseg's Mask2FormerHead."""
    return dict(
        type="Mask2FormerHead",
        in_channels=list(in_channels),
        strides=[4, 8, 16, 32],
        feat_channels=feat_channels,
        out_channels=feat_channels,
        num_classes=num_classes,
        num_queries=num_queries,
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type="mmdet.MSDeformAttnPixelDecoder",
            num_outs=3,
            norm_cfg=dict(type="GN", num_groups=32),
            act_cfg=dict(type="ReLU"),
            encoder=dict(
                num_layers=enc_layers,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=feat_channels, num_heads=num_heads, num_levels=3, num_points=4,
                        im2col_step=64, dropout=0.0, batch_first=True, norm_cfg=None, init_cfg=None,
                    ),
                    ffn_cfg=dict(
                        embed_dims=feat_channels, feedforward_channels=enc_ffn, num_fcs=2, ffn_drop=0.0,
                        act_cfg=dict(type="ReLU", inplace=True),
                    ),
                ),
                init_cfg=None,
            ),
            positional_encoding=dict(num_feats=feat_channels // 2, normalize=True),
            init_cfg=None,
        ),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=feat_channels // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=dec_layers,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=feat_channels, num_heads=num_heads, attn_drop=0.0, proj_drop=0.0,
                    dropout_layer=None, batch_first=True,
                ),
                cross_attn_cfg=dict(
                    embed_dims=feat_channels, num_heads=num_heads, attn_drop=0.0, proj_drop=0.0,
                    dropout_layer=None, batch_first=True,
                ),
                ffn_cfg=dict(
                    embed_dims=feat_channels, feedforward_channels=dec_ffn, num_fcs=2,
                    act_cfg=dict(type="ReLU", inplace=True), ffn_drop=0.0, dropout_layer=None,
                    add_identity=True,
                ),
            ),
            init_cfg=None,
        ),
        loss_cls=dict(
            type="mmdet.CrossEntropyLoss", use_sigmoid=False, loss_weight=2.0, reduction="mean",
            class_weight=[1.0] * num_classes + [0.1],
        ),
        loss_mask=dict(type="mmdet.CrossEntropyLoss", use_sigmoid=True, reduction="mean", loss_weight=5.0),
        loss_dice=dict(
            type="mmdet.DiceLoss", use_sigmoid=True, activate=True, reduction="mean", naive_dice=True,
            eps=1.0, loss_weight=5.0,
        ),
        train_cfg=dict(
            num_points=num_points,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type="mmdet.HungarianAssigner",
                match_costs=[
                    dict(type="mmdet.ClassificationCost", weight=2.0),
                    dict(type="mmdet.CrossEntropyLossCost", weight=5.0, use_sigmoid=True),
                    dict(type="mmdet.DiceCost", weight=5.0, pred_act=True, eps=1.0),
                ],
            ),
            sampler=dict(type="mmdet.MaskPseudoSampler"),
        ),
    )


def build_mmseg_head(**sizes):
    """mmseg's Mask2FormerHead from :func:`rein_head_dict`, weights initialised as mmdet does."""
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    head = MODELS.build(ConfigDict(rein_head_dict(**sizes)))
    head.init_weights()
    return head.eval()
