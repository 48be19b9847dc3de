"""Backbones: timm ViTs built by name, loaded from local files in the layouts people actually download.

Every model here is a tiny random timm model (``model_kwargs``) written to disk in the official key
layout, so a load is checked against the very model it was written from.
"""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from dgseg.config import BackboneConfig
from dgseg.models.backbones import BackboneWeightsError, build_backbone, default_out_indices
from dgseg.models.weights_io import WeightsError

DINO = "vit_small_patch14_dinov2"
DINO_KW = {"depth": 2, "embed_dim": 64, "num_heads": 2}
SAM = "samvit_base_patch16"
# 4 blocks, global attention in blocks 1 and 3, 2x2 windows elsewhere, a narrow neck
SAM_KW = {"depth": 4, "embed_dim": 64, "num_heads": 2, "global_attn_indexes": [1, 3], "window_size": 2,
          "neck_chans": 16}


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Make every weight non-trivial (timm zero-inits biases and sets layer-scale to 1e-5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith("gamma") else 0.0))
    return model.eval()


def tiny_dino(img_size=56, name=DINO, **kw):
    model = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, dynamic_img_size=True,
                              **{**DINO_KW, **kw})
    return randomize(model)


def tiny_sam(img_size=64):
    return randomize(timm.create_model(SAM, pretrained=False, num_classes=0, img_size=img_size, **SAM_KW), seed=1)


def dino_cfg(path=None, **kw):
    return BackboneConfig(**{"name": DINO, "weights": None if path is None else str(path), "patch_size": None,
                             "img_size": 56, "model_kwargs": DINO_KW, **kw})


def sam_cfg(path=None, **kw):
    return BackboneConfig(**{"name": SAM, "weights": None if path is None else str(path), "patch_size": 16,
                             "img_size": 64, "model_kwargs": SAM_KW, **kw})


