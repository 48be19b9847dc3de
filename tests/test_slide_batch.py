"""The sliding-window batch follows the device when eval.batch_size is null: 1 window on a CPU, 4 on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import tiny_config

import dgseg
from dgseg.config import ConfigError
from dgseg.engine.evaluate import predict_labels
from dgseg.models.segmentor import default_slide_batch

CONFIGS = Path(dgseg.__file__).parent / "configs"


def test_default_slide_batch_by_device_type():
    assert default_slide_batch("cpu") == 1
    assert default_slide_batch(torch.device("cuda", 0)) == 4
    assert default_slide_batch("cuda") == 4 and default_slide_batch("mps") == 4


@pytest.fixture(scope="module")
def counted():
    """A tiny model whose forward passes record how many windows each one ran."""
    cfg = tiny_config(eval__mode="slide", eval__crop=64, eval__stride=48)
    model = dgseg.build_model(cfg).eval()
    sizes: list[int] = []
    real = model._scores
    model._scores = lambda images: sizes.append(images.shape[0]) or real(images)
    return cfg, model, sizes


def test_slide_runs_one_window_at_a_time_on_cpu_unless_told(counted):
    cfg, model, sizes = counted
    assert cfg.eval.batch_size is None
    image = torch.randn(1, 3, 112, 128)  # 2 x 3 windows of 64 px at stride 48
    sizes.clear()
    labels = predict_labels(model, image, (112, 128), "slide", cfg.eval.crop, cfg.eval.stride, cfg.eval.batch_size)
    assert sizes == [1] * 6 and labels.shape == (1, 112, 128)
    sizes.clear()
    batched = model.predict(image, mode="slide", crop=64, stride=48, batch=4)
    assert sizes == [4, 2]
    sizes.clear()
    single = model.predict(image, mode="slide", crop=64, stride=48)
    assert sizes == [1] * 6 and torch.allclose(batched, single, atol=1e-4)


def test_config_default_is_by_device_and_zero_is_refused():
    assert dgseg.load_config(CONFIGS / "rein_dinov2_l_gta.yaml").eval.batch_size is None
    assert dgseg.load_config(CONFIGS / "rein_dinov2_l_gta.yaml", ["eval.batch_size=8"]).eval.batch_size == 8
    with pytest.raises(ConfigError, match="eval.batch_size: must be > 0, got 0"):
        dgseg.load_config(CONFIGS / "rein_dinov2_l_gta.yaml", ["eval.batch_size=0"])
