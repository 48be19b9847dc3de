"""Mask2Former head (and the linear head): shapes, Rein-link queries, masked attention, training, inference."""

import math

import pytest
import torch
import torch.nn.functional as F

from dgseg.models.heads import build_head
from dgseg.models.heads.mask2former import attention_mask
from dgseg.models.heads.transformer_decoder import MaskedAttentionDecoderLayer, sine_positional_encoding

TINY = dict(
    hidden_dim=32,
    num_heads=4,
    enc_layers=1,
    dec_layers=2,
    enc_ffn=32,
    dec_ffn=32,
    num_queries=6,
    train_points=64,
)


def features(b=2, c=8, sizes=((12, 16), (6, 8), (3, 4), (2, 2))):
    return [torch.randn(b, c, h, w) for h, w in sizes]


def tiny_head(**kwargs):
    return build_head("mask2former", [8] * 4, 3, **{**TINY, **kwargs})


def test_output_shapes_for_odd_input_sizes():
    torch.manual_seed(0)
    head = tiny_head(dec_layers=3)

    out = head(features(sizes=((17, 23), (9, 12), (5, 6), (3, 3))))

    assert out["pred_logits"].shape == (2, 6, 4)
    assert out["pred_masks"].shape == (2, 6, 17, 23)
    assert len(out["aux_outputs"]) == 3  # the prediction before the first layer + after layers 1 and 2
    assert all(a["pred_masks"].shape == (2, 6, 17, 23) for a in out["aux_outputs"])


def test_rein_link_takes_the_number_of_queries_from_the_given_queries():
    torch.manual_seed(0)
    head = tiny_head(query_link=True)
    names = set(head.state_dict())
    assert "querys2feat.weight" in names
    assert not any(n.startswith(("query_embed", "query_feat")) for n in names)
    feats, queries = features(), torch.randn(5, 32)

    out = head(feats, queries)
    batched = head(feats, queries.expand(2, -1, -1))

    assert out["pred_logits"].shape == (2, 5, 4) and out["pred_masks"].shape == (2, 5, 12, 16)
    torch.testing.assert_close(out["pred_logits"], batched["pred_logits"])
    with pytest.raises(ValueError, match="query_link=True"):
        head(feats)


def test_learned_queries_refuse_given_queries():
    with pytest.raises(ValueError, match="query_link=False"):
        tiny_head()(features(), torch.randn(6, 32))


def test_attention_mask_blocks_where_sigmoid_is_below_half_and_unblocks_fully_masked_rows():
    logits = torch.full((1, 2, 4, 4), -3.0)
    logits[0, 1, :, :2] = 3.0  # query 1: left half; query 0: nothing

    mask = attention_mask(logits, (2, 2), num_heads=2)

    assert mask.shape == (2, 2, 4)  # (B * heads) x Q x (H * W) at the attended level's size
    assert not mask[:, 0].any()  # fully masked row -> attends everywhere
    assert mask[:, 1].tolist() == [[False, True, False, True]] * 2


def test_decoder_layers_attend_to_levels_round_robin_lowest_resolution_first_and_unmask_empty_rows():
    torch.manual_seed(0)
    head = tiny_head(dec_layers=4)
    with torch.no_grad():  # every mask logit = -hidden_dim < 0: every row fully masked
        head.pixel_decoder.mask_feature.weight.zero_()
        head.pixel_decoder.mask_feature.bias.fill_(1.0)
        head.mask_embed[4].weight.zero_()
        head.mask_embed[4].bias.fill_(-1.0)
    seen = []
    for layer in head.transformer_decoder.layers:
        layer.cross_attn.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append((args[1].shape[1], kwargs["attn_mask"])), with_kwargs=True
        )

    head(features())

    assert [n for n, _ in seen] == [2 * 2, 3 * 4, 6 * 8, 2 * 2]  # strides 32, 16, 8, 32
    for n, mask in seen:
        assert mask.shape == (2 * 4, 6, n) and not mask.any()


