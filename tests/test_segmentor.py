"""The Segmentor contract: loss(), predict() whole/slide, padding, freezing, parameter counts."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from tiny import tiny_config

import dgseg
from dgseg.cli import main
from dgseg.models.segmentor import sliding_starts


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return dgseg.build_model(tiny_config()).eval()


def test_loss_returns_named_losses_for_every_decoder_layer(model):
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 19, (2, 32, 32))
    losses = model.loss(x, y)
    assert {"loss_cls", "loss_mask", "loss_dice", "d0.loss_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


def test_predict_whole_gives_class_scores_at_input_size_for_any_size(model):
    for h, w in [(32, 32), (37, 53)]:  # 37 x 53 is no multiple of the patch size 8
        scores = model.predict(torch.randn(2, 3, h, w), mode="whole")
        assert scores.shape == (2, 19, h, w)


def test_slide_equals_whole_when_one_window_covers_the_image(model):
    x = torch.randn(1, 3, 40, 48)
    whole = model.predict(x, mode="whole")
    slide = model.predict(x, mode="slide", crop=64, stride=32)
    torch.testing.assert_close(slide, whole)


def test_slide_averages_overlapping_windows_and_batches_them(model):
    x = torch.randn(2, 3, 40, 72)
    one = model.predict(x, mode="slide", crop=32, stride=20, batch=1)
    many = model.predict(x, mode="slide", crop=32, stride=20, batch=16)
    torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-5)
    assert one.shape == (2, 19, 40, 72)


def test_slide_takes_rectangular_windows_and_strides_as_h_w(model, monkeypatch):
    x = torch.randn(1, 3, 40, 72)
    seen, scores = [], model._scores
    monkeypatch.setattr(model, "_scores", lambda w: seen.append(tuple(w.shape[-2:])) or scores(w))
    out = model.predict(x, mode="slide", crop=[32, 48], stride=[16, 24], batch=1)
    assert seen == [(32, 48)] * 4  # rows start at 0, 8 and columns at 0, 24 (mmseg's test_cfg order: H, W)
    by_hand = torch.zeros_like(out)
    count = torch.zeros(1, 1, 40, 72)
    for y in (0, 8):
        for x0 in (0, 24):
            by_hand[..., y:y + 32, x0:x0 + 48] += scores(x[..., y:y + 32, x0:x0 + 48]).float()
            count[..., y:y + 32, x0:x0 + 48] += 1
    torch.testing.assert_close(out, by_hand / count)
    # one size is both axes
    torch.testing.assert_close(model.predict(x, mode="slide", crop=32, stride=20),
                               model.predict(x, mode="slide", crop=[32, 32], stride=[20, 20]))


def test_sliding_window_starts_cover_the_image_and_end_at_the_border():
    assert sliding_starts(1024, 512, 341) == [0, 341, 512]
    assert sliding_starts(512, 512, 341) == [0]
    assert sliding_starts(2048, 512, 341)[-1] == 1536


def test_tiny_segmentor_overfits_one_batch():
    torch.manual_seed(0)
    model = dgseg.build_model(tiny_config())
    model.train()
    x = torch.randn(2, 3, 32, 32)
    y = torch.zeros(2, 32, 32, dtype=torch.long)
    y[:, :, 16:] = 13
    y[:, :4] = 255
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)

    def total():
        return sum(v for k, v in model.loss(x, y).items() if "loss" in k)

    first = float(total().detach())
    for _ in range(40):
        opt.zero_grad()
        loss = total()
        loss.backward()
        opt.step()
    assert float(total()) < 0.5 * first


def test_trainable_parameters_are_adapter_and_head_only(model):
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("adapter.", "head.")) for n in names)
    assert set(model.trainable_state_dict()) >= names


def test_linear_head_with_rein_link_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="model.adapter.link=false"):
        dgseg.build_model(tiny_config(model__head={"name": "linear"}))


def test_a_linear_head_names_the_mask2former_keys_it_does_not_use():
    cfg = tiny_config(model__adapter__link=False, model__head={"name": "linear", "dec_layers": 2})
    with pytest.warns(UserWarning, match=r"'linear'.*dec_layers=2"):
        dgseg.build_model(cfg)
    default = tiny_config(model__adapter__link=False, model__head={"name": "linear"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dgseg.build_model(default)


def test_info_json_reports_the_reference_counts_for_dinov2_large(capsys):
    main(["info", "--set", "model.backbone.name=vit_large_patch14_dinov2", "--set", "model.backbone.img_size=64",
          "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["params"]["adapter"] == 2_990_081
    assert info["params"]["head"] == 20_579_796
    p = info["params"]
    assert p["total"] == p["backbone"] + p["adapter"] + p["neck"] + p["head"]
    assert info["params"]["trainable"] == 2_990_081 + 20_579_796


@pytest.mark.parametrize("adapter,count", [("lora", 786_432), ("adaptformer", 3_171_840), ("vpt", 3_686_400)])
def test_info_json_reports_the_paper_counts_of_the_baselines(capsys, adapter, count):
    main(["info", "--set", "model.backbone.name=vit_large_patch14_dinov2", "--set", "model.backbone.img_size=64",
          "--set", f"model.adapter.name={adapter}", "--set", "model.adapter.link=false",
          "--set", "model.head.name=linear", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["params"]["adapter"] == count


def test_the_same_config_always_builds_the_same_model_without_touching_the_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = dgseg.build_model(tiny_config())
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    b = dgseg.build_model(tiny_config())
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


# ------------------------------------------------------------ model.backbone.patch_remainder


@pytest.fixture(scope="module")
def drop_model():
    torch.manual_seed(0)
    return dgseg.build_model(tiny_config(model__backbone__patch_remainder="drop")).eval()


def test_patch_remainder_drop_leaves_the_last_partial_patch_unseen_and_stretches_the_scores(drop_model):
    """As VLTSeg's re-implementation at 512 px with 14-px patches: the encoder sees the whole patches only (its
    stride-14 convolution never reads the last 8 pixels) and the predictions cover the whole image."""
    seen = []
    hook = drop_model.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    x = torch.randn(1, 3, 37, 53)  # patch 8: 4 x 6 whole patches, 5 and 5 pixels over
    try:
        scores = drop_model.predict(x, mode="whole")
        changed = x.clone()
        changed[..., 32:, :] = 9.0  # the unseen rows and columns
        changed[..., :, 48:] = -9.0
        again = drop_model.predict(changed, mode="whole")
    finally:
        hook.remove()
    assert seen == [(32, 48), (32, 48)] and scores.shape == (1, 19, 37, 53)
    torch.testing.assert_close(again, scores, rtol=0, atol=0)
    outputs = drop_model(x[..., :32, :48])  # the scores are the whole-patch image's, resized to 37 x 53
    torch.testing.assert_close(scores, drop_model.head.semantic(outputs, (37, 53)))


def test_patch_remainder_drop_trains_on_labels_of_the_full_size(drop_model):
    x, y = torch.randn(2, 3, 37, 53), torch.randint(0, 19, (2, 37, 53))
    losses = drop_model.loss(x, y)
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match=r"7x7 px .*patch_remainder: drop needs at least one whole 8-px patch"):
        drop_model(torch.randn(1, 3, 7, 7))


def test_patch_remainder_pad_is_the_default_and_other_values_are_refused():
    from dgseg.config import ConfigError

    assert tiny_config().model.backbone.patch_remainder == "pad"
    with pytest.raises(ConfigError, match=r"model\.backbone\.patch_remainder.*'crop'.*pad.*drop"):
        tiny_config(model__backbone__patch_remainder="crop")


def test_a_sliding_window_smaller_than_the_model_takes_names_eval_crop():
    # an 8 px window is one 8-px patch: the neck's coarsest level would be 0 x 0 (a torch interpolate error)
    model = dgseg.build_model(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"eval\.crop 8: the sliding window is 8x8 px \(WxH\), smaller than the model"):
        model.predict(torch.randn(1, 3, 48, 64), mode="slide", crop=8, stride=8)


def test_a_window_the_head_norms_alone_is_refused_only_where_a_forward_holds_one_window():
    """The tiny head's GroupNorm has one channel per group: a 24 px window (a 1 x 1 coarsest map) fails on a
    forward of one window and runs on a batch of them, so the check follows how the windows are batched."""
    model = dgseg.build_model(tiny_config()).eval()
    image = torch.randn(1, 3, 48, 64)  # 2 x 3 = 6 windows of 24 px
    for batch in (2, 3, 4, 6):  # every forward holds two windows or more
        assert model.predict(image, mode="slide", crop=24, stride=24, batch=batch).shape == (1, 19, 48, 64)
    for batch in (1, 5):  # one window alone in a forward (the last one of 5 + 1)
        with pytest.raises(ValueError, match=r"eval\.crop 24: the sliding window is 24x24 px"):
            model.predict(image, mode="slide", crop=24, stride=24, batch=batch)
    with pytest.raises(ValueError, match=r"predict: the image is 12x12 px .* \(the sliding window is cut to the image\)"):
        model.predict(torch.randn(1, 3, 12, 12), mode="slide", crop=32, stride=24)
