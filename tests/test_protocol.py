"""Rein's training and evaluation protocol, pinned to the values of the official code (w1oves/Rein and the
mmengine / mmcv / mmseg code it runs on). Each test names the file the value comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import tiny_config
from torch import nn

import dgseg
from dgseg.config import TrainConfig
from dgseg.data import EvalTransform, TrainTransform
from dgseg.data.photometric import _convert, hsv_to_rgb_u8, hue_shift, photometric_distortion, rgb_to_hsv_u8
from dgseg.data.resizing import rein_short_edges, resize_label, shortest_edge_size
from dgseg.engine.optim import lr_factor, param_groups
from dgseg.metrics import format_table, mean_miou

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "dgseg" / "configs"


def mmengine_chain(max_iters: int, warmup_end: int, poly_begin: int, power: float = 0.9) -> list[float]:
    """The lr factor of every iteration, by mmengine's recursive (chainable) LinearLR and PolyLR updates
    (mmengine/optim/scheduler/param_scheduler.py: ``total_iters = end - begin - 1``; a scheduler steps only
    while ``begin <= global_step < end``)."""
    lr, out, lin, poly = 1.0, [], -1, -1
    s, t_lin, t_poly = 1e-6, warmup_end - 1, max_iters - poly_begin - 1
    for g in range(max_iters):
        if g < warmup_end:
            lin += 1
            lr = lr * s if lin == 0 else lr * (1.0 + (1.0 - s) / (t_lin * s + (lin - 1) * (1.0 - s)))
        if poly_begin <= g:
            poly += 1
            if poly:
                lr = lr * (1 - 1 / (t_poly - poly + 1)) ** power
        out.append(lr)
    return out


def test_citys2acdc_schedule_is_linear_warmup_then_poly_restarting_at_10000():
    # configs/dinov2_citys2acdc/rein_dinov2_mask2former_1024x1024_bs4x2.py: LinearLR(start_factor=1e-6,
    # begin=0, end=10000), PolyLR(power=0.9, begin=10000, end=40000), max_iters 40000
    cfg = dgseg.load_config(CONFIGS / "rein_dinov2_l_citys2acdc.yaml").train
    assert (cfg.max_iters, cfg.warmup_iters, cfg.poly_begin, cfg.lr) == (40000, 10000, 10000, 6e-5)
    official = mmengine_chain(40000, 10000, 10000)
    pinned = {0: 1e-6, 5000: 0.5000505049504911, 10000: 1.0, 25000: 0.5358706541034769, 39999: 0.0}
    for it, value in pinned.items():
        assert lr_factor(it, cfg) == pytest.approx(value, rel=1e-9, abs=1e-12), it
        assert lr_factor(it, cfg) == pytest.approx(official[it], rel=1e-9, abs=1e-12), it
    for it in range(0, 40000, 997):
        assert lr_factor(it, cfg) == pytest.approx(official[it], rel=1e-9, abs=1e-12), it


def test_citys2acdc_takes_8_images_per_step():
    # rein_dinov2_mask2former_1024x1024_bs4x2.py: batch_size=2 on 4 GPUs
    cfg = dgseg.load_config(CONFIGS / "rein_dinov2_l_citys2acdc.yaml").train
    assert cfg.batch_size * cfg.accumulate == 8


def test_gta_schedule_is_poly_from_0_to_40000_as_mmengine():
    # configs/dinov2/rein_dinov2_mask2former_512x512_bs1x4.py: PolyLR(power=0.9, begin=0, end=40000), no warm-up
    cfg = dgseg.load_config(CONFIGS / "rein_dinov2_l_gta.yaml").train
    assert (cfg.warmup_iters, cfg.poly_begin, cfg.batch_size, cfg.accumulate) == (0, 0, 4, 1)
    official = mmengine_chain(40000, 0, 0)
    for it in (0, 1, 20000, 39998, 39999):
        assert lr_factor(it, cfg) == pytest.approx(official[it], rel=1e-9, abs=1e-12), it
    assert lr_factor(39999, cfg) == 0.0 and lr_factor(20000, cfg) == pytest.approx((19999 / 39999) ** 0.9)


def test_warmup_and_poly_overlapping_are_chained():
    cfg = TrainConfig(max_iters=50, warmup_iters=10, poly_begin=0)
    official = mmengine_chain(50, 10, 0)
    for it in range(50):
        assert lr_factor(it, cfg) == pytest.approx(official[it], rel=1e-9, abs=1e-12), it


def test_poly_begin_outside_the_run_is_a_config_error():
    with pytest.raises(dgseg.config.ConfigError, match="train.poly_begin"):
        dgseg.load_config(None, ["train.max_iters=100", "train.poly_begin=100"])


def test_no_decay_on_every_group_norm_by_module_type():
    # rein/optimizers/peft_optimizer_constructor.py: is_norm = isinstance(module, (_BatchNorm, _InstanceNorm,
    # GroupNorm, LayerNorm)) with norm_decay_mult=0.0
    model = dgseg.build_model(tiny_config())
    decay = {id(p): g["weight_decay"] for g in param_groups(model, TrainConfig(weight_decay=0.05)) for p in g["params"]}
    gn = [(n, p) for n, p in model.named_parameters() if ".gn." in n and p.requires_grad]
    assert len(gn) >= 10  # input_convs x3, lateral, output: weight and bias each
    assert all(decay[id(p)] == 0.0 for _, p in gn), [n for n, p in gn if decay[id(p)]]
    assert decay[id(dict(model.named_parameters())["head.pixel_decoder.mask_feature.weight"])] == 0.05


@pytest.mark.parametrize("norm", [nn.GroupNorm(2, 4), nn.LayerNorm(4), nn.BatchNorm1d(4), nn.InstanceNorm1d(4, affine=True)])
def test_norm_layers_get_no_decay_whatever_their_name(norm):
    model = nn.Sequential(nn.Linear(4, 4), norm)  # parameter names "0.weight", "1.weight": no "norm" in them
    decay = {id(p): g["weight_decay"] for g in param_groups(model, TrainConfig(weight_decay=0.05)) for p in g["params"]}
    assert decay[id(model[1].weight)] == 0.0 and decay[id(model[1].bias)] == 0.0
    assert decay[id(model[0].weight)] == 0.05 and decay[id(model[0].bias)] == 0.05


# --- training resize: mmcv RandomChoiceResize + mmseg ResizeShortestEdge --------------------------------------


def test_short_edge_choices_are_reins_list():
    # rein_dinov2_mask2former_512x512_bs1x4.py: scales=[int(512 * x * 0.1) for x in range(5, 21)], max_size=2048
    official_512 = [256, 307, 358, 409, 460, 512, 563, 614, 665, 716, 768, 819, 870, 921, 972, 1024]
    assert rein_short_edges(512) == official_512
    gta = dgseg.load_config(CONFIGS / "rein_dinov2_l_gta.yaml").data
    assert (gta.short_edges, gta.max_long_edge) == (official_512, 2048)
    # configs/dinov2_citys2acdc/rein_dinov2_mask2former_1024x1024_bs4x2.py: 1024 * x * 0.1, max_size=4096
    acdc = dgseg.load_config(CONFIGS / "rein_dinov2_l_citys2acdc.yaml").data
    assert (acdc.short_edges, acdc.max_long_edge) == (rein_short_edges(1024), 4096)
    assert rein_short_edges(1024)[:3] == [512, 614, 716] and rein_short_edges(1024)[-1] == 2048


def test_shortest_edge_size_as_mmseg_then_mmcv_keep_ratio():
    assert shortest_edge_size(1052, 1914, 1024, 2048) == (1024, 1863)  # GTAV frame, short edge binds
    assert shortest_edge_size(1080, 1920, 256, 2048) == (256, 455)
    assert shortest_edge_size(100, 1000, 512, 2048) == (205, 2048)  # the long edge would be 5120: 2048 binds
    assert shortest_edge_size(3024, 4032, 972, 2048) == (972, 1296)


def test_train_transform_draws_the_short_edge_from_the_list():
    image = torch.zeros(3, 60, 100, dtype=torch.uint8)
    label = torch.zeros(60, 100, dtype=torch.int64)
    seen = set()
    for seed in range(24):
        t = TrainTransform(crop_size=(200, 200), short_edges=(30, 45, 120), max_long_edge=160, photometric=False,
                           flip_prob=0.0, generator=torch.Generator().manual_seed(seed))
        _, lab = t(image, label)
        valid = lab != 255  # the crop is larger than the image: the rest is padding
        seen.add((int(valid.any(1).sum()), int(valid.any(0).sum())))
    assert seen == {(30, 50), (45, 75), (96, 160)}  # 120 would make the long edge 200: 160 binds


# --- label resize and photometric distortion as mmcv / mmseg ----------------------------------------------


def test_labels_resize_with_opencv_nearest_not_the_pixel_centre():
    # mmcv imresize(interpolation='nearest') = cv2.INTER_NEAREST: source pixel floor(x * src / dst)
    label = torch.arange(10).repeat(3, 1)
    assert resize_label(label, (3, 4))[0].tolist() == [0, 2, 5, 7]  # centre-based "nearest-exact": [1, 3, 6, 8]
    assert resize_label(label[:, :4], (3, 10))[0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert torch.nn.functional.interpolate(label[None, None].float(), size=(3, 4), mode="nearest-exact")[
        0, 0, 0].tolist() == [1, 3, 6, 8]


def test_labels_resize_equals_cv2_where_available():
    cv2 = pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(0)
    for h, w, oh, ow in [(37, 91, 17, 200), (512, 1024, 333, 1111), (1052, 1914, 512, 931)]:
        label = torch.randint(0, 256, (h, w), generator=g, dtype=torch.uint8)
        ref = cv2.resize(label.numpy(), (ow, oh), interpolation=cv2.INTER_NEAREST)
        assert (resize_label(label, (oh, ow)).numpy() == ref).all()


def test_hsv_conversions_are_opencvs_8bit_ones():
    # values of cv2.cvtColor (COLOR_RGB2HSV / COLOR_HSV2RGB, opencv-python 5.0) on these pixels
    rgb = torch.tensor([[10, 20, 30], [255, 0, 0], [0, 255, 0], [0, 0, 255], [17, 200, 123], [250, 250, 3],
                        [128, 128, 128], [0, 0, 0]], dtype=torch.uint8).T[:, None]
    hsv = [[105, 170, 30], [0, 255, 255], [60, 255, 255], [120, 255, 255], [77, 233, 200], [30, 252, 250],
           [0, 0, 128], [0, 0, 0]]
    assert rgb_to_hsv_u8(rgb)[:, 0].T.tolist() == hsv
    src = torch.tensor([[0, 1, 1], [1, 90, 85], [1, 90, 170], [33, 200, 100], [179, 255, 255], [90, 128, 64],
                        [0, 0, 77], [120, 255, 255]], dtype=torch.uint8).T[:, None]
    back = [[1, 0, 0], [85, 56, 55], [170, 112, 110], [92, 100, 21], [255, 0, 8], [31, 63, 64], [77, 77, 77],
            [0, 0, 255]]
    assert hsv_to_rgb_u8(src)[:, 0].T.tolist() == back


def test_photometric_steps_truncate_to_uint8_and_hue_shifts_minus_18_to_17():
    # mmseg PhotoMetricDistortion.convert: (img.astype(float32) * alpha + beta).clip(0, 255).astype(uint8)
    x = torch.tensor([10, 100, 250], dtype=torch.uint8)
    assert _convert(x, beta=0.9).tolist() == [10, 100, 250]
    assert _convert(x, alpha=1.3).tolist() == [13, 130, 255]
    assert _convert(x, beta=-10.5).tolist() == [0, 89, 239]
    # hue: numpy random.randint(-hue_delta, hue_delta), the high end excluded
    g = torch.Generator().manual_seed(0)
    assert {hue_shift(18, g) for _ in range(2000)} == set(range(-18, 18))
    image = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
    assert photometric_distortion(image, generator=g).dtype == torch.uint8


# --- the mean over a chosen subset of domains -------------------------------------------------------------


def test_mean_over_the_acdc_conditions_only():
    # dg_citys2acdc_1024x1024.py: DGIoUMetric(mean_used_keys=["night/", "fog/", "snow/", "rain/"])
    cfg = dgseg.load_config(CONFIGS / "rein_dinov2_l_citys2acdc.yaml")
    assert sorted(cfg.data.mean_over) == ["acdc-fog", "acdc-night", "acdc-rain", "acdc-snow"]
    miou = {"cityscapes": 80.0, "acdc-fog": 70.0, "acdc-night": 50.0, "acdc-rain": 66.0, "acdc-snow": 62.0,
            "bdd100k": 10.0, "mapillary": 20.0}
    results = {d: {"mIoU": v, "aAcc": 90.0, "IoU": [v] * 19} for d, v in miou.items()}
    assert mean_miou(results, "cityscapes", cfg.data.mean_over) == pytest.approx(62.0)
    assert mean_miou(results, "cityscapes") == pytest.approx(278 / 6)  # every target
    table = format_table(results, source="cityscapes", mean_over=cfg.data.mean_over)
    assert "| mean (acdc-fog, acdc-night, acdc-rain, acdc-snow) | 62.00 |" in table.replace("  ", " ")


def test_mean_over_an_unknown_domain_is_a_config_error():
    with pytest.raises(dgseg.config.ConfigError, match="data.mean_over"):
        dgseg.load_config(CONFIGS / "rein_dinov2_l_citys2acdc.yaml", ["data.mean_over=[acdc-fgo]"])


# --- Mapillary: half-size images and labels, then fit to 1024 x 512 ------------------------------------------


def test_mapillary_is_scored_on_half_size_labels_by_default():
    # mapillary_512x512.py: val on half/val_img + half/val_label, Resize(scale=(1024, 512), keep_ratio=True)
    for name in ("rein_dinov2_l_gta.yaml", "rein_dinov2_l_citys2acdc.yaml", "frozen_dinov2_l_gta.yaml"):
        (spec,) = [s for s in dgseg.load_config(CONFIGS / name).data.val if s.name == "mapillary"]
        assert (spec.prescale, spec.resize) == (0.5, [1024, 512]), name


def test_prescale_halves_image_and_label_as_mapillary_resize_py():
    # tools/convert_datasets/mapillary_resize.py: PIL resize to (W // 2, H // 2), image BICUBIC, label NEAREST
    label = torch.arange(9 * 13).reshape(9, 13) % 19
    image = torch.randint(0, 256, (3, 9, 13), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    img, lab = EvalTransform(resize=(1024, 512), prescale=0.5)(image, label)
    # PIL NEAREST samples the pixel centre: source index int((x + 0.5) * 13 / 6) = 1, 3, 5, 7, 9, 11 (cols)
    assert lab.tolist() == label[[1, 3, 5, 7]][:, [1, 3, 5, 7, 9, 11]].tolist()
    assert tuple(img.shape) == (3, 512, 768)  # the 6 x 4 half image fitted into 1024 x 512
    native = EvalTransform(resize=0.5)(image, label)[1]
    assert native is label  # the native-resolution protocol keeps the label


# --- Mapillary classes: Rein's converter ----------------------------------------------------------------------

# The 66 classes of Mapillary Vistas config_v1.2.json, in file order (name, readable).
MAPILLARY_V12 = [
    ("animal--bird", "Bird"), ("animal--ground-animal", "Ground Animal"), ("construction--barrier--curb", "Curb"),
    ("construction--barrier--fence", "Fence"), ("construction--barrier--guard-rail", "Guard Rail"),
    ("construction--barrier--other-barrier", "Barrier"), ("construction--barrier--wall", "Wall"),
    ("construction--flat--bike-lane", "Bike Lane"), ("construction--flat--crosswalk-plain", "Crosswalk - Plain"),
    ("construction--flat--curb-cut", "Curb Cut"), ("construction--flat--parking", "Parking"),
    ("construction--flat--pedestrian-area", "Pedestrian Area"), ("construction--flat--rail-track", "Rail Track"),
    ("construction--flat--road", "Road"), ("construction--flat--service-lane", "Service Lane"),
    ("construction--flat--sidewalk", "Sidewalk"), ("construction--structure--bridge", "Bridge"),
    ("construction--structure--building", "Building"), ("construction--structure--tunnel", "Tunnel"),
    ("human--person", "Person"), ("human--rider--bicyclist", "Bicyclist"),
    ("human--rider--motorcyclist", "Motorcyclist"), ("human--rider--other-rider", "Other Rider"),
    ("marking--crosswalk-zebra", "Lane Marking - Crosswalk"), ("marking--general", "Lane Marking - General"),
    ("nature--mountain", "Mountain"), ("nature--sand", "Sand"), ("nature--sky", "Sky"), ("nature--snow", "Snow"),
    ("nature--terrain", "Terrain"), ("nature--vegetation", "Vegetation"), ("nature--water", "Water"),
    ("object--banner", "Banner"), ("object--bench", "Bench"), ("object--bike-rack", "Bike Rack"),
    ("object--billboard", "Billboard"), ("object--catch-basin", "Catch Basin"),
    ("object--cctv-camera", "CCTV Camera"), ("object--fire-hydrant", "Fire Hydrant"),
    ("object--junction-box", "Junction Box"), ("object--mailbox", "Mailbox"), ("object--manhole", "Manhole"),
    ("object--phone-booth", "Phone Booth"), ("object--pothole", "Pothole"),
    ("object--street-light", "Street Light"), ("object--support--pole", "Pole"),
    ("object--support--traffic-sign-frame", "Traffic Sign Frame"),
    ("object--support--utility-pole", "Utility Pole"), ("object--traffic-light", "Traffic Light"),
    ("object--traffic-sign--back", "Traffic Sign (Back)"), ("object--traffic-sign--front", "Traffic Sign (Front)"),
    ("object--trash-can", "Trash Can"), ("object--vehicle--bicycle", "Bicycle"), ("object--vehicle--boat", "Boat"),
    ("object--vehicle--bus", "Bus"), ("object--vehicle--car", "Car"), ("object--vehicle--caravan", "Caravan"),
    ("object--vehicle--motorcycle", "Motorcycle"), ("object--vehicle--on-rails", "On Rails"),
    ("object--vehicle--other-vehicle", "Other Vehicle"), ("object--vehicle--trailer", "Trailer"),
    ("object--vehicle--truck", "Truck"), ("object--vehicle--wheeled-slow", "Wheeled Slow"),
    ("void--car-mount", "Car Mount"), ("void--ego-vehicle", "Ego Vehicle"), ("void--unlabeled", "Unlabeled"),
]  # fmt: skip
# What tools/convert_datasets/mapillary2cityscape.py (--train_id) writes for each of them.
REIN_TRAIN_IDS = [
    255, 255, 1, 4, 255, 255, 3, 0, 0, 1, 0, 1, 255, 0, 0, 1, 255, 2, 255, 11, 12, 12, 12, 0, 0, 255, 255, 10,
    255, 9, 8, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 5, 5, 7, 5, 6, 7, 7, 255, 18, 255,
    15, 13, 255, 17, 16, 255, 255, 14, 255, 255, 255, 255,
]  # fmt: skip


def test_mapillary_classes_map_as_reins_converter(tmp_path):
    import json

    from dgseg.data.labels import mapillary_id_map, mapillary_train_id, rein_readable_train_id

    assert [rein_readable_train_id(r) for _, r in MAPILLARY_V12] == REIN_TRAIN_IDS
    assert [mapillary_train_id(n, r) for n, r in MAPILLARY_V12] == REIN_TRAIN_IDS
    assert [mapillary_train_id(n) for n, _ in MAPILLARY_V12] == REIN_TRAIN_IDS  # by name alone, too
    config = tmp_path / "config_v1.2.json"
    config.write_text(json.dumps({"labels": [{"name": n, "readable": r} for n, r in MAPILLARY_V12]}))
    assert mapillary_id_map(config).lut[:66].tolist() == REIN_TRAIN_IDS
    by_readable = dict(zip((r for _, r in MAPILLARY_V12), REIN_TRAIN_IDS))
    assert (by_readable["Curb Cut"], by_readable["Traffic Sign Frame"], by_readable["Utility Pole"]) == (1, 7, 5)


# --- DINOv2 position grid on other input sizes -----------------------------------------------------------------


def dinov2_official_grid(pos_embed: torch.Tensor, height: int, width: int, patch: int) -> torch.Tensor:
    """facebookresearch/dinov2 dinov2/models/vision_transformer.py interpolate_pos_encoding, transcribed:
    ``w`` and ``h`` are the image's height and width (``B, nc, w, h = x.shape``)."""
    import math

    n = pos_embed.shape[1] - 1
    cls_pos, patch_pos = pos_embed[:, 0], pos_embed[:, 1:].float()
    if height * width // patch**2 == n and height == width:
        return pos_embed
    dim = pos_embed.shape[-1]
    w0, h0 = height // patch + 0.1, width // patch + 0.1
    patch_pos = torch.nn.functional.interpolate(
        patch_pos.reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
        scale_factor=(float(w0 / math.sqrt(n)), float(h0 / math.sqrt(n))), mode="bicubic")
    return torch.cat((cls_pos[None], patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


@pytest.mark.parametrize("size", [(512, 1024), (384, 384), (512, 512)])
def test_dinov2_position_grid_follows_dinov2s_formula(size):
    from dgseg.config import BackboneConfig
    from dgseg.models.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(name="vit_small_patch14_dinov2", weights=None, patch_size=16,
                                             img_size=512, model_kwargs={"depth": 1, "embed_dim": 16, "num_heads": 2}))
    vit = backbone.vit
    with torch.no_grad():
        vit.pos_embed.normal_()
        vit.cls_token.zero_()
    h, w = size[0] // 16, size[1] // 16
    got = vit._pos_embed(torch.zeros(1, h, w, 16))
    expected = dinov2_official_grid(vit.pos_embed, *size, patch=16)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    if size == (512, 1024):  # timm's own resampling (size=, antialiased) is another function
        from timm.layers import resample_abs_pos_embed

        timm_pos = resample_abs_pos_embed(vit.pos_embed, (h, w), (32, 32), num_prefix_tokens=1)
        assert (timm_pos - expected).abs().max() > 0.05


def test_dinov2_with_registers_keeps_the_cls_position_in_the_token():
    from dgseg.config import BackboneConfig
    from dgseg.models.backbones import build_backbone

    vit = build_backbone(BackboneConfig(name="vit_small_patch14_reg4_dinov2", weights=None, patch_size=16,
                                        img_size=64, model_kwargs={"depth": 1, "embed_dim": 16, "num_heads": 2})).vit
    with torch.no_grad():
        vit.pos_embed.normal_()
    out = vit._pos_embed(torch.zeros(1, 4, 8, 16))
    assert out.shape == (1, 5 + 32, 16)
    with_cls = torch.cat([torch.zeros(1, 1, 16), vit.pos_embed], dim=1)
    torch.testing.assert_close(out[:, 5:], dinov2_official_grid(with_cls, 64, 128, 16)[:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(out[:, :1], vit.cls_token, rtol=0, atol=0)


# --- the README's protocol table names real files of the official repository -----------------------------------

# Files of w1oves/Rein (git ls-tree of its main branch) that dgseg cites.
REIN_FILES = {
    "configs/dinov2/rein_dinov2_mask2former_512x512_bs1x4.py", "configs/dinov2/dinov2_mask2former_512x512_bs1x4.py",
    "configs/dinov2_citys2acdc/rein_dinov2_mask2former_1024x1024_bs4x2.py",
    "configs/_base_/models/rein_dinov2_mask2former.py",
    "configs/_base_/datasets/cityscapes_512x512.py", "configs/_base_/datasets/cityscapes_1024x1024.py",
    "configs/_base_/datasets/bdd100k_512x512.py", "configs/_base_/datasets/mapillary_512x512.py",
    "configs/_base_/datasets/dg_gta_512x512.py", "configs/_base_/datasets/dg_citys2acdc_1024x1024.py",
    "rein/optimizers/peft_optimizer_constructor.py", "rein/dg_metrics.py", "rein/models/backbones/dino_v2.py",
    "tools/convert_datasets/mapillary_resize.py", "tools/convert_datasets/mapillary2cityscape.py",
    "tools/convert_models/convert_dinov2_large_512x512.py", "tools/convert_models/convert_dinov2_large_1024x1024.py",
}


def test_readme_protocol_table_cites_files_that_exist_in_rein():
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme.split("### Rein's protocol", 1)[1].split("\n## ", 1)[0]
    cited = set(re.findall(r"`((?:configs|tools|rein)/[\w/.-]+\.py)`", section))
    assert cited and cited <= REIN_FILES, cited - REIN_FILES
    for choice in ("schedule", "training resize", "label resize", "photometric distortion", "Mapillary val",
                   "Mapillary classes", "mean row", "no weight decay", "position grid on other sizes (DINOv2)"):
        assert f"| {choice} |" in section, choice
    # Rein has no tools/convert_models/convert_dinov2.py: nothing may cite it
    for path in [root / "README.md", *root.glob("src/dgseg/**/*.py")]:
        assert "convert_models/convert_dinov2.py" not in path.read_text(), path


def test_the_report_mean_follows_the_runs_mean_over(tmp_path):
    import json

    from dgseg.report.runs import load_run

    miou = {"cityscapes": 80.0, "acdc-fog": 70.0, "acdc-night": 50.0, "bdd100k": 10.0}
    (tmp_path / "eval.json").write_text(json.dumps({
        "source": "cityscapes", "mean": {"over": ["acdc-fog", "acdc-night"], "mIoU": 60.0},
        "domains": {d: {"mIoU": v, "aAcc": 90.0, "IoU": [v] * 19} for d, v in miou.items()}}))
    assert load_run(tmp_path).mean_targets() == pytest.approx(60.0)
