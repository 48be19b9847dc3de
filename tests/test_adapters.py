"""PEFT baselines (LoRA, AdaptFormer, VPT) and the full / frozen modes, inserted into timm ViTs."""

from __future__ import annotations

import pytest
import torch

from dgseg.config import AdapterConfig, BackboneConfig
from dgseg.models.adapters import VPT, AdaptFormer, Frozen, FullFineTune, LoRA, build_adapter
from dgseg.models.backbones import build_backbone

DINO_KW = {"depth": 2, "embed_dim": 64, "num_heads": 2}
SAM_KW = {"depth": 4, "embed_dim": 64, "num_heads": 2, "global_attn_indexes": [1, 3], "window_size": 2,
          "neck_chans": 16}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def tiny(name="vit_small_patch14_dinov2", **kw):
    torch.manual_seed(0)
    cfg = dict(name=name, weights=None, patch_size=None, img_size=56, model_kwargs=DINO_KW)
    cfg.update(kw)
    backbone = build_backbone(BackboneConfig(**cfg))
    backbone.requires_grad_(False)  # the Segmentor freezes it; here the test does
    return backbone.eval()


def tiny_eva():
    return tiny("eva02_tiny_patch14_224")


def tiny_sam():
    return tiny("samvit_base_patch16", patch_size=16, img_size=64, model_kwargs=SAM_KW)


# --- sizes on DINOv2-L (REFERENCE.md section 1, PEFT table) ----------------------------------------------


@pytest.fixture(scope="module")
def dinov2_large():
    """The ViT-L/14 architecture on the meta device: real module tree, no memory, no 300M-weight init."""
    with torch.device("meta"):
        return build_backbone(BackboneConfig(name="vit_large_patch14_dinov2", weights=None, patch_size=None,
                                             img_size=28))


@pytest.mark.parametrize(
    "name, cls, count", [("lora", LoRA, 786_432), ("adaptformer", AdaptFormer, 3_171_840), ("vpt", VPT, 3_686_400)]
)
def test_parameter_counts_on_dinov2_large(dinov2_large, name, cls, count):
    assert (dinov2_large.depth, dinov2_large.embed_dim) == (24, 1024)
    adapter = build_adapter(AdapterConfig(name=name), dinov2_large)  # rank 8 / width 64 / 150 prompts
    assert isinstance(adapter, cls)
    assert n_params(adapter) == count
    assert not adapter.trains_backbone


def test_the_adapter_classes_default_to_the_paper_settings():
    """REFERENCE.md section 1, PEFT baselines: LoRA rank 8 (scale alpha / r = 1), AdaptFormer width 64 and
    scale 0.1, VPT-deep 150 prompts per block, used when the classes are built directly."""
    lora = LoRA(2, 64)
    assert lora.rank == 8 and tuple(lora.q[0].a.shape) == (8, 64) and lora.q[0].scale == 1.0
    adaptformer = AdaptFormer(2, 64)
    assert adaptformer.scale == 0.1 and adaptformer.mlps[0].down.out_features == 64
    assert VPT(2, 64, 16).num_tokens == 150


def test_lora_a_and_adaptformer_down_start_kaiming_uniform_and_their_up_projections_at_zero():
    """LoRA (peft / loralib): A kaiming_uniform_(a=sqrt(5)), B zeros; AdaptFormer (its adapter.py, init
    option "lora"): down kaiming_uniform_(a=sqrt(5)) with zero bias, up zeros. kaiming_uniform_(a=sqrt(5))
    on a fan-in of C is U(-1/sqrt(C), 1/sqrt(C))."""
    torch.manual_seed(0)
    lora = LoRA(1, 256, rank=8)
    adaptformer = AdaptFormer(1, 256, width=64)
    bound = 1 / 256 ** 0.5
    down = adaptformer.mlps[0].down
    for weight in (lora.q[0].a, lora.v[0].a, down.weight):
        w = weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    for zero in (lora.q[0].b, lora.v[0].b, down.bias, adaptformer.mlps[0].up.weight, adaptformer.mlps[0].up.bias):
        assert not zero.detach().any()


def test_full_and_frozen_have_no_parameters_of_their_own():
    backbone = tiny()
    full = build_adapter(AdapterConfig(name="full", lr_mult=0.1), backbone)
    assert isinstance(full, FullFineTune) and full.trains_backbone and full.lr_mult == 0.1 and n_params(full) == 0
    frozen = build_adapter(AdapterConfig(name="frozen"), tiny())
    assert isinstance(frozen, Frozen) and not frozen.trains_backbone and not frozen.backbone_grad
    assert n_params(frozen) == 0


# --- behaviour at init and gradients on tiny models -----------------------------------------------------


