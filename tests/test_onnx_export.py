"""ONNX export: EVA02 backbones (rotary position tables) export and match PyTorch; the onnxruntime check runs
before the file lands, so a failed check leaves nothing at ``--out``; the file records how to prepare its input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from tiny import tiny_vltseg_config

import dgseg
from dgseg.cli import main
from dgseg.config import config_from_dict
from dgseg.engine.inference import export_checked_onnx

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_a_rein_eva02_model_exports_to_onnx_and_matches_pytorch(tmp_path):
    """timm computes EVA02's rotary tables from the input size, which the exporter failed on (an Expand shape
    assert); the export, at one fixed size, holds them as constants."""
    data = dataclasses.asdict(tiny_vltseg_config("rein_eva02_l_gta.yaml"))
    data["model"]["backbone"]["model_kwargs"]["depth"] = 2
    data["model"]["backbone"]["out_indices"] = [0, 1, 1, 1]
    data["model"]["adapter"].update(tokens=8, query_dim=32)
    cfg = config_from_dict(data)
    torch.manual_seed(0)
    model = dgseg.build_model(cfg).eval()
    path, diff = export_checked_onnx(model, cfg, tmp_path / "m.onnx", (32, 40))
    assert diff <= 1e-3 and path == tmp_path / "m.onnx"
    assert model.backbone.vit.rope.__dict__.get("get_embed") is None  # timm's own method again after the export


def test_a_failed_onnxruntime_check_is_a_clean_error_and_leaves_nothing_at_out(tmp_path, run, monkeypatch, capsys):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    def failing_session(path, *args, **kwargs):
        raise Fail(f"Load model from {path} failed: Node (blocks.0/attn/Concat_3) Can't merge shape info")

    monkeypatch.setattr(ort, "InferenceSession", failing_session)
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dgseg export: error: {out}: the exported ONNX graph failed its onnxruntime check at "
                          "32x32, so it was not written (Fail: Load model from the graph failed: ")
    assert "Traceback" not in err and "Can't merge shape info" in err
    assert list(tmp_path.iterdir()) == []  # no graph and no temp folder: a rerun needs no --force


def test_the_onnx_file_records_how_to_prepare_its_input(tmp_path, run, capsys):
    """RGB on the 0-255 scale, (rgb - mean) / std per channel: the normalisation of dgseg's own prediction."""
    import numpy as np
    import onnx

    from dgseg.data import EvalTransform

    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(out)]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    mean, std = json.loads(props["dgseg.mean"]), json.loads(props["dgseg.std"])
    assert (props["dgseg.channels"], mean, std) == ("RGB", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # H x W x RGB, as read
    image = ((rgb - np.array(mean)) / np.array(std)).transpose(2, 0, 1)[None].astype(np.float32)
    want = EvalTransform()(torch.from_numpy(rgb).permute(2, 0, 1), torch.zeros(32, 32, dtype=torch.long))[0]
    assert np.allclose(image[0], want.numpy(), atol=1e-5)  # the README's recipe is the prediction's input
    assert ort.InferenceSession(str(out)).run(None, {"image": image})[0].shape == (1, 19, 32, 32)