def mha_reference(mha, q_in, k_in, v_in, mask, heads):
    c = q_in.shape[-1]
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q, k, v = (
        x @ w[i * c : (i + 1) * c].T + b[i * c : (i + 1) * c] for i, x in enumerate((q_in, k_in, v_in))
    )

    def split(x):
        return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(c // heads)
    if mask is not None:
        scores = scores.masked_fill(mask.view(q.shape[0], heads, *mask.shape[1:]), float("-inf"))
    out = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(q.shape)
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def ln_reference(x, ln):
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * ln.weight + ln.bias


def test_one_decoder_layer_matches_the_mmdet_equations():
    """cross-attn(q + q_pos, k + k_pos, v) + residual -> LN -> self-attn(q + q_pos, q + q_pos, q) + residual
    -> LN -> q + W2 relu(W1 q) -> LN."""
    torch.manual_seed(0)
    heads = 2
    layer = MaskedAttentionDecoderLayer(embed_dims=8, num_heads=heads, feedforward_channels=16)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    query, query_pos = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    key, key_pos = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.rand(2 * heads, 3, 5) > 0.6
    mask[..., 0] = False

    out = layer(query, key, key, query_pos, key_pos, cross_attn_mask=mask)

    with torch.no_grad():
        x = query + mha_reference(layer.cross_attn.attn, query + query_pos, key + key_pos, key, mask, heads)
        x = ln_reference(x, layer.norms[0])
        x = x + mha_reference(layer.self_attn.attn, x + query_pos, x + query_pos, x, None, heads)
        x = ln_reference(x, layer.norms[1])
        fc1, fc2 = layer.ffn.layers[0][0], layer.ffn.layers[1]
        x = x + F.relu(x @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias
        expected = ln_reference(x, layer.norms[2])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_sine_positional_encoding_follows_the_mmdet_formula():
    pos = sine_positional_encoding(3, 5, num_feats=4)

    assert pos.shape == (1, 8, 3, 5)
    y, x = 2, 4  # 0-based row / column; mmdet counts from 1 and normalises by (size + 1e-6) * 2 pi
    ey, ex = (y + 1) / (3 + 1e-6) * 2 * math.pi, (x + 1) / (5 + 1e-6) * 2 * math.pi
    expected = [math.sin(ey), math.cos(ey), math.sin(ey / 100), math.cos(ey / 100)]
    expected += [math.sin(ex), math.cos(ex), math.sin(ex / 100), math.cos(ex / 100)]
    torch.testing.assert_close(pos[0, :, y, x], torch.tensor(expected))


def test_mmdet_parameter_names():
    names = set(tiny_head().state_dict())
    for name in [
        "pixel_decoder.input_convs.0.conv.weight",
        "pixel_decoder.input_convs.2.gn.bias",
        "pixel_decoder.encoder.layers.0.self_attn.sampling_offsets.weight",
        "pixel_decoder.encoder.layers.0.ffn.layers.0.0.weight",
        "pixel_decoder.encoder.layers.0.ffn.layers.1.weight",
        "pixel_decoder.encoder.layers.0.norms.1.weight",
        "pixel_decoder.level_encoding.weight",
        "pixel_decoder.lateral_convs.0.conv.weight",
        "pixel_decoder.output_convs.0.gn.weight",
        "pixel_decoder.mask_feature.bias",
        "transformer_decoder.layers.1.cross_attn.attn.in_proj_weight",
        "transformer_decoder.layers.1.self_attn.attn.out_proj.weight",
        "transformer_decoder.layers.0.norms.2.weight",
        "transformer_decoder.post_norm.weight",
        "query_embed.weight",
        "query_feat.weight",
        "level_embed.weight",
        "cls_embed.weight",
        "mask_embed.4.weight",
    ]:
        assert name in names, name
    assert "pixel_decoder.lateral_convs.0.conv.bias" not in names  # mmdet: no conv bias before GN


def test_the_pixel_decoders_convolutions_use_group_norm_with_32_groups():
    """REFERENCE.md section 2: the pixel decoder's input / lateral / output convolutions are followed by
    GroupNorm(32) (mmdet's MSDeformAttnPixelDecoder norm_cfg=dict(type='GN', num_groups=32))."""
    head = tiny_head(hidden_dim=64)
    groups = [m.num_groups for m in head.pixel_decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(groups) == 3 + 1 + 1 and set(groups) == {32}  # 3 input convs, one lateral and one output conv


def test_tiny_head_overfits_one_batch():
    torch.manual_seed(0)
    head = tiny_head(train_points=128)
    feats = features(sizes=((12, 12), (6, 6), (3, 3), (2, 2)))
    labels = torch.zeros(2, 48, 48, dtype=torch.long)
    labels[:, :, 16:32] = 1
    labels[0, 30:] = 2
    labels[1, :5] = 255
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    for _ in range(50):
        losses = head.loss(head(feats), labels)
        loss = sum(v for k, v in losses.items() if "loss" in k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())

    assert {"loss_cls", "loss_mask", "loss_dice", "d0.loss_cls", "d1.loss_dice"} <= set(losses)
    assert len(losses) == 3 * (TINY["dec_layers"] + 1)
    assert history[-1] < 0.5 * history[0]


def test_semantic_is_softmax_class_times_sigmoid_mask_summed_over_queries():
    torch.manual_seed(0)
    outputs = {"pred_logits": torch.randn(2, 3, 5), "pred_masks": torch.randn(2, 3, 4, 6)}

    sem = tiny_head().semantic(outputs, (8, 12))

    assert sem.shape == (2, 4, 8, 12)  # K = 4 classes, no-object dropped
    masks = F.interpolate(outputs["pred_masks"], size=(8, 12), mode="bilinear", align_corners=False).sigmoid()
    probs = outputs["pred_logits"].softmax(-1)
    for b in range(2):
        for k in range(4):
            expected = sum(probs[b, q, k] * masks[b, q] for q in range(3))
            torch.testing.assert_close(sem[b, k], expected)


def test_forward_and_loss_run_under_bf16_autocast():
    torch.manual_seed(0)
    head = tiny_head(query_link=True)
    labels = torch.randint(0, 3, (2, 40, 52))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(features(sizes=((10, 13), (5, 7), (3, 4), (2, 2))), torch.randn(4, 32))
        losses = head.loss(out, labels)
        sem = head.semantic(out, (40, 52))
    assert all(torch.isfinite(v) for v in losses.values())
    assert sem.shape == (2, 3, 40, 52)


def test_linear_head_shapes_and_overfits_one_batch():
    torch.manual_seed(0)
    head = build_head("linear", [8] * 4, 3)
    feats = features(sizes=((12, 12), (6, 6), (3, 3), (2, 2)))
    labels = torch.zeros(2, 48, 48, dtype=torch.long)
    labels[:, :, 16:32] = 1
    labels[0, 30:] = 2
    labels[1, :5] = 255
    assert head(feats)["logits"].shape == (2, 3, 12, 12)
    assert head.semantic(head(feats), (48, 48)).shape == (2, 3, 48, 48)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    history = []
    for _ in range(30):
        loss = head.loss(head(feats), labels)["loss_ce"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0]


def test_build_head_names_the_bad_choice():
    with pytest.raises(ValueError, match="mask2former"):
        build_head("unet", [8] * 4, 3)
    with pytest.raises(ValueError, match="num_querys"):
        build_head("mask2former", [8] * 4, 3, num_querys=5)
