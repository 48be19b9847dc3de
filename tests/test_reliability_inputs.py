"""Inputs a new user tries (issue 16): a non-ViT timm name, images smaller than the model takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import tiny_config

import dgseg
from dgseg.config import BackboneConfig
from dgseg.data import DataError
from dgseg.data.check import check_dataset
from dgseg.engine.evaluate import evaluate
from dgseg.engine.inference import predict_files
from dgseg.image_size import SizeRule, image_size_problem, min_image_size, model_size_rule
from dgseg.models.backbones import build_backbone

# ------------------------------------------------------------------ item 4: a non-ViT timm name


SMALL_SWIN = {"embed_dim": 8, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}


@pytest.mark.parametrize("name, family, kwargs", [("resnet50", "resnet", None), ("convnext_tiny", "convnext", None),
                                                  ("swin_tiny_patch4_window7_224", "swin_transformer", SMALL_SWIN)])
def test_a_cnn_or_hierarchical_timm_name_says_which_families_are_supported(name, family, kwargs):
    with pytest.raises(ValueError) as err:
        build_backbone(BackboneConfig(name=name, weights=None, patch_size=None, img_size=32, model_kwargs=kwargs))
    msg = str(err.value)
    assert msg.startswith(f"model.backbone.name: '{name}' (timm family '{family}') is not a supported backbone")
    assert "VisionTransformer (vit_*" in msg and "Eva (eva02_*" in msg and "samvit_*" in msg


def test_a_wrong_model_kwargs_key_of_a_vit_is_named_as_such():
    with pytest.raises(ValueError, match=r"model.backbone.model_kwargs: timm's 'vit_small_patch14_dinov2' does not "
                                         r"take one of \['depht'\]"):
        build_backbone(BackboneConfig(name="vit_small_patch14_dinov2", weights=None, patch_size=None,
                                      img_size=28, model_kwargs={"depht": 1}))


# ------------------------------------------------------------------ item 5: images smaller than the model takes


@pytest.fixture(scope="module")
def model_cfg():
    cfg = tiny_config(eval__mode="whole")
    torch.manual_seed(0)
    return dgseg.build_model(cfg).eval(), cfg


def test_min_image_size_is_two_by_two_patches_or_two_by_four_with_single_channel_groups():
    assert min_image_size(SizeRule(16)) == (17, 17) and min_image_size(SizeRule(16, 2)) == (17, 49)
    assert image_size_problem(9, 9, SizeRule(8)) is None and image_size_problem(9, 25, SizeRule(8, 2)) is None
    assert "needs at least 17 px on each side" in image_size_problem(16, 100, SizeRule(16))
    for h, w in [(8, 64), (9, 24), (24, 24), (1, 1), (1, 3000)]:
        assert "at least 9 px on its shorter side and 25 px on its longer side" in image_size_problem(
            h, w, SizeRule(8, 2))
    assert min_image_size(SizeRule(16, 1, True)) == (32, 32) and min_image_size(SizeRule(8, 2, True)) == (16, 32)
    assert image_size_problem(16, 16, SizeRule(8, 1, True)) is None  # 2 x 2 whole patches
    assert "needs at least 16 px on each side" in image_size_problem(15, 100, SizeRule(8, 1, True))


SIZES = [(8, 64), (64, 8), (9, 9), (9, 17), (9, 24), (9, 25), (25, 9), (16, 24), (17, 32), (24, 24), (32, 32), (15, 40), (16, 31), (16, 32), (31, 16)]


@pytest.mark.parametrize("remainder", ["pad", "drop"])
@pytest.mark.parametrize("head", ["mask2former", "linear"])
def test_the_size_rule_is_exactly_what_the_model_runs_on(head, remainder):
    cfg = tiny_config(model__head__name=head, model__adapter__link=head == "mask2former",
                      model__backbone__patch_remainder=remainder)
    torch.manual_seed(0)
    model = dgseg.build_model(cfg).eval()
    rule = model_size_rule(model)
    # the tiny head: GroupNorm(32) of 32 channels
    assert rule == SizeRule(8, 2 if head == "mask2former" else 1, remainder == "drop")
    for mode in ("whole", "slide"):
        for h, w in SIZES:
            try:
                with torch.no_grad():
                    model.predict(torch.zeros(1, 3, h, w), mode=mode, crop=32, stride=24)
                runs = True
            except (RuntimeError, ValueError):
                runs = False
            assert runs == (image_size_problem(h, w, rule) is None), (head, mode, h, w)


def tiny_image(path, h, w):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("h, w", [(1, 1), (7, 7), (1, 3000)])
def test_predict_names_a_too_small_image_and_the_minimum(tmp_path, model_cfg, h, w):
    model, cfg = model_cfg
    path = tiny_image(tmp_path / f"im_{h}x{w}.png", h, w)
    with pytest.raises(ValueError, match=rf"im_{h}x{w}\.png: image is {w}x{h} px \(WxH\), smaller than the model "
                                         r"takes: with 8-px patches an image needs at least 9 px"):
        predict_files(model, cfg, [str(path)], tmp_path / "out", progress=False)


def folder(root, h, w):
    tiny_image(root / "val" / "images" / "small.png", h, w)
    (root / "val" / "labels").mkdir()
    Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "val" / "labels" / "small.png")
    return root


def test_eval_and_data_check_name_a_too_small_image(tmp_path, model_cfg):
    model, cfg = model_cfg
    root = folder(tmp_path / "ds", 7, 7)
    spec = {"name": "folder", "root": str(root), "split": "val"}
    cfg = tiny_config(eval__mode="whole", data__val=[spec], data__source=None)
    with pytest.raises(ValueError, match=r"small\.png: image is 7x7 px .*at least 9 px on its shorter side"):
        evaluate(model, cfg, progress=False)
    report = check_dataset("folder", str(root), "val")
    assert [p for p in report.problems if "small.png: image is 7x7 px" in p and "17 px on each side" in p]
    assert not check_dataset("folder", str(root), "val", patch_size=2).problems


def scenes(root, sizes):
    """A `folder` dataset (split val) of black images with all-zero labels: {stem: (h, w)}."""
    for stem, (h, w) in sizes.items():
        tiny_image(root / "val" / "images" / f"{stem}.png", h, w)
        (root / "val" / "labels").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "val" / "labels" / f"{stem}.png")
    return {"name": "folder", "root": str(root), "split": "val"}


def test_an_image_too_small_after_the_entrys_resize_is_named_with_its_stored_size_and_the_key(tmp_path, model_cfg):
    """The model gets 15x9 px of a 150x90 file (resize: 0.1): the message gives both sizes and the key that shrank
    it, not only a size the file does not have."""
    from dgseg.engine.evaluate import evaluate_domain

    model, _ = model_cfg
    spec = scenes(tmp_path / "ds", {"a": (300, 400), "b": (90, 150)})
    cfg = tiny_config(eval__mode="whole", data__val=[dict(spec, resize=0.1, label="site-b")], data__source=None)
    with pytest.raises(ValueError, match=r"b\.png: image file is 150x90 px \(WxH\), 15x9 px \(WxH\) after data\.val "
                                         r"site-b's resize: 0\.1, smaller than the model takes: with 8-px patches an "
                                         r"image needs at least 9 px .*; give that entry a larger resize or none$"):
        evaluate_domain(model, cfg.data.val[0], cfg, torch.device("cpu"), progress=False)


def test_a_later_domains_too_small_first_image_stops_the_evaluation_before_any_domain_is_evaluated(
        tmp_path, model_cfg, monkeypatch):
    """Nothing computed is lost: every domain's first image is checked before the first domain is evaluated."""
    import dgseg.engine.evaluate as evaluate_module

    model, _ = model_cfg
    good, small = scenes(tmp_path / "good", {"a": (48, 64)}), scenes(tmp_path / "small", {"b": (90, 150)})
    cfg = tiny_config(eval__mode="whole", data__val=[good, dict(small, resize=0.1, label="small")], data__source=None)
    evaluated = []
    monkeypatch.setattr(evaluate_module, "evaluate_domain", lambda *a, **k: evaluated.append(a[1]))
    with pytest.raises(ValueError, match=r"data\.val small \(its first image, .*b\.png, checked before evaluating\): "
                                         r".*b\.png: image file is 150x90 px \(WxH\), 15x9 px \(WxH\) after"):
        evaluate(model, cfg, progress=False)
    assert evaluated == []


