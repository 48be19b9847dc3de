"""Rein: the parameter contract of DESIGN.md and the equations / counts of REFERENCE.md section 1."""

from __future__ import annotations

import math

import pytest
import torch

from dgseg.config import AdapterConfig, BackboneConfig
from dgseg.models.adapters import build_adapter
from dgseg.models.adapters.rein import Rein
from dgseg.models.backbones import build_backbone

DINO_KW = {"depth": 2, "embed_dim": 64, "num_heads": 2}
SAM_KW = {"depth": 4, "embed_dim": 64, "num_heads": 2, "global_attn_indexes": [1, 3], "window_size": 2,
          "neck_chans": 16}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


# --- sizes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, count",
    [
        (dict(rank=0, shared=False, link=False), 52_838_401),  # Rein-core
        (dict(rank=0, shared=False, link=True), 59_332_865),  # + link
        (dict(rank=0, shared=True, link=True), 5_016_065),  # + shared MLPs and query_proj
        (dict(rank=16, shared=True, link=True), 2_990_081),  # + low rank: the default Rein
        (dict(rank=16, shared=True, link=False), 2_530_817),  # default Rein without link layers
    ],
)
def test_parameter_counts_on_dinov2_large(kwargs, count):
    rein = Rein(num_layers=24, embed_dim=1024, patch_size=16, tokens=100, query_dim=256, **kwargs)
    assert n_params(rein) == count


def test_defaults_are_the_paper_defaults():
    rein = Rein(24, 1024, 16)
    assert (rein.num_tokens, rein.rank, rein.shared, rein.link, rein.query_dim) == (100, 16, True, True, 256)
    assert n_params(rein) == 2_990_081
    assert rein.scale.item() == pytest.approx(1e-3)


def test_a_config_that_leaves_tokens_and_rank_null_builds_100_tokens_of_rank_16():
    """REFERENCE.md section 1 defaults (m = 100, r = 16) when model.adapter.tokens / rank are not set."""
    backbone = build_backbone(BackboneConfig(weights=None, patch_size=16, img_size=32, model_kwargs=DINO_KW))
    rein = build_adapter(AdapterConfig(name="rein"), backbone)
    assert (rein.num_tokens, rein.rank) == (100, 16)
    assert tuple(rein.tokens_a.shape) == (2, 100, 16)


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.named_parameters()}


def test_parameter_names_and_shapes_low_rank_shared_link():
    rein = Rein(3, 32, 16, tokens=5, rank=4, shared=True, link=True, query_dim=8)
    assert shapes(rein) == {
        "tokens_a": (3, 5, 4),
        "tokens_b": (3, 4, 32),
        "token2feat.weight": (32, 32),
        "token2feat.bias": (32,),
        "delta_f.weight": (32, 32),
        "delta_f.bias": (32,),
        "scale": (),
        "query_proj.weight": (8, 32),
        "query_proj.bias": (8,),
        "query_merge.weight": (8, 24),
        "query_merge.bias": (8,),
    }
    assert isinstance(rein.token2feat, torch.nn.Linear) and isinstance(rein.delta_f, torch.nn.Linear)


def test_parameter_names_and_shapes_full_rank_unshared_link():
    rein = Rein(2, 32, 16, tokens=5, rank=0, shared=False, link=True, query_dim=8)
    want = {"tokens": (2, 5, 32), "scale": (), "query_merge.weight": (8, 24), "query_merge.bias": (8,)}
    for i in range(2):
        want.update({
            f"token2feat.{i}.weight": (32, 32), f"token2feat.{i}.bias": (32,),
            f"delta_f.{i}.weight": (32, 32), f"delta_f.{i}.bias": (32,),
            f"query_proj.{i}.weight": (8, 32), f"query_proj.{i}.bias": (8,),
        })
    assert shapes(rein) == want
    assert all(isinstance(m, torch.nn.ModuleList) for m in (rein.token2feat, rein.delta_f, rein.query_proj))


def test_no_link_has_no_query_layers_and_no_queries():
    rein = Rein(2, 32, 16, tokens=5, rank=4, link=False)
    assert not any(k.startswith(("query_proj", "query_merge")) for k in shapes(rein))
    assert rein.queries() is None


# --- initialisation -------------------------------------------------------------------------------------


def assert_uniform_within(t, v):
    v32 = float(torch.tensor(v, dtype=torch.float32))  # the bound as a float32 can round up past v
    assert t.max().item() <= max(v, v32) and t.min().item() >= -max(v, v32)
    assert t.max().item() == pytest.approx(v, rel=0.01) and t.min().item() == pytest.approx(-v, rel=0.01)
    # the mean of n uniform samples on [-v, v] has standard deviation v / sqrt(3 n): allow 5 of them
    assert t.mean().item() == pytest.approx(0.0, abs=5 * v / math.sqrt(3 * t.numel()))


def test_low_rank_token_init_bounds():
    rein = Rein(24, 1024, 16)
    v = math.sqrt(6 / (3 * 16**2 + math.sqrt(1024 * 16)))
    assert_uniform_within(rein.tokens_a, v)
    assert_uniform_within(rein.tokens_b, v)