def save_official_dinov2(model, path):
    """``dinov2_vit*14_pretrain.pth``: timm key names plus ``mask_token``, a plain dict via torch.save."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["mask_token"] = torch.zeros(1, model.embed_dim)
    torch.save(sd, path)
    return path


def save_official_sam(model, path):
    """``sam_vit_*.pth``: ``image_encoder.`` prefix, ``mlp.lin1/lin2``, plus prompt encoder / mask decoder keys."""
    sd = {"image_encoder." + k.replace("mlp.fc", "mlp.lin"): v.clone() for k, v in model.state_dict().items()}
    sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128)
    sd["prompt_encoder.point_embeddings.0.weight"] = torch.randn(1, 256)
    sd["mask_decoder.iou_token.weight"] = torch.randn(1, 256)
    sd["mask_decoder.transformer.layers.0.norm1.weight"] = torch.randn(256)
    torch.save(sd, path)
    return path


def assert_same_weights(model, source):
    got, want = model.state_dict(), source.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)


@torch.no_grad()
def assert_same_outputs(backbone, source, x):
    backbone.eval()
    torch.testing.assert_close(backbone.vit.forward_features(x), source.forward_features(x), rtol=0, atol=1e-6)
    want = source.forward_intermediates(x, indices=sorted(set(backbone.out_indices)), norm=False,
                                        output_fmt="NCHW", intermediates_only=True)
    by_block = dict(zip(sorted(set(backbone.out_indices)), want))
    for i, got in zip(backbone.out_indices, backbone(x), strict=True):
        torch.testing.assert_close(got, by_block[i], rtol=0, atol=1e-6)


# --- loading the layouts people download ---------------------------------------------------------------


def test_official_dinov2_pth_loads_and_reproduces_the_source_model(tmp_path):
    source = tiny_dino()
    path = save_official_dinov2(source, tmp_path / "dinov2_vits14_pretrain.pth")
    backbone = build_backbone(dino_cfg(path))
    assert_same_weights(backbone.vit, source)
    assert_same_outputs(backbone, source, torch.randn(2, 3, 56, 56))


def test_official_sam_pth_loads_its_image_encoder_only(tmp_path):
    source = tiny_sam()
    path = save_official_sam(source, tmp_path / "sam_vit_b_01ec64.pth")
    backbone = build_backbone(sam_cfg(path))
    assert_same_weights(backbone.vit, source)  # neck included, prompt_encoder / mask_decoder dropped
    assert not any(k.startswith(("prompt_encoder", "mask_decoder")) for k in backbone.state_dict())
    assert_same_outputs(backbone, source, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("name", [DINO, "vit_small_patch14_reg4_dinov2"])
def test_timm_safetensors_file_loads(tmp_path, name):
    source = tiny_dino(name=name)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    backbone = build_backbone(dino_cfg(path, name=name))
    assert_same_weights(backbone.vit, source)
    assert_same_outputs(backbone, source, torch.randn(1, 3, 56, 56))


def test_sam_safetensors_file_loads(tmp_path):
    source = tiny_sam()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    backbone = build_backbone(sam_cfg(path))
    assert_same_outputs(backbone, source, torch.randn(1, 3, 64, 64))


def test_patch_kernel_is_resampled_14_to_16_and_pos_embed_follows_img_size(tmp_path):
    source = tiny_dino(img_size=56)  # 4 x 4 grid of 14 px patches
    path = save_official_dinov2(source, tmp_path / "dinov2_vits14_pretrain.pth")
    backbone = build_backbone(dino_cfg(path, patch_size=16, img_size=96))  # 6 x 6 grid of 16 px patches
    vit = backbone.vit
    assert backbone.patch_size == 16
    assert vit.patch_embed.proj.weight.shape == (64, 3, 16, 16)
    assert vit.pos_embed.shape == (1, 1 + 6 * 6, 64)
    torch.testing.assert_close(vit.cls_token, source.cls_token, rtol=0, atol=0)
    # the 4x4 grid was interpolated to 6x6; the cls entry is not part of the grid and stays as it was
    torch.testing.assert_close(vit.pos_embed[:, 0], source.pos_embed[:, 0], rtol=0, atol=0)
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 96, 128))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 6, 8)] * 4


def test_sam_position_embedding_and_rel_pos_follow_img_size(tmp_path):
    path = save_official_sam(tiny_sam(img_size=64), tmp_path / "sam_vit_b.pth")
    backbone = build_backbone(sam_cfg(path, img_size=128))
    vit = backbone.vit
    assert vit.pos_embed.shape == (1, 8, 8, 64)
    assert vit.blocks[1].attn.rel_pos_h.shape == (2 * 8 - 1, 32)  # global block: the whole 8x8 grid
    assert vit.blocks[0].attn.rel_pos_h.shape == (2 * 2 - 1, 32)  # windowed block: unchanged
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 128, 128))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 8, 8)] * 4


# --- errors that say what to do -------------------------------------------------------------------------


def test_file_of_another_architecture_names_file_architecture_and_keys(tmp_path):
    path = save_official_sam(tiny_sam(), tmp_path / "sam_vit_b_01ec64.pth")
    with pytest.raises(BackboneWeightsError) as exc:
        build_backbone(dino_cfg(path))
    msg = str(exc.value)
    assert str(path) in msg
    assert DINO in msg
    assert "cls_token" in msg  # a model key the file lacks
    assert "image_encoder.pos_embed" in msg  # a file key the model lacks


def test_file_of_another_width_names_the_mismatched_shapes(tmp_path):
    path = save_official_dinov2(tiny_dino(embed_dim=96, num_heads=2), tmp_path / "dinov2_vitb14_pretrain.pth")
    with pytest.raises(BackboneWeightsError) as exc:
        build_backbone(dino_cfg(path))
    msg = str(exc.value)
    assert str(path) in msg and DINO in msg
    assert "shape mismatch" in msg and "cls_token: file (1, 1, 96) vs model (1, 1, 64)" in msg


def test_weights_entry_that_is_not_a_file_says_dgseg_never_downloads(tmp_path):
    missing = tmp_path / "dinov2_vitl14_pretrain.pth"
    with pytest.raises(WeightsError) as exc:
        build_backbone(dino_cfg(missing))
    msg = str(exc.value)
    assert "never downloads" in msg
    assert str(missing) in msg
    # the file to fetch, from timm's pretrained config (no network involved)
    assert "dinov2_vits14_pretrain.pth" in msg or "timm/vit_small_patch14_dinov2" in msg


def _touch(path):
    open(path, "w").close()
    return {}


class Payload:
    """A pickled object whose unpickling runs code (here: creating a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def test_pth_with_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    source = tiny_dino()
    sd = dict(source.state_dict())
    sd["payload"] = Payload(marker)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="weights_only") as exc:
        build_backbone(dino_cfg(path))
    assert str(path) in str(exc.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file really does run code when unpickled
    assert marker.exists()


def test_model_kwargs_cannot_shadow_the_dedicated_keys():
    with pytest.raises(ValueError, match=r"model\.backbone\.img_size"):
        build_backbone(dino_cfg(model_kwargs={**DINO_KW, "img_size": 32}))


def test_unknown_timm_name_is_a_clear_error():
    with pytest.raises(ValueError, match="timm has no model 'vit_small_patch14_dinov9'"):
        build_backbone(dino_cfg(name="vit_small_patch14_dinov9"))


# --- what the backbone returns --------------------------------------------------------------------------


def test_default_out_indices():
    assert default_out_indices(24) == [7, 11, 15, 23]
    assert default_out_indices(12) == [3, 5, 7, 11]


@pytest.mark.parametrize("depth, expected", [(24, [7, 11, 15, 23]), (12, [3, 5, 7, 11])])
def test_built_backbone_uses_default_out_indices(depth, expected):
    backbone = build_backbone(dino_cfg(model_kwargs={"depth": depth, "embed_dim": 16, "num_heads": 1}, img_size=28))
    assert backbone.depth == depth
    assert backbone.out_indices == expected


def test_sam_defaults_to_the_last_four_global_attention_blocks():
    kw = {**SAM_KW, "depth": 8, "global_attn_indexes": [1, 3, 5, 7], "embed_dim": 32}
    backbone = build_backbone(sam_cfg(model_kwargs=kw))
    assert backbone.global_attention_blocks == [1, 3, 5, 7]
    assert backbone.out_indices == [1, 3, 5, 7]


def _reference_maps(vit, x, indices):
    """Block outputs computed by hand: tokens after each block, prefix tokens sliced off, as [B, C, h, w]."""
    p = vit.patch_embed.patch_size[0]
    h, w = x.shape[-2] // p, x.shape[-1] // p
    t = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    outs = {}
    for i, blk in enumerate(vit.blocks):
        t = blk(t)
        outs[i] = t[:, vit.num_prefix_tokens:].reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
    return [outs[i] for i in indices]


@pytest.mark.parametrize("name, prefix", [(DINO, 1), ("vit_small_patch14_reg4_dinov2", 5)])
def test_outputs_are_maps_with_prefix_tokens_removed(name, prefix):
    backbone = build_backbone(dino_cfg(name=name, out_indices=[0, 1, 1, 0])).eval()
    assert backbone.num_prefix_tokens == prefix
    x = torch.randn(2, 3, 56, 84)  # not square: h and w must not be swapped
    with torch.no_grad():
        maps = backbone(x)
        want = _reference_maps(backbone.vit, x, [0, 1, 1, 0])
    assert [tuple(m.shape) for m in maps] == [(2, 64, 4, 6)] * 4
    for got, ref in zip(maps, want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_shallow_model_still_gives_four_maps():
    backbone = build_backbone(dino_cfg())  # 2 blocks: default indices repeat blocks
    assert backbone.out_indices == [0, 0, 0, 1]
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(1, 3, 56, 56))
    assert len(maps) == 4
    torch.testing.assert_close(maps[0], maps[2], rtol=0, atol=0)
    assert not torch.allclose(maps[2], maps[3])


def test_out_of_range_out_indices_name_the_key():
    with pytest.raises(ValueError, match=r"model\.backbone\.out_indices: \[5\]"):
        build_backbone(dino_cfg(out_indices=[0, 5]))


def test_rein_on_a_sam_without_a_global_attention_block_is_refused_naming_the_key():
    from dgseg.config import AdapterConfig
    from dgseg.models.adapters import ADAPTERS

    kw = {**SAM_KW, "global_attn_indexes": [7, 15, 23, 31]}  # timm's ViT-B indexes on a 4-block SAM
    backbone = build_backbone(sam_cfg(model_kwargs=kw, out_indices=[0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"4 blocks all use windowed attention.*model_kwargs.global_attn_indexes"):
        ADAPTERS["rein"](AdapterConfig(name="rein"), backbone)


@pytest.mark.parametrize("patch_size", [8, None])  # None: the model's own 14-px patches
def test_an_img_size_below_one_patch_is_refused_naming_the_key(patch_size):
    # a 0 x 0 position grid: a ZeroDivisionError when the model ran
    with pytest.raises(ValueError, match=r"model\.backbone\.img_size: 6 px is less than one (8|14)-px patch"):
        build_backbone(dino_cfg(img_size=6, patch_size=patch_size))


@pytest.mark.parametrize("kw", [{"embed_dim": 33}, {"num_heads": 0}])
def test_model_kwargs_timm_refuses_are_named_not_an_assertion(kw):
    # timm asserts that the heads divide the width (AssertionError) or divides by them (ZeroDivisionError)
    with pytest.raises(ValueError, match=r"model\.backbone: timm cannot build 'vit_small_patch14_dinov2' .*model_kwargs"):
        build_backbone(dino_cfg(model_kwargs={**DINO_KW, **kw}))
