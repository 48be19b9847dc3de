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


def test_the_criterion_built_from_the_config_weighs_and_samples_as_the_paper():
    criterion = dgseg.build_model(tiny_config(model__adapter={"name": "frozen"})).head.criterion
    num_classes = criterion.num_classes
    assert (criterion.class_weight, criterion.mask_weight, criterion.dice_weight) == (2.0, 5.0, 5.0)
    assert criterion.class_weights == [1.0] * num_classes + [0.1]  # no-object class weight
    assert (criterion.oversample_ratio, criterion.importance_sample_ratio) == (3.0, 0.75)
    matcher = criterion.matcher
    assert (matcher.class_weight, matcher.mask_weight, matcher.dice_weight) == (2.0, 5.0, 5.0)


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


def test_the_shipped_rein_recipe_has_the_papers_loss_weights_and_scale_init():
    cfg = dgseg.load_config(CONFIGS / "rein_dinov2_l_gta.yaml")
    head = cfg.model.head
    assert {k: getattr(head, k) for k in {**LOSS, **SAMPLING}} == {**LOSS, **SAMPLING}
    assert cfg.model.adapter.scale_init == 1e-3


def test_the_shipped_protocol_resizes_the_targets_as_rein():
    val = {v.name: v for v in dgseg.load_config(CONFIGS / "rein_dinov2_l_gta.yaml").data.val}
    assert (val["cityscapes"].resize, val["bdd100k"].resize) == ([1024, 512], [1280, 720])
    assert (val["mapillary"].prescale, val["mapillary"].resize) == (0.5, [1024, 512])
    assert transforms.EVAL_RESIZE["cityscapes"] == (1024, 512)
    assert transforms.EVAL_RESIZE["bdd100k"] == (1280, 720)


def test_rein_scale_starts_at_1e_3_through_the_config():
    assert AdapterConfig().scale_init == 1e-3
    model = dgseg.build_model(tiny_config())
    assert math.isclose(model.adapter.scale.item(), 1e-3, rel_tol=1e-6)  # a float32 parameter


def test_adaptformer_is_width_64_and_scale_0_1_by_default_and_in_the_shipped_recipe():
    assert (AdapterConfig().width, AdapterConfig().scale) == (64, 0.1)
    model = dgseg.build_model(tiny_config(model__adapter={"name": "adaptformer"}))
    assert model.adapter.scale == 0.1
    shipped = dgseg.load_config(CONFIGS / "adaptformer_dinov2_l_gta.yaml").model.adapter
    assert (shipped.width, shipped.scale) == (64, 0.1)


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