def test_low_rank_token_init_bounds_use_the_patch_size_and_rank():
    rein = Rein(4, 64, 14, tokens=500, rank=8)
    v = math.sqrt(6 / (3 * 14**2 + math.sqrt(64 * 8)))
    assert_uniform_within(rein.tokens_a, v)
    assert_uniform_within(rein.tokens_b, v)


@pytest.mark.parametrize("patch, dim", [(16, 1024), (14, 64)])
def test_full_rank_token_init_bounds(patch, dim):
    rein = Rein(4, dim, patch, tokens=500, rank=0, link=False)
    assert_uniform_within(rein.tokens, math.sqrt(6 / (3 * patch**2 + dim)))


def test_scale_init():
    assert Rein(2, 32, 16, scale_init=0.25).scale.item() == pytest.approx(0.25)


@pytest.mark.parametrize("shared", [True, False])
def test_token2feat_and_delta_f_keep_pytorchs_default_linear_init(shared):
    """REFERENCE.md section 1: token2feat and delta_f are Linear(C, C) with bias and PyTorch's default init
    (the official reins.py: kaiming_uniform_(a=sqrt(5)) on the weights), i.e. U(-1/sqrt(C), 1/sqrt(C));
    not zero (the official zero_mlp_delta_f=False)."""
    torch.manual_seed(0)
    rein = Rein(2, 256, 16, tokens=4, rank=4, shared=shared, link=False)
    bound = 1 / math.sqrt(256)
    for module in (rein.token2feat, rein.delta_f):
        for linear in module if shared is False else [module]:
            assert_uniform_within(linear.weight.detach(), bound)
            bias = linear.bias.detach()
            assert bias.abs().max() <= bound and bias.abs().max() > 0.9 * bound


# --- forward --------------------------------------------------------------------------------------------


def small_rein(rank=4, shared=True, scale=0.7, layers=3, dim=32):
    torch.manual_seed(0)
    rein = Rein(layers, dim, 16, tokens=6, rank=rank, shared=shared, link=True, query_dim=8).double()
    with torch.no_grad():
        rein.scale.fill_(scale)
    return rein


def pick(module, i):
    return module[i] if isinstance(module, torch.nn.ModuleList) else module


def reference_forward(rein, x, i, num_prefix):
    """REFERENCE.md section 1, written out."""
    prefix, f = x[:, :num_prefix], x[:, num_prefix:]
    T = rein.tokens_a[i] @ rein.tokens_b[i] if rein.rank > 0 else rein.tokens[i]  # m x C
    C = T.shape[-1]
    S = torch.softmax(f @ T.T * C**-0.5, dim=-1)  # B x N x m, softmax over the m tokens
    t2f, df = pick(rein.token2feat, i), pick(rein.delta_f, i)
    D = S[:, :, 1:] @ (T[1:] @ t2f.weight.T + t2f.bias)  # token 0 dropped after the softmax
    D = (D + f) @ df.weight.T + df.bias  # the residual sits inside delta_f
    return torch.cat([prefix, f + rein.scale * D], dim=1)


@pytest.mark.parametrize("rank, shared", [(4, True), (0, True), (4, False), (0, False)])
@pytest.mark.parametrize("num_prefix", [1, 5, 0])
def test_forward_equals_the_reference_equations(rank, shared, num_prefix):
    rein = small_rein(rank=rank, shared=shared)
    x = torch.randn(2, num_prefix + 12, 32, dtype=torch.float64)
    for layer in range(3):
        got = rein(x, layer, num_prefix_tokens=num_prefix)
        torch.testing.assert_close(got, reference_forward(rein, x, layer, num_prefix), rtol=1e-10, atol=1e-12)


def test_layers_use_their_own_tokens():
    rein = small_rein()
    x = torch.randn(1, 13, 32, dtype=torch.float64)
    assert not torch.allclose(rein(x, 0), rein(x, 1))


def test_output_equals_input_when_scale_is_zero():
    rein = small_rein(scale=0.0)
    x = torch.randn(2, 13, 32, dtype=torch.float64)
    assert torch.equal(rein(x, 1, num_prefix_tokens=1), x)


def test_prefix_tokens_pass_through_unchanged():
    rein = small_rein(scale=1.0)
    x = torch.randn(2, 5 + 12, 32, dtype=torch.float64)
    y = rein(x, 2, num_prefix_tokens=5)
    assert y.shape == x.shape
    assert torch.equal(y[:, :5], x[:, :5])
    assert (y[:, 5:] - x[:, 5:]).abs().min() > 0  # every patch token is refined


