"""Every shipped config loads, validates and keeps the paper recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

import dgseg

CONFIGS = sorted((Path(dgseg.__file__).parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_loads_and_fits_on_one_screen(path):
    cfg = dgseg.load_config(path)
    assert cfg.name == path.stem
    assert len(path.read_text().splitlines()) <= 40


def test_rein_dinov2_l_is_the_paper_recipe():
    cfg = dgseg.load_config(Path(dgseg.__file__).parent / "configs" / "rein_dinov2_l_gta.yaml")
    m, t, d = cfg.model, cfg.train, cfg.data
    assert (m.backbone.name, m.backbone.patch_size, m.backbone.img_size) == ("vit_large_patch14_dinov2", 16, 512)
    assert m.backbone.out_indices == [7, 11, 15, 23]
    assert (m.adapter.tokens, m.adapter.rank, m.adapter.shared, m.adapter.link) == (100, 16, True, True)
    assert (m.head.dec_layers, m.head.enc_layers, m.head.train_points) == (9, 6, 12544)
    assert (t.lr, t.weight_decay, t.max_iters, t.batch_size, t.power) == (1e-4, 0.05, 40000, 4, 0.9)
    assert (d.crop_size, d.scale, d.ratio_range, d.cat_max_ratio) == ([512, 512], [2048, 512], [0.5, 2.0], 0.75)
    assert (cfg.eval.mode, cfg.eval.crop, cfg.eval.stride) == ("slide", 512, 341)
    assert [v.name for v in d.val] == ["cityscapes", "bdd100k", "mapillary"]


def test_demo_config_is_the_one_the_demo_runs():
    from dgseg.config import dump_config
    from dgseg.demo import DEMO_CONFIG, demo_config

    shipped = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"  # what the README tells users to copy
    assert DEMO_CONFIG.resolve() == shipped.resolve()
    ran = demo_config("rein", quick=False, overrides=[])
    ran.name = "demo"
    assert dump_config(ran) == dump_config(dgseg.load_config(shipped))