def test_a_later_image_too_small_stops_the_evaluation_before_any_domain_is_evaluated(tmp_path, model_cfg,
                                                                                     monkeypatch):
    """Every image of every domain is checked first (from the file headers), not only each domain's first."""
    import dgseg.engine.evaluate as evaluate_module

    model, _ = model_cfg
    good = scenes(tmp_path / "good", {"a": (48, 64)})
    later = scenes(tmp_path / "later", {"a": (300, 400), "b": (300, 400), "c": (90, 150)})
    cfg = tiny_config(eval__mode="whole", data__val=[good, dict(later, resize=0.1, label="later")], data__source=None)
    evaluated = []
    monkeypatch.setattr(evaluate_module, "evaluate_domain", lambda *a, **k: evaluated.append(a[1]))
    with pytest.raises(ValueError, match=r"data\.val later \(its image 3 of 3, .*c\.png, checked before evaluating\): "
                                         r".*c\.png: image file is 150x90 px \(WxH\), 15x9 px \(WxH\) after data\.val "
                                         r"later's resize: 0\.1, smaller than the model takes"):
        evaluate(model, cfg, progress=False)
    assert evaluated == []


def mismatched_label(spec, stem):
    """The label of ``stem`` in a `scenes` dataset rewritten one row shorter than its image."""
    path = Path(spec["root"]) / "val" / "labels" / f"{stem}.png"
    h, w = Image.open(path).size[::-1]
    Image.fromarray(np.zeros((h - 1, w), np.uint8)).save(path)
    return path


