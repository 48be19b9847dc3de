"""Rein's training and evaluation protocol, pinned to the values of the official code (w1oves/Rein and the
mmengine / mmcv / mmseg code it runs on). Each test names the file the value comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import tiny_config
from torch import nn

import dgseg
from dgseg.config import TrainConfig
from dgseg.engine.optim import lr_factor, param_groups

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