@pytest.mark.parametrize("make", [tiny, tiny_eva, tiny_sam], ids=["dinov2", "eva02", "sam"])
@pytest.mark.parametrize("name", ["lora", "adaptformer"])
def test_lora_and_adaptformer_leave_the_output_unchanged_at_init(make, name):
    backbone = make()
    size = 64 if backbone.patch_size == 16 else 56
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        before = backbone(x)
        build_adapter(AdapterConfig(name=name), backbone)
        after = backbone(x)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)  # LoRA B = 0, AdaptFormer up = 0: exactly the pretrained function


def test_vpt_changes_the_output_but_not_its_shape():
    backbone = tiny()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        before = backbone(x)
        build_adapter(AdapterConfig(name="vpt", tokens=3), backbone)
        after = backbone(x)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert not torch.allclose(after[-1], before[-1])


@pytest.mark.parametrize(
    "make, name",
    [(make, name) for make in (tiny, tiny_eva, tiny_sam) for name in ("lora", "adaptformer")] + [(tiny, "vpt")],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_gradients_reach_only_the_adapter(make, name):
    backbone = make()
    adapter = build_adapter(AdapterConfig(name=name, tokens=3), backbone)
    size = 64 if backbone.patch_size == 16 else 56
    maps = backbone(torch.randn(2, 3, size, size))
    sum((m**2).mean() for m in maps).backward()
    grads = {k: p.grad for k, p in adapter.named_parameters()}
    assert all(g is not None for g in grads.values()), [k for k, g in grads.items() if g is None]
    # the parameters that start at zero (LoRA b, AdaptFormer up) are the ones that get a gradient first
    live = {"lora": ".b", "adaptformer": ".up.weight", "vpt": "prompts"}[name]
    assert all(g.abs().sum() > 0 for k, g in grads.items() if k.endswith(live))
    for k, p in backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, k


# --- each method's function -----------------------------------------------------------------------------


def test_lora_adds_scaled_low_rank_updates_to_q_and_v_only():
    backbone = tiny()
    lora = build_adapter(AdapterConfig(name="lora", rank=4), backbone)
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_()
    qkv = backbone.vit.blocks[1].attn.qkv
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        got = qkv(x)
        plain = x @ qkv.weight.T + qkv.bias
        q, v = lora.q[1], lora.v[1]
        assert q.scale == 1.0  # alpha = rank
        torch.testing.assert_close(got[..., :64], plain[..., :64] + x @ q.a.T @ q.b.T, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[..., 64:128], plain[..., 64:128], rtol=0, atol=0)  # k untouched
        torch.testing.assert_close(got[..., 128:], plain[..., 128:] + x @ v.a.T @ v.b.T, rtol=1e-5, atol=1e-5)


def test_lora_reaches_eva_attention_with_separate_q_v_biases():
    # EVA02's fused qkv adds q/v biases through F.linear(x, qkv.weight, ...), which skips qkv's hooks
    backbone = tiny_eva()
    attn = backbone.vit.blocks[0].attn
    assert attn.q_bias is not None
    lora = build_adapter(AdapterConfig(name="lora"), backbone)
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        before = backbone(x)
        for p in lora.parameters():
            p.normal_()
        after = backbone(x)
    assert not torch.allclose(before[-1], after[-1])


def test_adaptformer_is_a_scaled_bottleneck_parallel_to_the_mlp():
    backbone = tiny()
    adapter = build_adapter(AdapterConfig(name="adaptformer", width=8, scale=0.1), backbone)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    blk, mlp = backbone.vit.blocks[0], adapter.mlps[0]
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        mid = x + blk.ls1(blk.attn(blk.norm1(x)))
        want = mid + blk.ls2(blk.mlp(blk.norm2(mid))) + 0.1 * mlp.up(torch.relu(mlp.down(mid)))
        torch.testing.assert_close(blk(x), want, rtol=1e-5, atol=1e-5)


def test_vpt_inserts_prompts_after_the_prefix_tokens_and_removes_them_after_the_block():
    backbone = tiny("vit_small_patch14_reg4_dinov2")
    vpt = build_adapter(AdapterConfig(name="vpt", tokens=3), backbone)
    seen = []
    backbone.vit.blocks[1].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        maps = backbone(x)
    tokens = seen[0]  # block 1's input, after VPT's pre-hook (registered earlier, runs first)
    assert tokens.shape == (1, 5 + 3 + 16, 64)  # cls + 4 registers, 3 prompts, 4x4 patches
    torch.testing.assert_close(tokens[0, 5:8], vpt.prompts[1], rtol=0, atol=0)
    assert [tuple(m.shape) for m in maps] == [(1, 64, 4, 4)] * 4


def test_vpt_on_an_eva_model_is_a_clear_error():
    backbone = tiny_eva()
    with pytest.raises(ValueError, match=r"VPT .*eva02_tiny_patch14_224.* Eva"):
        build_adapter(AdapterConfig(name="vpt"), backbone)


def test_unknown_adapter_name():
    with pytest.raises(ValueError, match="unknown adapter 'prompt'"):
        build_adapter(AdapterConfig(name="prompt"), tiny())