def test_token_zero_is_a_sink():
    # token 0 only takes part in the softmax normaliser; token2feat(T_0) is never added to the features
    rein = small_rein(rank=0)
    u = torch.ones(32, dtype=torch.float64)
    x = u + 0.1 * torch.randn(1, 13, 32, dtype=torch.float64)  # every token close to u
    with torch.no_grad():
        rein.tokens[0, 0] = 100 * u  # all attention goes to token 0: the attended sum vanishes
    f = x[:, 1:]
    df = rein.delta_f
    torch.testing.assert_close(rein(x, 0)[:, 1:], f + rein.scale * (f @ df.weight.T + df.bias), rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        rein.tokens[0, 0] = -100 * u  # no attention to token 0: same as a softmax over tokens 1..m-1
    T = rein.tokens[0, 1:]
    S = torch.softmax(f @ T.T * 32**-0.5, dim=-1)
    D = S @ rein.token2feat(T)
    torch.testing.assert_close(rein(x, 0)[:, 1:], f + rein.scale * df(D + f), rtol=1e-9, atol=1e-9)


# --- link queries ---------------------------------------------------------------------------------------


def reference_queries(rein):
    """Q_i = query_proj(T_i); max / mean / last over the layers, interleaved per channel, then query_merge."""
    L = rein.num_layers
    T = [rein.tokens_a[i] @ rein.tokens_b[i] if rein.rank > 0 else rein.tokens[i] for i in range(L)]
    Q = torch.stack([T[i] @ pick(rein.query_proj, i).weight.T + pick(rein.query_proj, i).bias for i in range(L)])
    m, d = Q.shape[1:]
    merged = torch.empty(m, 3 * d, dtype=Q.dtype)
    merged[:, 0::3] = Q.max(dim=0).values  # c0-max, c0-mean, c0-last, c1-max, ...
    merged[:, 1::3] = Q.mean(dim=0)
    merged[:, 2::3] = Q[-1]
    return merged @ rein.query_merge.weight.T + rein.query_merge.bias


@pytest.mark.parametrize("rank, shared", [(4, True), (0, True), (4, False), (0, False)])
def test_queries_are_the_interleaved_max_mean_last_merge(rank, shared):
    rein = small_rein(rank=rank, shared=shared)
    q = rein.queries()
    assert q.shape == (6, 8)  # [m, query_dim]: token 0 makes a query too
    torch.testing.assert_close(q, reference_queries(rein), rtol=1e-10, atol=1e-12)


# --- inside a frozen ViT --------------------------------------------------------------------------------


def tiny_backbone(**kw):
    cfg = dict(name="vit_small_patch14_dinov2", weights=None, patch_size=None, img_size=56, model_kwargs=DINO_KW)
    cfg.update(kw)
    backbone = build_backbone(BackboneConfig(**cfg))
    backbone.requires_grad_(False)  # the Segmentor does this; here the test freezes it itself
    return backbone.eval()


def test_gradients_reach_rein_and_nothing_in_the_frozen_backbone():
    torch.manual_seed(0)
    backbone = tiny_backbone()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        plain = backbone(x)
    rein = build_adapter(AdapterConfig(name="rein", tokens=8, rank=4, query_dim=16), backbone)
    assert isinstance(rein, Rein) and rein.layers == [0, 1]
    maps = backbone(x)
    assert not torch.allclose(maps[-1], plain[-1])  # Rein is in the path
    loss = sum((m**2).mean() for m in maps) + rein.queries().square().mean()
    loss.backward()
    for name, p in rein.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    assert not any(p is q for p in rein.parameters() for q in backbone.parameters())


def test_backbone_maps_are_the_rein_refined_block_outputs():
    backbone = tiny_backbone(name="vit_small_patch14_reg4_dinov2", out_indices=[0, 0, 0, 0])
    seen = []  # registered before Rein's hook, so it sees block 0's raw output
    backbone.vit.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(out))
    rein = build_adapter(AdapterConfig(name="rein", tokens=8, rank=4), backbone)
    with torch.no_grad():
        rein.scale.fill_(0.5)
        got = backbone(torch.randn(1, 3, 56, 56))[0]
        raw = seen[0]
        assert raw.shape[1] == 5 + 16  # cls + 4 registers + 4x4 patches
        want = rein(raw, 0, num_prefix_tokens=5)[:, 5:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_sam_rein_only_after_global_attention_blocks():
    backbone = tiny_backbone(name="samvit_base_patch16", patch_size=16, img_size=64, model_kwargs=SAM_KW)
    globals_ = [i for i, b in enumerate(backbone.vit.blocks) if b.window_size == 0]
    assert globals_ == [1, 3]
    rein = build_adapter(AdapterConfig(name="rein", tokens=8, rank=4), backbone)
    assert rein.layers == globals_
    assert rein.num_layers == 2 and rein.tokens_a.shape[0] == 2
    called = []
    original = rein.after_block

    def spy(x, layer, num_prefix):
        called.append((layer, tuple(x.shape), num_prefix))
        return original(x, layer, num_prefix)

    rein.after_block = spy
    maps = backbone(torch.randn(2, 3, 64, 64))
    assert called == [(1, (2, 16, 64), 0), (3, (2, 16, 64), 0)]  # tokens B x HW x C, no prefix
    maps[-1].sum().backward()
    assert rein.tokens_a.grad is not None and rein.tokens_a.grad.abs().sum() > 0
