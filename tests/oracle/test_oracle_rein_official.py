"""Oracle: dgseg's Rein backbone against the official Rein code itself, run side by side.

The official classes are not on PyPI: this module runs where ``DGSEG_REIN_REPO`` names a checkout of
github.com/w1oves/Rein (checked at 7da85bc, 2024-03-28) and the oracle environment is present
(``DGSEG_REIN_REPO=/path/to/Rein make oracle``); elsewhere it is skipped with that reason. Imported from the
checkout, without its package ``__init__`` (which also imports the ResNet and ConvNeXt variants):
``rein/models/backbones/reins.py`` (``Reins``, ``LoRAReins``), ``dino_v2.py`` (``DinoVisionTransformer``,
DINOv2's own code with xFormers absent: plain attention) and ``reins_dinov2.py``
(``ReinsDinoVisionTransformer``: Rein after every block, the maps of ``out_indices`` taken after it, the
queries from ``return_auto``), built with the arguments of ``configs/_base_/models/rein_dinov2_mask2former.py``
at a tiny size.

dgseg's tiny Rein model (timm's DINOv2 ViT, 4 blocks of width 32, patch 8) gives its weights to the official
backbone: the ViT's by their own names (timm keeps DINOv2's), Rein's through ``dgseg import-rein``'s table read
backwards (:func:`dgseg.engine.import_rein.official_key`), so the table is checked too. The maps of every block
and the Rein-linked queries must agree, on a square input at the position grid's size and on a non-square one
that resamples it (DINOv2's bicubic with its 0.1 offset). Then the whole model: dgseg's Segmentor against the
official backbone and ``rein/models/heads/rein_mask2former.py``'s ``ReinMask2FormerHead``. Last, Rein on EVA02:
``reins_eva_02.py``'s ``ReinsEVA2``, whose backbone weights dgseg loads from a file as it loads an EVA02
checkpoint (with a stand-in for xFormers' attention and einops installed by ``make oracle``).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import mmcv_shim

mmcv_shim.require_oracle()

import pytest  # noqa: E402

REPO = os.environ.get("DGSEG_REIN_REPO", "")
if not REPO:
    pytest.skip("DGSEG_REIN_REPO is not set (a checkout of github.com/w1oves/Rein: the official Rein classes are "
                "not on PyPI)", allow_module_level=True)

import torch  # noqa: E402
from test_oracle_head import compare, perturb  # noqa: E402
from tiny import tiny_config  # noqa: E402

import dgseg  # noqa: E402
from dgseg.config import load_config  # noqa: E402
from dgseg.engine.import_rein import official_key, rename_key  # noqa: E402

DEPTH, WIDTH, PATCH, GRID, TOKENS, QUERY_DIM = 4, 32, 8, 4, 8, 32


def _official(folder: str, module: str):
    """``rein/models/<folder>/<module>.py`` of the checkout, its folder made a package whose ``__init__`` is
    not run."""
    root = Path(REPO) / "rein" / "models" / folder
    if not (root / f"{module}.py").is_file():
        raise FileNotFoundError(f"DGSEG_REIN_REPO={REPO}: no rein/models/{folder}/{module}.py there; it should "
                                "name a checkout of github.com/w1oves/Rein")
    name = f"rein_official_{folder}"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(root)]
        sys.modules[name] = package
    return importlib.import_module(f"{name}.{module}")


def _pair(rank: int, link: bool):
    cfg = tiny_config(model__backbone__model_kwargs={"depth": DEPTH, "embed_dim": WIDTH, "num_heads": 2},
                      model__backbone__out_indices=list(range(DEPTH)),
                      model__adapter={"name": "rein", "tokens": TOKENS, "query_dim": QUERY_DIM, "rank": rank,
                                      "link": link})
    torch.manual_seed(0)
    ours = dgseg.build_model(cfg).eval()
    with torch.no_grad():  # make every part count: at init the blocks add 1e-5 of their output (layer scale)
        ours.adapter.scale.fill_(0.5)  # and Rein 1e-3 of its refinement
        perturb(ours.adapter, seed=4)
        for name, p in ours.backbone.vit.named_parameters():
            if ".ls" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("attn.qkv.weight"):
                p.mul_(20)  # attention far from uniform
    reins = dict(type="LoRAReins" if rank else "Reins", token_length=TOKENS, embed_dims=WIDTH, num_layers=DEPTH,
                 patch_size=PATCH, link_token_to_query=link, query_dims=QUERY_DIM)
    if rank:
        reins["lora_dim"] = rank
    official = _official("backbones", "reins_dinov2").ReinsDinoVisionTransformer(
        reins_config=reins, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=2, mlp_ratio=4,
        img_size=GRID * PATCH, ffn_layer="mlp", init_values=1e-05, block_chunks=0, qkv_bias=True, proj_bias=True,
        ffn_bias=True, out_indices=list(range(DEPTH))).eval()
    state = {k.removeprefix("backbone.vit."): v for k, v in ours.state_dict().items() if k.startswith("backbone.vit.")}
    for name, value in ours.adapter.state_dict().items():
        key = official_key(f"adapter.{name}")
        assert key is not None and key.startswith("backbone."), name
        state[key.removeprefix("backbone.")] = value
    missing, unexpected = official.load_state_dict(state, strict=False)
    unused = {"mask_token"}  # DINOv2's masked-image token; unlinked, the official Reins still builds the query layers
    unused |= set() if link else {f"reins.{m}.{p}" for m in ("transform", "merge") for p in ("weight", "bias")}
    assert (set(missing), unexpected) == (unused, [])
    return ours, official


@pytest.mark.parametrize("rank", [16, 0], ids=["LoRAReins", "Reins"])
@pytest.mark.parametrize("size", [(32, 32), (40, 64)], ids=["square", "non-square"])
def test_rein_maps_and_linked_queries_equal_the_official_backbone(rank, size):
    ours, official = _pair(rank, link=True)
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps = ours.backbone(images)
        queries = ours.adapter.queries()
        official_maps, official_queries = official.forward_features(images)
        official.reins.scale.zero_()  # no refinement: the frozen DINOv2's maps
        frozen = official.forward_features(images)[0][-1]
    assert len(maps) == len(official_maps) == DEPTH
    for i, (a, b) in enumerate(zip(maps, official_maps)):
        assert a.shape == b.shape, i
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"block {i}")
    torch.testing.assert_close(queries, official_queries, rtol=1e-5, atol=1e-5)
    assert (maps[-1] - frozen).abs().max() > 1e-2  # Rein did change the features the two agree on


def test_unlinked_rein_returns_maps_only_and_equal():
    ours, official = _pair(16, link=False)
    images = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        maps, official_maps = ours.backbone(images), official.forward_features(images)
    assert ours.adapter.queries() is None and isinstance(official_maps, list)
    assert len(maps) == len(official_maps) == DEPTH
    for a, b in zip(maps, official_maps):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_whole_rein_model_equals_the_official_backbone_and_head():
    """Image -> class and mask logits of every decoder layer and the semantic scores: dgseg's Segmentor
    (backbone, Rein, the parameter-free pyramid, the linked Mask2Former head) against the official
    ``ReinsDinoVisionTransformer.forward`` (its x4 / x2 / x1 / x0.5 resize) and ``ReinMask2FormerHead``
    (``rein/models/heads/rein_mask2former.py``, ``replace_query_feat=True``, the config's head dict at the tiny
    size), all weights of the head through ``import-rein``'s table too."""
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    from rein_head_config import rein_head_dict
    ours, backbone = _pair(16, link=True)
    perturb(ours.head, seed=3)  # mmdet's init zeroes the deformable offsets: see them at work
    _official("heads", "rein_mask2former")
    register_all_modules(init_default_scope=True)
    head_cfg = rein_head_dict(in_channels=[WIDTH] * 4, num_classes=ours.head.num_classes, feat_channels=WIDTH,
                              num_queries=TOKENS, num_heads=2, enc_layers=1, enc_ffn=64, dec_layers=2, dec_ffn=64)
    head_cfg.update(type="ReinMask2FormerHead", replace_query_feat=True)
    head = MODELS.build(ConfigDict(head_cfg)).eval()
    state = {}
    for name, value in ours.head.state_dict().items():
        key = official_key(f"head.{name}")
        assert key is not None and key.startswith("decode_head."), name
        state[key.removeprefix("decode_head.")] = value
    head.load_state_dict(state, strict=True)
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    metas = [dict(img_shape=(64, 96), pad_shape=(64, 96))] * 2
    with torch.no_grad():
        out = ours(images)
        scores = ours.head.semantic(out, (64, 96))
        theirs = backbone(images)
        cls_list, mask_list = head(theirs, [SegDataSample(metainfo=m) for m in metas])
        their_scores = head.predict(theirs, metas, None)
    layers = [*out["aux_outputs"], {"pred_logits": out["pred_logits"], "pred_masks": out["pred_masks"]}]
    ours_lists = ([o["pred_logits"] for o in layers], [o["pred_masks"] for o in layers], scores)
    compare(ours_lists, (cls_list, mask_list, their_scores), rel=1e-5)


