"""The demo path (`dgseg demo`) end to end, at a tiny size."""

from __future__ import annotations

import json

import pytest

from dgseg.config import load_config
from dgseg.demo import run_demo

TINY = [
    "model.backbone.weights=null", "model.backbone.patch_size=8", "model.backbone.img_size=32",
    "model.backbone.model_kwargs={depth: 2, embed_dim: 32, num_heads: 2}",
    "model.adapter.tokens=8", "model.adapter.query_dim=32",
    "model.head={hidden_dim: 32, num_queries: 8, enc_layers: 1, enc_ffn: 64, dec_layers: 1, dec_ffn: 64,"
    " num_heads: 2, train_points: 256}",
    "data.train=[{name: synthetic-game, split: train, length: 16, size: [48, 64]}]",
    "data.crop_size=[32,32]", "data.scale=[128,48]", "train.max_iters=3", "train.checkpoint_interval=3",
    "train.batch_size=2",
]


def test_demo_trains_evaluates_every_domain_and_writes_the_report(tmp_path):
    results = run_demo(quick=True, out=tmp_path, overrides=TINY)
    assert list(results) == ["rein"]
    domains = results["rein"]["eval"]
    assert set(domains) == {f"synthetic-{s}" for s in ("game", "photo", "night", "fog", "snow", "rain", "palette")}
    report = (tmp_path / "report.md").read_text()
    assert "| rein |" in report and "rPD" in report and "Machine:" in report
    assert (tmp_path / "report.png").stat().st_size > 10_000
    page = (tmp_path / "report.html").read_text()
    assert '<tr data-run="rein">' in page and "Predictions" in page  # the comparison page, one run
    assert json.loads((tmp_path / "results.json").read_text())["rein"]["trainable"] > 0
    assert (tmp_path / "rein" / "checkpoints" / "latest").exists()


def test_demo_robustness_adds_a_row_per_method_on_the_source(tmp_path):
    results = run_demo(quick=True, out=tmp_path, overrides=TINY, corruptions=["gaussian_noise"], severities=[2])
    report = (tmp_path / "report.md").read_text()
    robust = results["rein"]["robustness"]["synthetic-game"]
    assert list(results["rein"]["robustness"]) == ["synthetic-game"]
    assert robust["mIoU"]["gaussian_noise"]["2"] == robust["mPC"]
    assert "## Robustness (Cityscapes-C protocol)" in report
    assert f"| rein | synthetic-game | {robust['clean']:.1f} | {robust['mPC']:.1f} |" in report
    assert (tmp_path / "rein" / "corruptions.json").exists()


def test_demo_comparison_has_a_row_and_a_bar_per_method(tmp_path):
    results = run_demo(quick=True, out=tmp_path, overrides=TINY, methods=["rein", "frozen"])
    assert list(results) == ["rein", "frozen"]
    report = (tmp_path / "report.md").read_text()
    assert "| rein |" in report and "| frozen |" in report
    assert results["frozen"]["trainable"] < results["rein"]["trainable"]


def test_an_interrupted_demo_child_exits_cleanly_without_a_summary(tmp_path, monkeypatch):
    import pytest

    import dgseg.engine.train as train_module
    from dgseg.config import dump_config
    from dgseg.demo import _train_child, demo_config

    monkeypatch.setattr(train_module, "train", lambda *a, **k: {"stopped": True, "step": 7, "losses": []})
    cfg = demo_config("rein", True, TINY)
    with pytest.raises(SystemExit) as stop:
        _train_child(dump_config(cfg), str(tmp_path), str(tmp_path / "summary.json"))
    assert stop.value.code == 3 and not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("cuda, where", [(False, "this CPU"), (True, "this GPU")])
def test_the_reports_precision_line_names_the_device_that_lacks_native_bf16(monkeypatch, cuda, where):
    import torch

    from dgseg import demo
    from dgseg.engine import precision

    cfg = load_config(overrides=["train.amp=bf16"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(precision, "resolve_amp", lambda amp, device, training=True: "none")
    assert demo._precision(cfg) == f"float32 (train.amp=bf16 asked; {where} has no native bf16)"
    monkeypatch.setattr(precision, "resolve_amp", lambda amp, device, training=True: amp)
    assert demo._precision(cfg) == "bf16 autocast"
