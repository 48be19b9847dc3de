"""Where inference runs: on the model's own device, and on the GPU when the machine has one."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config

import dgseg
import dgseg.engine.eval_record as eval_record
import dgseg.engine.evaluate as evaluate_module
import dgseg.engine.inference as inference
import dgseg.engine.robustness as robustness
from dgseg import demo
from dgseg.engine import distributed


def test_evaluation_without_a_device_runs_where_the_model_is(monkeypatch):
    """A model moved to a GPU and evaluated without ``device`` must not get its images on the CPU (the meta
    device stands in for a GPU: any device other than the CPU)."""
    cfg = tiny_config()
    model = dgseg.build_model(cfg).to("meta")
    seen = []
    monkeypatch.setattr(evaluate_module, "evaluate_domain",
                        lambda model, spec, cfg, device, *args, **kwargs: seen.append(device) or {"mIoU": 0.0})
    evaluate_module.evaluate(model, cfg, progress=False)
    assert seen and all(d.type == "meta" for d in seen)


def test_demo_robustness_runs_on_the_machines_default_device(monkeypatch, tmp_path):
    """``dgseg demo --corruptions``: the trained model (read back on the CPU) is evaluated on the GPU when there is
    one, as training and ``dgseg eval`` are (meta stands in for the GPU)."""
    cfg = tiny_config()
    monkeypatch.setattr(distributed, "default_device", lambda: torch.device("meta"))
    monkeypatch.setattr(inference, "load_model", lambda path: (dgseg.build_model(cfg).eval(), cfg))
    seen = []

    def fake_corruptions(model, cfg, corruptions, severities, seed=0, device=None, **kwargs):
        seen.append((next(model.parameters()).device.type, None if device is None else device.type))
        return {}

    monkeypatch.setattr(robustness, "evaluate_corruptions", fake_corruptions)
    monkeypatch.setattr(robustness, "write_corruptions", lambda *args, **kwargs: [])
    monkeypatch.setattr(eval_record, "evaluation_record", lambda *args, **kwargs: {})  # no checkpoint here
    demo.demo_robustness(tmp_path, ["rein"], ["gaussian_noise"], [1])
    assert seen == [("meta", "meta")]


def test_the_default_device_is_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.default_device().type == "cuda"


def test_onnx_export_traces_with_an_input_where_the_model_is(monkeypatch, tmp_path):
    """A model on a GPU (meta stands in) is traced with an example image on its own device, not the CPU's."""
    cfg = tiny_config()
    model = dgseg.build_model(cfg).to("meta")
    seen = []

    def fake_export(module, args, path, **kwargs):
        seen.append(args[0].device.type)
        raise RuntimeError("traced")  # nothing to write: the example input is what is checked

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    with pytest.raises(RuntimeError, match="traced"):
        inference.export_onnx(model, cfg, tmp_path / "m.onnx", (32, 48))
    assert seen == ["meta"]
    assert not (tmp_path / "m.onnx").exists()