def _xformers_stand_in(monkeypatch) -> None:
    """``eva_02.py`` imports ``xformers.ops`` at the top and, with the config's ``xattn=True``, attends with its
    ``memory_efficient_attention`` (xFormers is not installed here: it is built for CUDA). The stand-in is that
    function's definition, softmax(q k^T / sqrt(K)) v over [B, M, H, K] tensors, by PyTorch's SDPA. Present for
    the calling test only."""
    ops = types.ModuleType("xformers.ops")

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
        assert attn_bias is None and p == 0.0
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                               v.transpose(1, 2), scale=scale)
        return out.transpose(1, 2)

    ops.memory_efficient_attention = memory_efficient_attention
    package = types.ModuleType("xformers")
    package.ops = ops
    monkeypatch.setitem(sys.modules, "xformers", package)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)


def test_rein_on_eva02_equals_the_official_reins_eva2_loaded_from_its_own_weights_file(tmp_path, monkeypatch):
    """``ReinsEVA2`` (``reins_eva_02.py`` on ``eva_02.py``'s ``EVA2``) with the arguments of
    ``configs/_base_/models/rein_eva02-L_mask2former.py`` at a tiny size (4 blocks of width 32, patch 8 on a
    32 px grid: its position embedding and rotary tables are fixed to img_size, as in the 512 crop it trains on).
    Its backbone weights go to a file, and dgseg loads that file the way it loads an EVA02 checkpoint (timm's
    EVA filter: w1 / w2 / w3 / ffn_ln / q_bias / v_bias renamed, the rotary buffers dropped); Rein's weights go
    through ``import-rein``'s table. The four pyramid levels (the official x4 / x2 / x1 / x0.5 resize) and the
    linked queries must agree."""
    pytest.importorskip("einops", reason="eva_02.py needs einops (make oracle installs it)")
    _xformers_stand_in(monkeypatch)
    module = _official("backbones", "reins_eva_02")
    torch.manual_seed(0)
    official = module.ReinsEVA2(
        reins_config=dict(type="LoRAReins", token_length=TOKENS, embed_dims=WIDTH, num_layers=DEPTH,
                          patch_size=PATCH, link_token_to_query=True, lora_dim=16, query_dims=QUERY_DIM),
        img_size=GRID * PATCH, patch_size=PATCH, in_chans=3, embed_dim=WIDTH, depth=DEPTH, num_heads=2,
        mlp_ratio=4 * 2 / 3, out_indices=list(range(DEPTH)), qkv_bias=True, drop_path_rate=0.0, init_values=None,
        use_checkpoint=False, use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=False,
        rope=True, pt_hw_seq_len=16, intp_freq=True, subln=True, xattn=True, naiveswiglu=True,
        norm_layer=dict(type="LN", requires_grad=True, eps=1e-6)).eval()
    with torch.no_grad():  # every weight away from its init (zero biases, unit norms, Rein's 1e-3 scale)
        g = torch.Generator().manual_seed(5)
        for name, p in official.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.5 if name.endswith("scale") else 0.1))
    backbone_file = tmp_path / "eva02_tiny_converted.pth"
    state = torch.nn.Module.state_dict(official)  # ReinsEVA2.state_dict keeps only Rein's, and wants arguments
    torch.save({k: v for k, v in state.items() if not k.startswith("reins.")}, backbone_file)
    cfg = tiny_config(
        model__backbone={"name": "eva02_large_patch14_224", "weights": str(backbone_file), "patch_size": PATCH,
                         "img_size": GRID * PATCH, "out_indices": list(range(DEPTH)),
                         "model_kwargs": {"depth": DEPTH, "embed_dim": WIDTH, "num_heads": 2}},
        model__adapter={"name": "rein", "tokens": TOKENS, "query_dim": QUERY_DIM, "rank": 16, "link": True})
    ours = dgseg.build_model(cfg).eval()
    rein = {}
    for key, value in official.reins.state_dict().items():
        name = rename_key(f"backbone.reins.{key}")
        if name is not None:
            rein[name.removeprefix("adapter.")] = value
    ours.adapter.load_state_dict(rein, strict=True)
    images = torch.randn(2, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        pyramid, queries = ours.extract(images), ours.adapter.queries()
        official_pyramid, official_queries = official.forward_features(images)
    assert len(pyramid) == len(official_pyramid) == 4
    for i, (a, b) in enumerate(zip(pyramid, official_pyramid)):
        assert a.shape == b.shape, i
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"level {i}")
    torch.testing.assert_close(queries, official_queries, rtol=1e-5, atol=1e-5)


