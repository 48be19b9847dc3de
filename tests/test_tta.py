"""Test-time augmentation as mmseg's SegTTAModel: views, resizing back, softmax mean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgseg.config import ConfigError, TTAConfig, load_config
from dgseg.engine.evaluate import predict_labels
from dgseg.engine.tta import scaled_size, tta_probabilities


class PositionModel(nn.Module):
    """Scores that depend on the pixel values and position (not mirror symmetric); records input sizes."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.classes = classes
        self.sizes: list[tuple[int, int]] = []

    def predict(self, x, mode="whole", crop=0, stride=0, batch=1):
        self.sizes.append(tuple(x.shape[-2:]))
        h, w = x.shape[-2:]
        ramp = torch.linspace(0, 3, w).expand(h, w)
        k = torch.arange(self.classes, dtype=torch.float32)[:, None, None]
        return torch.sin(k * ramp + x.mean(1, keepdim=True) * (k + 1))


def test_defaults_are_mmseg_cityscapes_ratios_with_flip_and_off():
    tta = load_config(None).eval.tta
    assert tta == TTAConfig(enabled=False, scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip=True)
    with pytest.raises(ConfigError, match="eval.tta.scales"):
        load_config(None, ["eval.tta.scales=[]"])


def test_one_scale_without_flip_is_plain_inference_exactly():
    from tiny import tiny_config

    import dgseg

    model = dgseg.build_model(tiny_config()).eval()
    x = torch.randn(2, 3, 40, 56)
    for mode in ("whole", "slide"):
        plain = predict_labels(model, x, (45, 60), mode, 32, 24, 1)
        tta = predict_labels(model, x, (45, 60), mode, 32, 24, 1, tta=TTAConfig(True, [1.0], False))
        assert torch.equal(plain, tta), mode
    probs = tta_probabilities(model, x, (45, 60), [1.0], False, "whole", 32, 24, 1)
    expected = F.interpolate(model.predict(x), (45, 60), mode="bilinear", align_corners=False).softmax(1)
    torch.testing.assert_close(probs, expected, rtol=0, atol=0)


def test_flip_only_is_the_mean_of_the_image_and_its_mirrored_prediction():
    model = PositionModel()
    x = torch.randn(1, 3, 12, 17)
    probs = tta_probabilities(model, x, (12, 17), [1.0], True, "whole", 0, 0, 1)
    a = model.predict(x).softmax(1)
    b = model.predict(x.flip(-1)).flip(-1).softmax(1)
    torch.testing.assert_close(probs, (a + b) / 2, rtol=0, atol=1e-7)
    assert not torch.allclose(a, b)  # the flip matters for this model


def test_views_are_rescaled_as_mmcv_and_resized_back_before_the_mean():
    model = PositionModel()
    x = torch.randn(1, 3, 37, 50)
    probs = tta_probabilities(model, x, (37, 50), [0.5, 1.75], True, "whole", 0, 0, 1)
    assert model.sizes == [(19, 25), (19, 25), (65, 88), (65, 88)]
    assert scaled_size(37, 50, 0.75) == (28, 38)
    views = []
    for s in (0.5, 1.75):
        xs = F.interpolate(x, scaled_size(37, 50, s), mode="bilinear", align_corners=False)
        for flip in (False, True):
            out = model.predict(xs.flip(-1)).flip(-1) if flip else model.predict(xs)
            views.append(F.interpolate(out, (37, 50), mode="bilinear", align_corners=False).softmax(1))
    torch.testing.assert_close(probs, sum(views) / 4, rtol=0, atol=1e-6)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 37, 50))


def test_eval_and_predict_use_eval_tta(monkeypatch, tmp_path):
    import numpy as np
    from PIL import Image
    from tiny import tiny_config
    from tiny_run import tiny_run

    import dgseg
    import dgseg.engine.tta as tta_module
    from dgseg.cli import main
    from dgseg.engine.evaluate import evaluate

    calls = []
    real = tta_module.tta_probabilities

    def spy(model, image, size, scales, flip, *args, **kwargs):
        calls.append((tuple(scales), flip))
        return real(model, image, size, scales, flip, *args, **kwargs)

    monkeypatch.setattr(tta_module, "tta_probabilities", spy)
    cfg = tiny_config(eval__tta={"enabled": True, "scales": [0.75, 1.0], "flip": False})
    evaluate(dgseg.build_model(cfg), cfg, progress=False)
    assert calls == [((0.75, 1.0), False)] * 4  # 2 domains x 2 images
    calls.clear()
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "a.png")  # 0.5 x: 4 x 6 patches
    run = tiny_run(tmp_path / "run")
    assert main(["predict", "--checkpoint", str(run), str(tmp_path / "a.png"), "--out", str(tmp_path / "p"),
                 "--tta", "--no-progress"]) == 0
    assert calls == [((0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True)]


def test_a_tta_scale_that_shrinks_the_view_below_the_model_names_the_scale():
    from tiny import tiny_config

    import dgseg

    model = dgseg.build_model(tiny_config()).eval()  # 8-px patches: a 6 x 5 view is less than two patches
    with pytest.raises(ValueError, match=r"eval\.tta\.scales: 0\.1 turns the 64x48 px \(WxH\) input into a view"):
        tta_probabilities(model, torch.randn(1, 3, 48, 64), (48, 64), [1.0, 0.1], False, "whole", 32, 24, 1)
