"""The recipe numbers that make dgseg equal to the original code, pinned where the pipeline takes them: the
config defaults that ``build_model`` and training use, and the defaults of the functions they call. Each
assertion fails when one of these constants changes (checked by one-line mutations, 2026-12-05). Sources:
REFERENCE.md sections 1-3; mmdet 3.3.0 ``Mask2FormerHead``; mmseg 1.2.2 ``PhotoMetricDistortion``,
``RandomCrop``; VPT's ``vit_prompt/vit.py``; DenseCLIP's ``ContextDecoder``."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import torch
from tiny import tiny_config
from torch import nn

import dgseg
from dgseg.config.schema import AdapterConfig, DataConfig, EvalConfig, HeadConfig, TextConfig, TrainConfig
from dgseg.data import transforms
from dgseg.data.photometric import photometric_distortion
from dgseg.engine.train_setup import _build_model_and_optimizer
from dgseg.models.adapters import FullFineTune
from dgseg.models.heads.losses import Mask2FormerCriterion, uncertain_point_coords
from dgseg.models.heads.mask2former import Mask2FormerHead, attention_mask
from dgseg.models.heads.matcher import HungarianMatcher
from dgseg.models.segmentor import Segmentor

CONFIGS = Path(dgseg.__file__).parent / "configs"
LOSS = {"class_weight": 2.0, "mask_weight": 5.0, "dice_weight": 5.0, "no_object_weight": 0.1}
SAMPLING = {"oversample_ratio": 3.0, "importance_sample_ratio": 0.75}


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def test_the_head_config_defaults_are_the_papers_mask2former():
    head = HeadConfig()
    assert {k: getattr(head, k) for k in {**LOSS, **SAMPLING}} == {**LOSS, **SAMPLING}
    assert (head.num_queries, head.dec_layers, head.enc_layers, head.train_points) == (100, 9, 6, 12544)
    # REFERENCE.md section 2: 256 dims, 8 heads, 4 sampling points, pixel-decoder FFN 1024, decoder FFN 2048 (the
    # demo and bench configs inherit num_points from here)
    arch = {"hidden_dim": 256, "num_heads": 8, "num_points": 4, "enc_ffn": 1024, "dec_ffn": 2048}
    assert {k: getattr(head, k) for k in arch} == arch
    assert {k: _defaults(Mask2FormerHead)[k] for k in arch} == arch


def test_the_criterion_built_from_the_config_weighs_and_samples_as_the_paper():
    criterion = dgseg.build_model(tiny_config(model__adapter={"name": "frozen"})).head.criterion
    num_classes = criterion.num_classes
    assert (criterion.class_weight, criterion.mask_weight, criterion.dice_weight) == (2.0, 5.0, 5.0)
    assert criterion.class_weights == [1.0] * num_classes + [0.1]  # no-object class weight
    assert (criterion.oversample_ratio, criterion.importance_sample_ratio) == (3.0, 0.75)
    matcher = criterion.matcher
    assert (matcher.class_weight, matcher.mask_weight, matcher.dice_weight) == (2.0, 5.0, 5.0)
    # model.head.train_points (tests/tiny.py: 256) reaches both the losses' and the matcher's point sampling
    assert criterion.num_points == matcher.num_points == 256


def test_the_head_and_loss_functions_default_to_the_same_recipe():
    assert {k: _defaults(Mask2FormerHead)[k] for k in LOSS} == LOSS
    assert {k: _defaults(Mask2FormerCriterion)[k] for k in LOSS} == LOSS
    assert {k: _defaults(Mask2FormerCriterion)[k] for k in SAMPLING} == SAMPLING
    assert {k: _defaults(uncertain_point_coords)[k] for k in SAMPLING} == SAMPLING
    assert _defaults(HungarianMatcher) == {**{k: LOSS[k] for k in ("class_weight", "mask_weight", "dice_weight")},
                                           "num_points": 12544}


def test_masked_attention_blocks_where_the_mask_probability_is_under_one_half():
    logits = torch.tensor([-0.2, 0.0, 5.0]).view(1, 1, 1, 3)  # sigmoid 0.45, 0.5, 0.99
    blocked = attention_mask(logits, (1, 3), num_heads=1)
    assert blocked.view(-1).tolist() == [True, False, False]


def test_the_eval_resize_table_has_reins_target_sizes():
    assert transforms.EVAL_RESIZE["cityscapes"] == (1024, 512)
    assert transforms.EVAL_RESIZE["bdd100k"] == (1280, 720)


def test_rein_scale_starts_at_1e_3_through_the_config():
    assert AdapterConfig().scale_init == 1e-3
    model = dgseg.build_model(tiny_config())
    assert math.isclose(model.adapter.scale.item(), 1e-3, rel_tol=1e-6)  # a float32 parameter


def test_adaptformer_is_width_64_and_scale_0_1_by_default():
    assert (AdapterConfig().width, AdapterConfig().scale) == (64, 0.1)
    model = dgseg.build_model(tiny_config(model__adapter={"name": "adaptformer"}))
    assert model.adapter.scale == 0.1  # the shipped config: tests/test_configs.py SHIPPED_KEYS


def test_vpt_prompts_start_uniform_in_vpts_xavier_bound():
    model = dgseg.build_model(tiny_config(model__adapter={"name": "vpt", "tokens": 64}))
    backbone = model.backbone
    patch = backbone.patch_size
    bound = math.sqrt(6.0 / (3 * patch * patch + backbone.embed_dim))  # VPT: 3 * patch area + prompt dim
    prompts = model.adapter.prompts.detach()
    assert prompts.abs().max() <= bound and prompts.abs().max() > 0.95 * bound


def test_full_fine_tuning_trains_the_backbone_at_a_tenth_of_the_lr_with_adamws_default_betas():
    assert AdapterConfig().lr_mult == 0.1
    cfg = tiny_config(model__adapter={"name": "full"})
    model, optimizer, *_ = _build_model_and_optimizer(cfg, torch.device("cpu"), None)
    backbone = {id(p) for p in model.backbone.parameters()}
    for group in optimizer.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1
        assert math.isclose(group["lr"], cfg.train.lr * (0.1 if in_backbone.pop() else 1.0))
        assert group["betas"] == (0.9, 0.999)


def test_the_training_defaults_are_reins_gtav_schedule():
    train = TrainConfig()
    assert (train.optimizer, train.lr, train.weight_decay, train.batch_size) == ("adamw", 1e-4, 0.05, 4)
    assert (train.max_iters, train.power, train.warmup_iters, train.poly_begin) == (40000, 0.9, 0, 0)
    assert train.grad_clip is None


def test_full_fine_tunings_own_default_is_the_same_tenth():
    assert FullFineTune().lr_mult == 0.1


def test_sliding_window_evaluation_defaults_to_512_crops_every_341_pixels():
    assert (EvalConfig().mode, EvalConfig().crop, EvalConfig().stride) == ("slide", 512, 341)
    assert {k: _defaults(Segmentor.predict)[k] for k in ("crop", "stride")} == {"crop": 512, "stride": 341}


def test_images_are_normalised_with_imagenets_mean_and_std():
    assert transforms.IMAGENET_MEAN == (123.675, 116.28, 103.53)
    assert transforms.IMAGENET_STD == (58.395, 57.12, 57.375)


def test_the_training_crop_and_resize_defaults_are_reins():
    data = DataConfig(train=[], val=[])
    assert (data.cat_max_ratio, data.max_long_edge, data.flip_prob) == (0.75, 2048, 0.5)
    # REFERENCE.md section 2: 512 crops, short edge 512 x U(0.5, 2.0) with the long edge at most 2048 x ratio
    assert (data.crop_size, data.scale, data.ratio_range) == ([512, 512], [2048, 512], [0.5, 2.0])
    assert {k: _defaults(transforms.TrainTransform)[k] for k in ("crop_size", "scale", "ratio_range", "cat_max_ratio",
                                                                 "flip_prob", "max_long_edge")} == {
        "crop_size": (512, 512), "scale": (2048, 512), "ratio_range": (0.5, 2.0), "cat_max_ratio": 0.75,
        "flip_prob": 0.5, "max_long_edge": 2048}


def test_the_training_transform_takes_every_augmentation_key_of_the_config():
    from dgseg.engine.data import build_train_set

    cfg = tiny_config(data__cat_max_ratio=0.6, data__ratio_range=[0.7, 1.3], data__flip_prob=0.25,
                      data__max_long_edge=1000, data__keep_ratio=False, data__photometric=False)
    t = build_train_set(cfg).transform
    assert (t.crop_size, t.scale, t.ratio_range) == ((32, 32), (128, 48), (0.7, 1.3))
    assert (t.cat_max_ratio, t.flip_prob, t.max_long_edge, t.keep_ratio, t.photometric) == (0.6, 0.25, 1000, False,
                                                                                         False)


def test_a_crop_where_one_class_covers_exactly_cat_max_ratio_is_redrawn(monkeypatch):
    draws = []
    randint = transforms._randint
    monkeypatch.setattr(transforms, "_randint", lambda *a: draws.append(a) or randint(*a))

    def crops_drawn(period: int) -> int:  # one class in every period-th column, the other elsewhere
        label = (torch.arange(8) % period != 0).long().expand(4, 8).contiguous()
        draws.clear()
        transforms.random_crop_box(4, 8, (4, 4), label, cat_max_ratio=0.75, generator=torch.Generator())
        return len(draws) // 2  # top and left per crop

    assert crops_drawn(2) == 1  # 50% / 50%: kept
    assert crops_drawn(4) == 11  # 75% / 25% in every crop: not under 0.75, redrawn 10 times (mmseg)


def test_photometric_distortion_has_mmsegs_default_ranges():
    assert _defaults(photometric_distortion) == {"brightness_delta": 32, "contrast_range": (0.5, 1.5),
                                                 "saturation_range": (0.5, 1.5), "hue_delta": 18,
                                                 "generator": None}


def test_each_photometric_step_draws_from_its_own_range(monkeypatch):
    """mmseg's PhotoMetricDistortion: brightness beta ~ U(-delta, delta), contrast and saturation alpha ~ U(range)
    each from its own range, hue shift randint(-hue_delta, hue_delta); here ranges of one value each."""
    from dgseg.data import photometric

    calls, shifts = [], []
    convert, hue_shift = photometric._convert, photometric.hue_shift
    monkeypatch.setattr(photometric, "_convert", lambda img, alpha=1.0, beta=0.0: calls.append((alpha, beta))
                        or convert(img, alpha, beta))
    monkeypatch.setattr(photometric, "hue_shift", lambda delta, g=None: shifts.append(delta) or hue_shift(delta, g))
    image = torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    for _ in range(16):
        photometric_distortion(image, brightness_delta=0.0, contrast_range=(1.5, 1.5), saturation_range=(0.25, 0.25),
                               hue_delta=7, generator=g)
    assert {alpha for alpha, beta in calls} == {1.0, 1.5, 0.25}  # brightness (alpha 1), contrast, saturation
    assert {beta for alpha, beta in calls} == {0.0} and set(shifts) == {7}


def test_vltseg_text_guidance_defaults_are_denseclips():
    text = TextConfig()
    assert (text.context_length, text.aux_weight, text.temperature) == (8, 0.4, 0.07)
    assert (text.decoder_layers, text.decoder_width, text.decoder_heads) == (3, 256, 4)


def test_the_built_context_decoder_drops_out_at_0_1(tmp_path):
    from dgseg.models.text import build_text_guidance, save_class_embeddings

    names = ["road", "car"]
    path = save_class_embeddings(tmp_path / "classes.safetensors", torch.randn(2, 16), names)
    guidance = build_text_guidance(TextConfig(name="clip", embeddings=str(path), learnable_context=False), names)
    assert {m.p for m in guidance.decoder.modules() if isinstance(m, nn.Dropout)} == {0.1}
    assert (guidance.temperature, guidance.aux_weight) == (0.07, 0.4)


def test_reins_pyramid_resizes_bilinearly_without_aligned_corners():
    from dgseg.models.neck import SimplePyramid

    feats = [torch.randn(1, 3, 4, 6) for _ in range(4)]
    out = SimplePyramid(3)(feats)  # Rein dino_v2.py forward: F.interpolate(..., "bilinear", align_corners=False)
    for f, o, s in zip(feats, out, (4.0, 2.0, 1.0, 0.5)):
        assert torch.equal(o, f if s == 1.0 else nn.functional.interpolate(f, scale_factor=s, mode="bilinear",
                                                                           align_corners=False))


def test_vltsegs_fpn_is_vitdets_deconv_norm_gelu_deconv_and_max_pool():
    from dgseg.models.neck import SimpleFPN

    fpn = SimpleFPN(8)
    assert [type(m).__name__ for m in fpn.up4] == ["ConvTranspose2d", "LayerNorm2d", "GELU", "ConvTranspose2d"]
    assert isinstance(fpn.down2, nn.MaxPool2d) and (fpn.down2.kernel_size, fpn.down2.stride) == (2, 2)


def test_dinov2_positions_skip_resampling_only_for_a_square_grid_of_the_same_size():
    from dgseg.models.dinov2_pos import dinov2_resample

    pos = torch.randn(1, 16, 8)
    assert dinov2_resample(pos, (4, 4), (4, 4)) is pos  # DINOv2: npatch == N and w == h
    wide = dinov2_resample(pos, (4, 4), (2, 8))  # as many cells, another shape: resampled
    expected = nn.functional.interpolate(pos.reshape(1, 4, 4, 8).permute(0, 3, 1, 2),
                                         scale_factor=(2.1 / 4, 8.1 / 4), mode="bicubic")
    assert torch.equal(wide, expected.permute(0, 2, 3, 1).reshape(1, 16, 8))


def test_sam_positions_resample_bicubic_and_relative_positions_linearly():
    from dgseg.models.backbones import _resample_leftovers

    model = nn.Module()
    model.pos_embed = nn.Parameter(torch.zeros(1, 5, 5, 8))
    model.rel_pos_h = nn.Parameter(torch.zeros(9, 4))
    state = {"pos_embed": torch.randn(1, 3, 3, 8), "rel_pos_h": torch.randn(5, 4)}
    out = _resample_leftovers(state, model)
    pos = nn.functional.interpolate(state["pos_embed"].permute(0, 3, 1, 2), size=(5, 5), mode="bicubic",
                                    align_corners=False).permute(0, 2, 3, 1)
    rel = nn.functional.interpolate(state["rel_pos_h"].T[None], size=9, mode="linear")[0].T  # SAM get_rel_pos
    assert torch.equal(out["pos_embed"], pos) and torch.equal(out["rel_pos_h"], rel)


def test_lora_hooks_q_and_v_of_a_backbone_with_separate_projections():
    from dgseg.config.schema import BackboneConfig
    from dgseg.models.adapters import build_adapter
    from dgseg.models.backbones import build_backbone

    backbone = build_backbone(BackboneConfig(name="eva02_tiny_patch14_224", weights=None, patch_size=None,
                                             img_size=56, model_kwargs={"depth": 2, "embed_dim": 64,
                                                                        "num_heads": 2, "qkv_fused": False}))
    build_adapter(AdapterConfig(name="lora"), backbone)
    for block in backbone.vit.blocks:
        attn = block.attn
        hooked = {n for n in ("q_proj", "k_proj", "v_proj") if getattr(attn, n)._forward_hooks}
        assert hooked == {"q_proj", "v_proj"}  # REFERENCE.md section 1: LoRA on q and v


def test_a_class_subset_mean_leaves_out_classes_never_seen():
    from dgseg.data.classes import subset_miou

    assert subset_miou([50.0, math.nan, 30.0], [0, 1, 2]) == 40.0


def test_rpd_is_100_times_target_over_source():
    from dgseg.metrics import rpd

    assert rpd(30.0, 60.0) == 50.0
    assert math.isnan(rpd(30.0, 0.0)) and math.isnan(rpd(math.nan, 60.0)) and math.isnan(rpd(30.0, math.nan))


def test_synthia_and_urbansyn_raw_ids_that_are_known():
    from dgseg.data.labels import SYNTHIA_IDS, URBANSYN_IDS

    assert SYNTHIA_IDS.known[:23].all() and not SYNTHIA_IDS.known[23]  # SYNTHIA classes 0..22
    assert URBANSYN_IDS.lut[19] == 255 and URBANSYN_IDS.known[19]  # UrbanSyn 19 = void, not an unknown id
    from dgseg.data.datasets import UrbanSyn

    assert UrbanSyn.label_kinds == ((".png", URBANSYN_IDS),)


def test_an_8_bit_rgb_label_png_is_read_from_its_first_channel(tmp_path):
    import numpy as np
    from PIL import Image

    from dgseg.data.reading import read_png16_first_channel

    rgb = np.stack([np.full((2, 3), 7), np.full((2, 3), 9), np.full((2, 3), 11)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "label.png")
    assert (read_png16_first_channel(tmp_path / "label.png") == 7).all()


def test_import_rein_defaults_to_the_dinov2_l_gtav_recipe():
    from dgseg.engine.import_rein import DEFAULT_CONFIG

    assert DEFAULT_CONFIG == CONFIGS / "rein_dinov2_l_gta.yaml"


def test_scores_are_resized_to_the_labels_native_size_bilinearly_without_aligned_corners():
    """REFERENCE.md section 2: mIoU at the label's native resolution; mmseg's EncoderDecoder.postprocess_result
    resizes the logits with resize(..., mode='bilinear', align_corners=False) before the argmax."""
    from dgseg.engine.evaluate import predict_labels

    ramp = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).expand(1, 1, 2, 3)
    scores = torch.cat([ramp, torch.full_like(ramp, 0.3)], dim=1)  # class 0 wins where the ramp passes 0.3
    model = nn.Module()
    model.predict = lambda image, **kw: scores
    labels = predict_labels(model, torch.zeros(1, 3, 2, 3), (4, 10), "whole", 512, 341, None)
    expected = nn.functional.interpolate(scores, size=(4, 10), mode="bilinear", align_corners=False).argmax(1)
    corners = nn.functional.interpolate(scores, size=(4, 10), mode="bilinear", align_corners=True).argmax(1)
    assert torch.equal(labels, expected) and not torch.equal(expected, corners)