def _clip_release(tmp_path) -> Path:
    """A tiny OpenAI-layout CLIP with QuickGELU (open_clip's CLIP has OpenAI's names), traced and saved as OpenAI
    released theirs: 7-px patches on a 14 px image, a 2 x 2 position grid."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=16, quick_gelu=True,
        vision_cfg={"layers": DEPTH, "width": WIDTH, "patch_size": 7, "image_size": 14, "head_width": 16},
        text_cfg={"context_length": 8, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1}).eval()
    with torch.no_grad():  # away from init: a visible class embedding and position grid
        for name, p in model.visual.named_parameters():
            p.add_(torch.randn_like(p) * (0.5 if "embedding" in name else 0.05))
    traced = torch.jit.trace(model, (torch.randn(1, 3, 14, 14), torch.randint(0, 50, (1, 8))), check_trace=False)
    path = tmp_path / "ViT-T-7.pt"
    torch.jit.save(traced, str(path))
    return path


def test_rein_clip_backbone_keys_give_the_official_clip_vision_transformer(tmp_path):
    """``rein/models/backbones/clip.py`` (``CLIPVisionTransformer``, the backbone of Rein's frozen CLIP baseline,
    ``configs/_base_/models/clip-L_mask2former.py``) loads an OpenAI release with its own ``init_weights``:
    the patch kernel resized bicubically (7 -> 8 px here), the position grid bilinearly (2 x 2 -> 4 x 4), and its
    forward adds the class embedding twice. dgseg with ``rein_clip_l_gta.yaml``'s backbone keys (the QuickGELU
    twin, ``pos_embed_resample: bilinear``, ``class_embedding_twice: true``) loads the same file: every block's
    map agrees; with the keys at their defaults it does not."""
    from dgseg.config import BackboneConfig
    from dgseg.models.backbones import build_backbone

    path = _clip_release(tmp_path)
    official = _official("backbones", "clip").CLIPVisionTransformer(
        input_resolution=GRID * PATCH, patch_size=PATCH, width=WIDTH, layers=DEPTH, heads=2, output_dim=16,
        out_indices=list(range(DEPTH)), get_embeddings=False)
    official.init_weights(str(path))  # torch.jit.load: trusted here, the test made the file
    official.eval()
    recipe = load_config(Path(dgseg.__file__).parent / "configs" / "rein_clip_l_gta.yaml").model.backbone
    keys = dict(pos_embed_resample=recipe.pos_embed_resample, class_embedding_twice=recipe.class_embedding_twice)
    assert recipe.name == "vit_large_patch14_clip_quickgelu_224" and keys == dict(
        pos_embed_resample="bilinear", class_embedding_twice=True)
    tiny = dict(name="vit_base_patch16_clip_quickgelu_224", weights=str(path), patch_size=PATCH, img_size=GRID * PATCH,
                out_indices=list(range(DEPTH)), model_kwargs={"depth": DEPTH, "embed_dim": WIDTH, "num_heads": 2})
    ours = build_backbone(BackboneConfig(**tiny, **keys)).eval()
    plain = build_backbone(BackboneConfig(**tiny)).eval()
    images = torch.randn(2, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        maps, theirs, default = ours(images), official(images), plain(images)
    assert len(maps) == len(theirs) == DEPTH
    for i, (a, b) in enumerate(zip(maps, theirs)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"block {i}")
    assert (default[-1] - theirs[-1]).abs().max() > 1e-3
