"""benchmarks/feature_shift.py: how far a method moves the frozen backbone's features, per domain."""

import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_config

import dgseg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not of the package
    sys.path.insert(0, str(ROOT))
from benchmarks.feature_shift import domain_gap, domain_images, feature_shift, frozen_counterpart  # noqa: E402


def _shift(cfg, perturb: bool):
    torch.manual_seed(0)
    model = dgseg.build_model(cfg).eval()
    with torch.no_grad():  # timm's DINOv2 starts its LayerScale at 1e-5, which would damp what acts in a block
        for name, p in model.backbone.named_parameters():
            if name.endswith(".gamma"):
                p.fill_(1.0)
    if perturb:  # a trained adapter: its parameters no longer at their near-identity start
        with torch.no_grad():
            for p in model.adapter.parameters():
                p.add_(torch.randn_like(p))
    return feature_shift(model, frozen_counterpart(model, cfg), domain_images(cfg, 2), cfg.data.source)


def test_a_frozen_model_moves_nothing_and_keeps_the_domain_gaps():
    result = _shift(tiny_config(model__adapter={"name": "frozen"}), perturb=False)
    assert set(result["relative_change"]) == {"synthetic-game", "synthetic-night"}
    assert all(c == 0.0 for changes in result["relative_change"].values() for c in changes)
    before, after = result["gap"]["synthetic-night"]
    assert before == pytest.approx(after) and before > 0
    assert "synthetic-game" not in result["gap"]  # the source is no target


@pytest.mark.parametrize("method", ["rein", "adaptformer", "vpt", "lora"])
def test_an_adapter_is_compared_with_the_same_backbone_without_it(method):
    extra = {"tokens": 8, "query_dim": 32} if method == "rein" else {"link": False}
    cfg = tiny_config(model__adapter={"name": method, **extra})
    if method in ("lora", "adaptformer"):  # they start as the identity (LoRA's B and the up-projection are 0)
        assert all(c == 0.0 for c in _shift(cfg, perturb=False)["relative_change"]["synthetic-game"])
    moved = _shift(cfg, perturb=True)
    assert all(c > 1e-3 for changes in moved["relative_change"].values() for c in changes)
    before, after = moved["gap"]["synthetic-night"]
    assert before != after


def test_full_fine_tuning_needs_the_pretrained_weights_to_compare_against():
    cfg = tiny_config(model__adapter={"name": "full", "link": False})
    model = dgseg.build_model(cfg)
    with pytest.raises(ValueError, match="model.backbone.weights"):
        frozen_counterpart(model, cfg)


def test_the_gap_is_the_distance_of_the_means_over_the_mean_spread():
    a = torch.zeros(1, 2, 2, 2)
    a[0, 0] = torch.tensor([[0.0, 2.0], [0.0, 2.0]])  # channel 0: mean 1, std 1.155; channel 1: 0, 0
    b = a.clone()
    b[0, 1] += 3.0  # the means 3 apart along channel 1, the same spread
    assert domain_gap(a, b) == pytest.approx(3.0 / torch.tensor([0.0, 2.0, 0.0, 2.0]).std().item())