def test_a_later_label_of_another_size_stops_the_evaluation_before_any_domain_unless_skipped(tmp_path, model_cfg,
                                                                                             monkeypatch):
    """data.on_error=raise: refused before the first domain, with the message reading it gives. skip: left to the
    evaluation, which leaves it out of the metric and records it under `skipped` (nothing dropped unsaid)."""
    import dgseg.engine.evaluate as evaluate_module

    model, _ = model_cfg
    good = scenes(tmp_path / "good", {"a": (48, 64)})
    later = scenes(tmp_path / "later", {"a": (48, 64), "b": (48, 64)})
    label = mismatched_label(later, "b")
    cfg = tiny_config(eval__mode="whole", data__val=[good, dict(later, label="later")], data__source=None)
    evaluated = []
    real = evaluate_module.evaluate_domain
    monkeypatch.setattr(evaluate_module, "evaluate_domain", lambda *a, **k: evaluated.append(a[1]) or real(*a, **k))
    with pytest.raises(DataError, match=rf"data\.val later \(its image 2 of 2, checked before evaluating\): "
                                        rf"{label}: label is 64x47 but its image .*b\.png is 64x48 \(WxH\).*"
                                        r"--set data\.on_error=skip"):
        evaluate(model, cfg, progress=False)
    assert evaluated == []
    cfg = tiny_config(eval__mode="whole", data__val=[good, dict(later, label="later")], data__source=None,
                      data__on_error="skip")
    with pytest.warns(UserWarning, match="skipping a bad sample"):
        results = evaluate(model, cfg, progress=False)
    assert results["later"]["images"] == 1
    assert [s["file"] for s in results["later"]["skipped"]] == [str(Path(later["root"]) / "val" / "images" / "b.png")]


def test_the_size_check_of_every_image_reads_headers_only(tmp_path, model_cfg, monkeypatch):
    """Of 500 images only the first (read whole, as before any evaluation) and the one too small are decoded: the
    others' headers say their sizes, so a 500-image domain costs about a second, not a pass over its pixels."""
    import time

    from dgseg.config import ConfigError
    from dgseg.data import base
    from dgseg.engine.evaluate import check_eval_sizes

    model, _ = model_cfg
    spec = scenes(tmp_path / "ds", {f"{i:03d}": (48, 64 + i % 3) if i < 499 else (8, 8) for i in range(500)})
    cfg = tiny_config(eval__mode="slide", eval__crop=32, eval__stride=24, data__val=[spec], data__source=None)
    decoded, read = [], base.read_image
    monkeypatch.setattr(base, "read_image", lambda path: decoded.append(Path(path).name) or read(path))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"\(its image 500 of 500, .*499\.png, checked before evaluating\): "
                                          r".*499\.png: image is 8x8 px"):
        check_eval_sizes(model, cfg, torch.device("cpu"), before="evaluating")
    assert decoded == ["000.png", "499.png"] and time.perf_counter() - start < 10.0  # ~1 s on a busy machine
