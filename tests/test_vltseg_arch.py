"""The architecture keys that make the plain VLTSeg recipe the re-implementation's EVA02 (github VLTSeg/VLTSeg
``vltseg/models/eva02.py``): ``model.backbone.attn_norm`` / ``final_norm`` / ``pos_embed_init`` and
``model.neck.norm`` (BatchNorm2d in the FPN, SyncBatchNorm under DDP on GPUs), on tiny models."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file
from tiny import TINY_BACKBONE, tiny_config
from torch import nn

import dgseg
from dgseg.config import BackboneConfig, ConfigError
from dgseg.engine import distributed
from dgseg.models.backbones import build_backbone
from dgseg.models.heads.linear import LayerNorm2d
from dgseg.models.neck import SimpleFPN

EVA = dict(name="eva02_large_patch14_clip_224", weights=None, patch_size=16, img_size=32,
           model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2})


def _eva(**kw):
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(**{**EVA, **kw})).eval()


@pytest.fixture(scope="module")
def eva_file(tmp_path_factory):
    """A timm-layout file of the tiny EVA02-CLIP, with the sub-LNs, final norm and a position embedding of 5s."""
    state = {k: v.clone() for k, v in _eva().vit.state_dict().items()}
    for k, v in state.items():
        if ".attn.norm." in k or k.startswith("norm."):
            v.uniform_(0.5, 1.5)  # not a fresh LayerNorm: loading it or not shows
    state["pos_embed"].fill_(5.0)
    path = tmp_path_factory.mktemp("eva") / "eva02_clip_tiny.safetensors"
    save_file(state, str(path))
    return path, state


def test_attn_norm_false_makes_every_blocks_sub_ln_an_identity_and_changes_the_forward(eva_file):
    path, state = eva_file
    kept, gone = _eva(weights=str(path)), _eva(weights=str(path), attn_norm=False)
    assert all(isinstance(b.attn.norm, nn.LayerNorm) for b in kept.vit.blocks)
    assert all(isinstance(b.attn.norm, nn.Identity) for b in gone.vit.blocks)
    assert set(kept.state_dict()) - set(gone.state_dict()) == {
        f"vit.blocks.{i}.attn.norm.{p}" for i in range(2) for p in ("weight", "bias")}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(kept(x)[-1], gone(x)[-1])


def test_attn_norm_false_loads_a_file_holding_the_sub_ln_weights_silently(eva_file):
    path, state = eva_file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gone = _eva(weights=str(path), attn_norm=False, final_norm=False)
    own = gone.vit.state_dict()
    assert not any(".attn.norm." in k or k.startswith("norm.") for k in own)
    assert all(torch.equal(v, state[k]) for k, v in own.items())  # everything else is the file's


def test_attn_norm_false_on_a_backbone_without_one_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.backbone\.attn_norm: false .* 'vit_small_patch14_dinov2' has none"):
        build_backbone(BackboneConfig(**TINY_BACKBONE, attn_norm=False))


def test_final_norm_false_removes_only_an_unread_norm(eva_file):
    path, _ = eva_file
    kept, gone = _eva(weights=str(path)), _eva(weights=str(path), final_norm=False)
    assert isinstance(kept.vit.norm, nn.LayerNorm) and isinstance(gone.vit.norm, nn.Identity)
    assert set(kept.state_dict()) - set(gone.state_dict()) == {"vit.norm.weight", "vit.norm.bias"}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # the block outputs fed to the neck are taken before the final norm
        assert all(torch.equal(a, b) for a, b in zip(kept(x), gone(x)))


def test_final_norm_false_with_text_guidance_is_refused():
    with pytest.raises(ConfigError, match=r"model\.backbone\.final_norm: false .* text guidance"):
        tiny_config(model__backbone={**EVA, "final_norm": False}, model__adapter={"name": "full", "link": False},
                    model__text={"name": "clip", "arch": "EVA02-L-14"})


def test_pos_embed_init_trunc_normal_draws_the_position_embedding_again(eva_file):
    path, _ = eva_file
    loaded, drawn = _eva(weights=str(path)), _eva(weights=str(path), pos_embed_init="trunc_normal")
    assert torch.allclose(loaded.vit.pos_embed, torch.full_like(loaded.vit.pos_embed, 5.0))
    pos = drawn.vit.pos_embed
    assert pos.abs().max() <= 2.0 and 0.01 < float(pos.std()) < 0.03  # trunc_normal_(std=.02), cut at +-2
    assert torch.equal(loaded.vit.cls_token, drawn.vit.cls_token)  # nothing else changes
    with pytest.raises(ConfigError, match=r"model\.backbone\.pos_embed_init"):
        build_backbone(BackboneConfig(name="vit_small_patch16_dinov3", weights=None, img_size=32,
                                      model_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
                                      pos_embed_init="trunc_normal"))


def test_neck_norm_batch_is_a_batchnorm_whose_running_stats_move_in_train_mode_only():
    assert isinstance(SimpleFPN(8).up4[1], LayerNorm2d)
    fpn = SimpleFPN(8, norm="batch")
    bn = fpn.up4[1]
    assert type(bn) is nn.BatchNorm2d and [type(m).__name__ for m in fpn.up4] == [
        "ConvTranspose2d", "BatchNorm2d", "GELU", "ConvTranspose2d"]
    feats = [torch.randn(2, 8, 4, 4) + 3.0 for _ in range(4)]
    with torch.no_grad():
        fpn.eval()(feats)
        assert torch.equal(bn.running_mean, torch.zeros(8)) and int(bn.num_batches_tracked) == 0
        fpn.train()(feats)
        assert not torch.equal(bn.running_mean, torch.zeros(8)) and int(bn.num_batches_tracked) == 1


def test_neck_norm_reaches_the_built_model_and_needs_the_fpn():
    model = dgseg.build_model(tiny_config(model__neck={"name": "fpn", "norm": "batch"}))
    assert type(model.neck.up4[1]) is nn.BatchNorm2d
    with pytest.raises(ConfigError, match=r"model\.neck\.norm: 'batch' applies to the fpn neck only"):
        tiny_config(model__neck={"name": "simple", "norm": "batch"})
    with pytest.raises(ConfigError, match=r"model\.neck\.norm: 'group' is not one of layer, batch"):
        tiny_config(model__neck={"name": "fpn", "norm": "group"})


def _fake_group(monkeypatch, world: int) -> None:
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: world)


def test_sync_batchnorm_converts_under_a_gpu_process_group_keeping_parameters(monkeypatch):
    model = dgseg.build_model(tiny_config(model__neck={"name": "fpn", "norm": "batch"}))
    params = {n: p for n, p in model.named_parameters()}
    keys = list(model.state_dict())
    assert distributed.sync_batchnorm(model, torch.device("cuda", 0)) is model  # no process group: untouched
    assert type(model.neck.up4[1]) is nn.BatchNorm2d
    _fake_group(monkeypatch, 2)
    assert distributed.sync_batchnorm(model, torch.device("cpu")) is model  # SyncBatchNorm needs GPU inputs
    assert type(model.neck.up4[1]) is nn.BatchNorm2d
    assert distributed.sync_batchnorm(model, torch.device("cuda", 0)) is model
    assert type(model.neck.up4[1]) is nn.SyncBatchNorm
    assert all(p is params[n] for n, p in model.named_parameters())  # the optimizer's tensors, same order
    assert list(model.state_dict()) == keys


def test_sync_batchnorm_leaves_a_single_rank_or_a_model_without_batchnorm(monkeypatch):
    plain = dgseg.build_model(tiny_config(model__neck={"name": "fpn"}))
    _fake_group(monkeypatch, 2)
    assert distributed.sync_batchnorm(plain, torch.device("cuda", 0)) is plain
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in plain.modules())
    _fake_group(monkeypatch, 1)
    model = dgseg.build_model(tiny_config(model__neck={"name": "fpn", "norm": "batch"}))
    distributed.sync_batchnorm(model, torch.device("cuda", 0))
    assert type(model.neck.up4[1]) is nn.BatchNorm2d


def test_onnx_export_of_a_batchnorm_fpn_uses_the_running_stats(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from dgseg.engine.inference import ScoresModule, export_onnx

    cfg = tiny_config(model__neck={"name": "fpn", "norm": "batch"})
    model = dgseg.build_model(cfg)
    bn = model.neck.up4[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    path = export_onnx(model, cfg, tmp_path / "m.onnx", (32, 32))
    assert not model.training
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = ScoresModule(model.eval())(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-4)


def test_patch_remainder_drop_reads_a_512_crop_as_36_by_36_patches_of_14_px_as_the_re_implementation():
    """The plain recipe drops the last 8 pixels, as the re-implementation's Conv2d(stride 14) does: its 36 x 36
    position embedding is used as it is (no resampling to 37 x 37, dgseg's padded default, which v1 keeps)."""
    from pathlib import Path

    from dgseg.models.backbones import fit_to_patches

    configs = Path(dgseg.__file__).parent / "configs"
    plain = dgseg.load_config(configs / "vltseg_plain_eva02_clip_l_gta.yaml").model.backbone
    v1 = dgseg.load_config(configs / "vltseg_eva02_clip_l_gta.yaml").model.backbone
    assert (plain.patch_remainder, v1.patch_remainder) == ("drop", "pad")
    backbone = _eva(patch_size=14, img_size=512, patch_remainder="drop")
    assert backbone.vit.pos_embed.shape[1] == 1 + 36 * 36
    fitted, size = fit_to_patches(torch.randn(1, 3, 512, 512), 14, backbone.patch_remainder)
    assert fitted.shape[-2:] == (504, 504) and size == (512, 512)
    with torch.no_grad():
        assert [tuple(m.shape[-2:]) for m in backbone(fitted)] == [(36, 36)] * 4
