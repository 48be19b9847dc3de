"""Every shipped config loads, validates and keeps the paper recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

import dgseg
from dgseg.config.validate import refuse_unused_resize_keys

CONFIGS = sorted((Path(dgseg.__file__).parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_loads_and_fits_on_one_screen(path):
    cfg = dgseg.load_config(path)
    assert cfg.name == path.stem
    assert len(path.read_text().splitlines()) <= 40
    refuse_unused_resize_keys(cfg)  # sets no training-resize key its resize ignores (tests/test_resize_keys.py)


def test_rein_dinov2_l_is_the_paper_recipe():
    cfg = dgseg.load_config(Path(dgseg.__file__).parent / "configs" / "rein_dinov2_l_gta.yaml")
    m, t, d = cfg.model, cfg.train, cfg.data
    assert (m.backbone.name, m.backbone.patch_size, m.backbone.img_size) == ("vit_large_patch14_dinov2", 16, 512)
    assert m.backbone.out_indices == [7, 11, 15, 23]
    assert (m.adapter.tokens, m.adapter.rank, m.adapter.shared, m.adapter.link) == (100, 16, True, True)
    assert (m.head.dec_layers, m.head.enc_layers, m.head.train_points) == (9, 6, 12544)
    # configs/_base_/models/rein_dinov2_mask2former.py: query_dims 256; Mask2FormerHead feat/out channels 256,
    # 100 queries, pixel decoder FFN 1024 with 8 heads and 4 sampling points, transformer decoder FFN 2048
    assert (m.adapter.query_dim, m.head.hidden_dim, m.head.num_queries, m.head.num_heads) == (256, 256, 100, 8)
    assert (m.head.enc_ffn, m.head.dec_ffn, m.head.num_points) == (1024, 2048, 4)
    assert (t.lr, t.weight_decay, t.max_iters, t.batch_size, t.power) == (1e-4, 0.05, 40000, 4, 0.9)
    assert (t.warmup_iters, t.poly_begin) == (0, 0)  # PolyLR from iteration 0, no warm-up
    assert (d.crop_size, d.scale, d.ratio_range, d.cat_max_ratio) == ([512, 512], [2048, 512], [0.5, 2.0], 0.75)
    assert (cfg.eval.mode, cfg.eval.crop, cfg.eval.stride) == ("slide", 512, 341)
    assert [(v.name, v.split) for v in d.val] == [("cityscapes", "val"), ("bdd100k", "val"), ("mapillary", "val")]
    # REFERENCE.md sections 1-2: Rein on the frozen backbone, the simple pyramid (strides 4 to 32), AdamW; GTAV's
    # training split is the source (dg_gta_512x512.py)
    assert (m.adapter.name, m.neck.name, t.optimizer) == ("rein", "simple", "adamw")
    assert [(s.name, s.split) for s in d.train] == [("gtav", "train")]
    # dg_gta_512x512.py: RandomChoiceResize(scales=[int(512 * x * 0.1) for x in range(5, 21)],
    # resize_type="ResizeShortestEdge", max_size=2048)
    assert (d.short_edges, d.max_long_edge) == ([int(512 * x * 0.1) for x in range(5, 21)], 2048)
    assert (m.head.class_weight, m.head.mask_weight, m.head.dice_weight, m.head.no_object_weight) == (2.0, 5.0, 5.0, 0.1)
    assert (m.head.oversample_ratio, m.head.importance_sample_ratio, m.adapter.scale_init) == (3.0, 0.75, 1e-3)
    val = {v.name: v for v in d.val}
    assert (val["cityscapes"].resize, val["bdd100k"].resize) == ([1024, 512], [1280, 720])
    assert (val["mapillary"].prescale, val["mapillary"].resize) == (0.5, [1024, 512])


def test_demo_config_is_the_one_the_demo_runs():
    from dgseg.config import dump_config
    from dgseg.demo import DEMO_CONFIG, demo_config

    shipped = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"  # what the README tells users to copy
    assert DEMO_CONFIG.resolve() == shipped.resolve()
    ran = demo_config("rein", quick=False, overrides=[])
    ran.name = "demo"
    assert dump_config(ran) == dump_config(dgseg.load_config(shipped))


def _key(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


# What each shipped config sets beyond its bases, with its source (REFERENCE.md section 1; w1oves/Rein configs/).
SHIPPED_KEYS = {
    "rein_dinov2_l_gta": {"model.backbone.weights": "weights/dinov2_vitl14_pretrain.pth"},  # official DINOv2-L
    # dgseg's choice for 12-block ViTs (Rein ships ViT-L configs only): four evenly spaced blocks
    "rein_dinov2_b_gta": {"model.backbone.name": "vit_base_patch14_dinov2", "model.backbone.out_indices": [3, 5, 7, 11],
                          "model.backbone.weights": "weights/dinov2_vitb14_pretrain.pth"},  # official DINOv2-B
    "rein_dinov2_s_gta": {"model.backbone.name": "vit_small_patch14_dinov2", "model.backbone.out_indices": [3, 5, 7, 11],
                          "model.backbone.weights": "weights/dinov2_vits14_pretrain.pth"},  # official DINOv2-S
    "rein_sam_h_gta": {"model.backbone.name": "samvit_huge_patch16", "model.backbone.out_indices": [7, 15, 23, 31],
                       "model.backbone.weights": "weights/sam_vit_h_4b8939.pth"},  # official SAM ViT-H
    # Rein's clip.py (DenseCLIP's CLIPVisionTransformer): bilinear position resize, class embedding added twice
    "rein_clip_l_gta": {"model.backbone.name": "vit_large_patch14_clip_quickgelu_224",
                        "model.backbone.weights": "weights/ViT-L-14.pt", "model.backbone.pos_embed_resample": "bilinear",
                        "model.backbone.class_embedding_twice": True},
    "rein_eva02_l_gta": {"model.backbone.name": "eva02_large_patch14_224",  # the MIM weights, not EVA02-CLIP
                         "model.backbone.weights": "weights/eva02_L_pt_m38m_p14.pt"},
    # Freeze and the PEFT baselines (REFERENCE.md section 1, PEFT table): no Rein-link (it makes Rein's tokens the
    # head's queries), so Mask2Former keeps its own learned query_feat / query_embed
    "frozen_dinov2_l_gta": {"model.adapter.name": "frozen", "model.adapter.link": False},
    "lora_dinov2_l_gta": {"model.adapter.name": "lora", "model.adapter.rank": 8, "model.adapter.link": False},
    "full_dinov2_l_gta": {"model.adapter.name": "full", "model.adapter.lr_mult": 0.1,  # REFERENCE.md
                          "model.adapter.link": False,
                          # configs/dinov2/dinov2_mask2former_512x512_bs1x4.py custom_keys
                          "train.no_decay_keys": ["norm", "query_embed", "level_embed"]},
    "vpt_dinov2_l_gta": {"model.adapter.name": "vpt", "model.adapter.tokens": 150,  # REFERENCE.md: 150 per block
                         "model.adapter.link": False},
    "adaptformer_dinov2_l_gta": {"model.adapter.name": "adaptformer", "model.adapter.width": 64,
                                 "model.adapter.scale": 0.1, "model.adapter.link": False},
    # the Synthia protocol (REFERENCE.md section 4: terrain, truck and train never occur): the 16 classes it has,
    # and the 13 without wall, fence and pole, besides the 19-class mIoU
    "rein_dinov2_l_synthia": {"eval.miou_subsets": ["synthia16", "synthia13"]},
    # configs/dinov2/rein_dinov2_mask2former_1024x1024_bs4x2.py
    "rein_dinov2_l_citys2acdc": {"model.backbone.img_size": 1024, "data.crop_size": [1024, 1024], "eval.crop": 1024,
                                 "eval.stride": 683, "train.lr": 6e-5,
                                 # LinearLR(end=10000) then PolyLR(begin=10000); 4 GPUs x 2 images = 8 per step
                                 "train.warmup_iters": 10000, "train.poly_begin": 10000, "train.batch_size": 2,
                                 "train.accumulate": 4, "data.source": "cityscapes",
                                 # dg_citys2acdc_1024x1024.py: DGIoUMetric mean_used_keys, the four ACDC conditions
                                 "data.mean_over": ["acdc-fog", "acdc-night", "acdc-rain", "acdc-snow"]},
    # the embedded demo and the comparison (README; configs/demo.yaml, configs/bench.yaml headers)
    "demo": {"train.lr": 1e-3, "train.max_iters": 400, "data.crop_size": [168, 168], "data.source": "synthetic-game",
             "model.backbone.weights": "dinov2_vits14_imgfocus"},
    "bench": {"train.lr": 1e-4, "train.max_iters": 12000, "data.crop_size": [168, 168], "data.source": "synthetic-game"},
}


@pytest.mark.parametrize("name", sorted(SHIPPED_KEYS))
def test_each_shipped_config_keeps_its_source_recipe(name):
    cfg = dgseg.load_config(Path(dgseg.__file__).parent / "configs" / f"{name}.yaml")
    assert {key: _key(cfg, key) for key in SHIPPED_KEYS[name]} == SHIPPED_KEYS[name]


def test_the_shipped_training_sets_and_validation_resizes():
    def load(name):
        return dgseg.load_config(Path(dgseg.__file__).parent / "configs" / f"{name}.yaml").data

    def train_sets(name):
        return [(d.name, d.split) for d in load(name).train]

    # each source trains on its training split, every target is scored on its validation split (Rein's
    # configs/_base_/datasets/; REFERENCE.md section 2: "Cityscapes val", "BDD100K val", "Mapillary val")
    assert train_sets("rein_dinov2_l_synthia") == [("synthia", "train")]
    assert train_sets("rein_dinov2_l_gta_synthia") == [("gtav", "train"), ("synthia", "train")]
    assert train_sets("rein_dinov2_l_gta_synthia_urbansyn") == [("gtav", "train"), ("synthia", "train"),
                                                                ("urbansyn", "train")]
    assert train_sets("rein_dinov2_l_citys2acdc") == [("cityscapes", "train")]
    citys = load("rein_dinov2_l_citys2acdc")
    assert {d.split for d in citys.val} == {"val"}
    acdc = {d.name: d for d in citys.val}
    # Cityscapes at native 2048x1024 (cityscapes_1024x1024.py: Resize(2048, 1024), keep_ratio), BDD 1280x720,
    # Mapillary at half size fitted to 1024 x 512 (as in _base_/gta_to_cbm.yaml; REFERENCE.md section 2)
    assert (acdc["cityscapes"].resize, acdc["bdd100k"].resize) == (None, [1280, 720])
    assert (acdc["mapillary"].prescale, acdc["mapillary"].resize) == (0.5, [1024, 512])
    # rein_dinov2_mask2former_1024x1024_bs4x2.py: RandomChoiceResize(scales=[int(1024 * x * 0.1) for x in
    # range(5, 21)], resize_type="ResizeShortestEdge", max_size=4096)
    assert (citys.short_edges, citys.max_long_edge) == ([int(1024 * x * 0.1) for x in range(5, 21)], 4096)
    bench = load("bench")
    assert [(d.name, d.length) for d in bench.val] == [
        (f"synthetic-{s}", 48) for s in ("game", "photo", "night", "fog", "snow", "rain", "palette")]
