"""The shipped VLTSeg recipes: the text-guided v1 config (LAMB) and the plain fine-tuning config (the
public re-implementation's AdamW recipe), and the exact training resize they use."""

from __future__ import annotations

from pathlib import Path

import torch

import dgseg
from dgseg.data.transforms import TrainTransform

CONFIGS = Path(dgseg.__file__).parent / "configs"


def _shared_recipe(cfg) -> None:
    m, d, t, e = cfg.model, cfg.data, cfg.train, cfg.eval
    assert (m.backbone.name, m.backbone.patch_size, m.backbone.img_size) == ("eva02_large_patch14_clip_224", 14, 512)
    assert (m.backbone.drop_path, m.backbone.out_indices) == (0.2, [9, 14, 19, 23])
    assert (m.adapter.name, m.adapter.lr_mult, m.adapter.link, m.neck.name) == ("full", 0.1, False, "fpn")
    assert m.neck.norm == "batch"  # eva02.py fpn1: ConvTranspose2d, SyncBatchNorm, GELU, ConvTranspose2d
    assert (d.scale, d.ratio_range, d.keep_ratio, d.short_edges) == ([1280, 720], [1.0, 1.0], False, None)
    assert (d.crop_size, d.cat_max_ratio, d.flip_prob, d.photometric) == ([512, 512], 0.75, 0.5, True)
    assert [(v.name, v.split, v.resize, v.prescale) for v in d.val] == [
        ("cityscapes", "val", [1024, 512], None), ("bdd100k", "val", [1024, 512], None),
        ("mapillary", "val", [1024, 512], None)]
    assert (t.max_iters, t.batch_size, t.warmup_iters, t.poly_begin, t.power) == (5000, 16, 0, 500, 0.9)
    assert (e.mode, e.crop, e.stride) == ("slide", 512, 426)
    # schedule_5k.py paramwise_cfg custom_keys in dgseg's names (encoder backbone.vit.*, the simple FPN neck.*):
    # encoder and FPN at lr x 0.1 with decay; pos_embed, the final norm and each block's norm1 / norm2 at lr x 0.1
    # without; query_embed, query_feat and level_embed at lr x 1 without
    enc, norm, embed = ({"lr_mult": 0.1, "decay_mult": 1.0}, {"lr_mult": 0.1, "decay_mult": 0.0},
                        {"lr_mult": 1.0, "decay_mult": 0.0})
    assert t.custom_keys == {"backbone": enc, "neck": enc, "backbone.vit.norm": norm, "backbone.vit.pos_embed": norm,
                             "backbone.vit.blocks.*.norm1": norm, "backbone.vit.blocks.*.norm2": norm,
                             "query_embed": embed, "query_feat": embed, "level_embed": embed}
    assert m.backbone.weights == "weights/EVA02_CLIP_L_psz14_s4B.pt"
    h = m.head  # Rein's Mask2Former (configs/_base_/models/rein_dinov2_mask2former.py), as the re-implementation's
    assert (h.name, h.num_queries, h.train_points, h.oversample_ratio, h.importance_sample_ratio) == (
        "mask2former", 100, 12544, 3.0, 0.75)
    assert (h.class_weight, h.mask_weight, h.dice_weight, h.no_object_weight) == (2.0, 5.0, 5.0, 0.1)


def test_plain_vltseg_is_the_reimplementations_adamw_recipe():
    cfg = dgseg.load_config(CONFIGS / "vltseg_plain_eva02_clip_l_gta.yaml")
    _shared_recipe(cfg)
    t = cfg.train
    assert cfg.model.text.name == "none"
    b = cfg.model.backbone  # eva02.py: no inner_attn_ln, no final norm; pos_embed not taken from the file
    assert (b.attn_norm, b.final_norm, b.pos_embed_init) == (False, False, "trunc_normal")
    assert b.patch_remainder == "drop"  # eva02.py's patch embedding: 36 x 36 patches of a 512 crop
    assert (t.optimizer, t.lr, t.weight_decay, t.grad_clip) == ("adamw", 1e-4, 0.05, 0.01)


def test_text_guided_vltseg_trains_with_lamb_and_denseclips_text_branch():
    cfg = dgseg.load_config(CONFIGS / "vltseg_eva02_clip_l_gta.yaml")
    _shared_recipe(cfg)
    x, t = cfg.model.text, cfg.train
    assert (x.name, x.arch, x.activation, x.context_length, x.context_init) == (
        "clip", "EVA02-L-14", "auto", 8, "denseclip")
    assert (x.context_decoder, x.decoder_layers, x.decoder_width, x.decoder_heads) == (True, 3, 256, 4)
    assert (x.aux_weight, x.temperature) == (0.4, 0.07)
    b = cfg.model.backbone  # EVA-CLIP's own image tower, whole; its final norm feeds the visual projection
    assert (b.attn_norm, b.final_norm, b.pos_embed_init) == (True, True, "file")
    assert b.patch_remainder == "pad"  # v1: pads to 518 (37 x 37 patches), crops the logits back
    assert x.learnable_context and x.weights == b.weights  # CoOp context; the EVA-CLIP file's own text tower
    # LAMB's lr / weight decay are not in the paper: DenseCLIP's lr, the LAMB paper's weight decay
    assert (t.optimizer, t.lr, t.weight_decay, t.grad_clip) == ("lamb", 1e-4, 0.01, None)


def test_training_resize_without_keeping_the_ratio_is_exact():
    image = torch.randint(0, 255, (3, 100, 300), dtype=torch.uint8)
    label = torch.zeros(100, 300, dtype=torch.long)
    common = dict(crop_size=(72, 128), scale=(128, 72), ratio_range=None, flip_prob=0.0, photometric=False)
    img, lab = TrainTransform(keep_ratio=False, **common)(image, label)
    assert img.shape == (3, 72, 128) and not (lab == 255).any()  # the whole crop is the resized image
    _, fitted = TrainTransform(keep_ratio=True, **common)(image, label)
    assert (fitted == 255).any()  # fitted to 43 x 128, padded


def test_parameter_counts_of_both_vltseg_recipes_as_the_readme_gives_them():
    """Counted on the meta device (no weights read). Plain: the re-implementation's EVA02 (eva02.py: 24 blocks
    without the attention sub-LN, no final norm, no visual projection); v1: EVA02-CLIP-L's image tower with its
    final norm and visual projection (1024 -> 768)."""
    counts = {}
    for name, sets in (("vltseg_plain_eva02_clip_l_gta", []), ("vltseg_eva02_clip_l_gta", ["model.text.weights=null"])):
        cfg = dgseg.load_config(CONFIGS / f"{name}.yaml", ["model.backbone.weights=null", *sets])
        with torch.device("meta"):
            counts[name] = dgseg.build_model(cfg).parameter_counts()
    assert counts["vltseg_plain_eva02_clip_l_gta"]["backbone"] == 304_331_712
    assert counts["vltseg_eva02_clip_l_gta"]["backbone"] == 305_170_112
    assert counts["vltseg_eva02_clip_l_gta"]["context_decoder"] == 3_751_680
