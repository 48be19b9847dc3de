"""VLTSeg's text guidance as DenseCLIP defines it: the score map from the CLIP encoder's own visual
projection, the context decoder, the text tower's activation by family, the context initialisation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tiny import tiny_config

import dgseg
from dgseg.models.text import CLIPTextTower, ContextDecoder, TextGuidance
from dgseg.models.weights_io import WeightsError

pytest.importorskip("open_clip")

CONFIG_DIR = Path(dgseg.__file__).parent / "configs"

CLIP_KWARGS = {"depth": 2, "embed_dim": 32, "num_heads": 2, "num_classes": 24}
CLIP_BACKBONE = {"name": "eva02_large_patch14_clip_224", "weights": None, "patch_size": 16, "img_size": 64,
                 "model_kwargs": CLIP_KWARGS}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def eva_clip_file(tmp_path_factory):
    """A whole tiny EVA-CLIP checkpoint in EVA-CLIP's own layout: ``visual.*`` (with ``norm`` and the
    visual projection ``head``) and the text tower under ``text.*``."""
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("eva02_large_patch14_clip_224", pretrained=False, img_size=64, patch_size=16,
                            **CLIP_KWARGS)
    tower = CLIPTextTower(vocab_size=49408, width=32, layers=1, heads=1, context_length=77, embed_dim=24,
                          quick_gelu=False)
    state = {f"visual.{k}": v for k, v in vit.state_dict().items() if "rope" not in k}
    state.update({f"text.{k}": v for k, v in tower.state_dict().items()})
    path = tmp_path_factory.mktemp("evaclip") / "eva_clip.safetensors"
    save_file(state, str(path))
    return path, state


def clip_model(path, **text):
    cfg = tiny_config(model__backbone={**CLIP_BACKBONE, "weights": str(path)},
                      model__adapter={"name": "full", "link": False}, model__neck={"name": "fpn"},
                      model__text={"name": "clip", "weights": str(path), **text},
                      data__crop_size=[64, 64], data__scale=[192, 64])
    return dgseg.build_model(cfg)


# ---------------------------------------------------------------- 1. the CLIP projection
def test_visual_projection_and_final_norm_are_loaded_from_the_weights_file(eva_clip_file):
    path, state = eva_clip_file
    vit = clip_model(path).backbone.vit
    for key in ("head.weight", "head.bias", "norm.weight", "norm.bias"):
        assert torch.equal(vit.state_dict()[key], state[f"visual.{key}"]), key


def test_a_file_without_the_visual_projection_is_refused(eva_clip_file, tmp_path):
    _, state = eva_clip_file
    path = tmp_path / "no_head.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("visual.head.")}, str(path))
    with pytest.raises(WeightsError, match="head.weight"):
        clip_model(path)


def test_score_map_is_clip_alignment_of_the_last_block_tokens(eva_clip_file):
    path, _ = eva_clip_file
    model = clip_model(path, context_decoder=False)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        maps, (glob, dense) = model.backbone(x, embeddings=True)
        _, aux = model.text(model.neck(maps), (glob, dense))
        vit = model.backbone.vit
        tokens = vit.forward_features(x)  # all blocks, then the final norm
        z = vit.head(tokens)  # the visual projection of every token
        t = model.text.text_embeddings()
    torch.testing.assert_close(glob, vit.forward_head(tokens))  # CLIP's own image embedding
    zd = F.normalize(z[:, 1:], dim=-1).reshape(2, 4, 6, 24)
    expected = torch.einsum("bhwd,kd->bkhw", zd, F.normalize(t, dim=-1))
    torch.testing.assert_close(aux["score_map"], expected, atol=1e-5, rtol=1e-5)


def test_the_projection_trains_with_the_backbone_at_its_lr_multiplier(eva_clip_file):
    from dgseg.config import TrainConfig
    from dgseg.engine.optim import param_groups

    path, _ = eva_clip_file
    model = clip_model(path)
    head = model.backbone.vit.head.weight
    assert head.requires_grad
    lrs = {id(p): g["lr"] for g in param_groups(model, TrainConfig(lr=1e-4), backbone_lr_mult=0.1) for p in g["params"]}
    assert math.isclose(lrs[id(head)], 1e-5)
    assert "backbone.vit.head.weight" in model.trainable_state_dict()


def test_text_and_visual_widths_must_agree(eva_clip_file):
    path, _ = eva_clip_file
    cfg = tiny_config(model__backbone={**CLIP_BACKBONE, "model_kwargs": {**CLIP_KWARGS, "num_classes": 16}},
                      model__adapter={"name": "full", "link": False},
                      model__text={"name": "clip", "weights": str(path)})
    with pytest.raises(ValueError, match="24-d but the visual projection .* gives 16-d"):
        dgseg.build_model(cfg)


# ---------------------------------------------------------------- 2. the context decoder
def _reference_decoder(dec: ContextDecoder, text, visual):
    """DenseCLIP's ContextDecoder forward (``segmentation/denseclip/models.py``), attention by einsum."""
    def attention(a, q, k, v):
        b, n, c = q.shape
        h = a.heads
        q = a.q_proj(q).reshape(b, n, h, c // h)
        k = a.k_proj(k).reshape(b, k.shape[1], h, c // h)
        v = a.v_proj(v).reshape(b, v.shape[1], h, c // h)
        attn = (torch.einsum("bnkc,bmkc->bknm", q, k) * (c // h) ** -0.5).softmax(dim=-1)
        return a.proj(torch.einsum("bknm,bmkc->bnkc", attn, v).reshape(b, n, c))

    mem = dec.memory_proj(visual)
    x = dec.text_proj(text)
    for layer in dec.decoder:
        q = layer.norm1(x)
        x = x + attention(layer.self_attn, q, q, q)
        x = x + attention(layer.cross_attn, layer.norm2(x), mem, mem)
        x = x + layer.mlp(layer.norm3(x))
    return dec.out_proj(x)


def test_context_decoder_has_denseclips_size_for_vit_l():
    dec = ContextDecoder(768, width=256, heads=4, layers=3, dropout=0.1)
    assert _count(dec) == 3_750_912
    guidance = TextGuidance(19, 768, None, None, torch.randn(19, 768), decoder=dec)
    assert guidance.gamma.shape == (768,) and torch.all(guidance.gamma == 1e-4)
    assert _count(guidance) == 3_751_680
    assert len(dec.decoder) == 3 and dec.decoder[0].self_attn.heads == 4
    assert dec.decoder[0].self_attn.q_proj.bias is None and dec.decoder[0].self_attn.proj.bias is not None
    assert dec.decoder[0].dropout.p == 0.1 and dec.decoder[0].self_attn.proj_drop.p == 0.1


def test_context_decoder_computes_denseclips_forward():
    torch.manual_seed(0)
    dec = ContextDecoder(48, width=32, heads=4, layers=2).eval()
    text, visual = torch.randn(2, 5, 48), torch.randn(2, 1 + 12, 48)
    out = dec(text, visual)
    assert out.shape == (2, 5, 48)
    torch.testing.assert_close(out, _reference_decoder(dec, text, visual), atol=1e-6, rtol=1e-5)


def test_context_decoder_init_is_trunc_normal_002_and_zero_bias():
    torch.manual_seed(0)
    dec = ContextDecoder(768)
    w = dec.memory_proj[1].weight  # trunc_normal_(std=.02) cut at +-2 (absolute, as timm's): a plain N(0, 0.02)
    w = w.detach()
    assert abs(float(w.std()) - 0.02) < 0.0005 and abs(float(w.mean())) < 0.0005
    assert torch.all(dec.memory_proj[1].bias == 0) and torch.all(dec.out_proj[0].weight == 1)


def _tiny_vltseg(text_file, **text):
    cfg = tiny_config(model__backbone=dict(CLIP_BACKBONE), model__adapter={"name": "full", "link": False},
                      model__neck={"name": "fpn"}, model__text={"name": "clip", "weights": str(text_file), **text},
                      data__crop_size=[64, 64], data__scale=[192, 64])
    return dgseg.build_model(cfg)


def test_context_decoder_is_on_by_default_and_can_be_turned_off(eva_clip_file):
    path, _ = eva_clip_file
    assert isinstance(_tiny_vltseg(path).text.decoder, ContextDecoder)
    off = _tiny_vltseg(path, context_decoder=False)
    assert off.text.decoder is None and off.text.gamma is None
    assert off.parameter_counts()["context_decoder"] == 0
    layers = _tiny_vltseg(path, decoder_layers=1, decoder_width=16, decoder_heads=2).text.decoder
    assert len(layers.decoder) == 1 and layers.text_proj[1].out_features == 16


def test_gamma_zero_gives_the_score_map_of_the_path_without_decoder(eva_clip_file):
    path, _ = eva_clip_file
    model = _tiny_vltseg(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.text.gamma.zero_()
        maps, visual = model.backbone(x, embeddings=True)
        feats = model.neck(maps)
        with_decoder = model.text(feats, visual)[1]["score_map"]
        model.text.decoder = None
        without = model.text(feats, visual)[1]["score_map"]
    assert torch.equal(with_decoder, without)


def test_one_backward_reaches_gamma_and_every_decoder_weight(eva_clip_file):
    path, _ = eva_clip_file
    torch.manual_seed(0)
    model = _tiny_vltseg(path)
    model.train()
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[:, 32:] = 10
    losses = model.loss(torch.randn(2, 3, 64, 64), y)
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert model.text.gamma.grad is not None and model.text.gamma.grad.abs().sum() > 0
    for name, p in model.text.decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- 3. the text tower's activation
def _reference_eos(state: dict, x: torch.Tensor, eos: torch.Tensor, act) -> torch.Tensor:
    """A CLIP text transformer written out: pre-norm causal attention + MLP blocks, ln_final, EOS @ proj."""
    width = state["ln_final.weight"].shape[0]
    heads = width // 64
    t = x.shape[1]
    x = x + state["positional_embedding"][:t]
    mask = torch.full((t, t), float("-inf"), dtype=x.dtype).triu(1)
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        y = F.layer_norm(x, (width,), state[p + "ln_1.weight"], state[p + "ln_1.bias"])
        q, k, v = (y @ state[p + "attn.in_proj_weight"].T + state[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (z.reshape(z.shape[0], t, heads, -1).transpose(1, 2) for z in (q, k, v))
        a = ((q @ k.transpose(-1, -2)) / math.sqrt(width // heads) + mask).softmax(-1) @ v
        a = a.transpose(1, 2).reshape(x.shape)
        x = x + a @ state[p + "attn.out_proj.weight"].T + state[p + "attn.out_proj.bias"]
        y = F.layer_norm(x, (width,), state[p + "ln_2.weight"], state[p + "ln_2.bias"])
        h = act(y @ state[p + "mlp.c_fc.weight"].T + state[p + "mlp.c_fc.bias"])
        x = x + h @ state[p + "mlp.c_proj.weight"].T + state[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (width,), state["ln_final.weight"], state["ln_final.bias"])
    return x[torch.arange(x.shape[0]), eos] @ state["text_projection"]


def _random_tower_state(width: int = 128) -> dict:
    """float64, so that 1e-6 measures the function, not float32 rounding."""
    torch.manual_seed(1)
    tower = CLIPTextTower(vocab_size=100, width=width, layers=2, heads=width // 64, context_length=12, embed_dim=16)
    return {k: (v.normal_(std=0.5) if k.endswith(("c_fc.weight", "c_fc.bias")) else v).double()
            for k, v in tower.state_dict().items()}  # wide pre-activations: GELU and QuickGELU differ clearly


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def test_eva_clip_layout_text_tower_uses_exact_gelu():
    state = _random_tower_state()
    tower = CLIPTextTower.from_state_dict({f"text.{k}": v for k, v in state.items()}, "eva.pt").double()
    assert tower.activation == "gelu"
    x, eos = torch.randn(3, 7, 128, dtype=torch.float64), torch.tensor([6, 4, 2])
    with torch.no_grad():
        got = tower.encode_embeddings(x, eos)
    torch.testing.assert_close(got, _reference_eos(state, x, eos, F.gelu), atol=1e-6, rtol=0)
    assert (got - _reference_eos(state, x, eos, quick_gelu)).abs().max() > 1e-3


def test_openai_release_text_tower_uses_quick_gelu():
    state = _random_tower_state()
    tower = CLIPTextTower.from_state_dict({**state, "input_resolution": torch.tensor(224)}, "ViT-L-14.pt").double()
    assert tower.activation == "quick_gelu"
    x, eos = torch.randn(2, 5, 128, dtype=torch.float64), torch.tensor([4, 3])
    with torch.no_grad():
        got = tower.encode_embeddings(x, eos)
    torch.testing.assert_close(got, _reference_eos(state, x, eos, quick_gelu), atol=1e-6, rtol=0)


def test_an_ambiguous_text_tower_asks_for_the_activation_and_the_key_overrides():
    state = _random_tower_state()
    with pytest.raises(WeightsError, match="model.text.activation"):
        CLIPTextTower.from_state_dict(state, "open_clip_model.bin")
    assert CLIPTextTower.from_state_dict(state, "x", activation="gelu").activation == "gelu"
    eva = {f"text.{k}": v for k, v in state.items()}
    assert CLIPTextTower.from_state_dict(eva, "x", activation="quick_gelu").activation == "quick_gelu"


def test_the_arch_key_builds_open_clips_tower_shape_with_its_activation():
    with torch.device("meta"):  # shapes only
        tower = CLIPTextTower.from_arch("EVA02-L-14")
    assert (tower.width, len(tower.transformer.resblocks), tower.embed_dim, tower.activation) == (768, 12, 768, "gelu")
    assert tower.transformer.resblocks[0].attn.num_heads == 12
    with pytest.raises(ValueError, match="model.text.arch"):
        CLIPTextTower.from_arch("EVA02-L-41")


# ---------------------------------------------------------------- 4. the context initialisation
def test_context_starts_as_denseclips_trunc_normal_and_coop_is_a_key_away():
    from dgseg.models.text_tower import PromptLearner

    tower = CLIPTextTower(vocab_size=49408, width=512, layers=1, heads=8, context_length=77, embed_dim=16)
    torch.manual_seed(3)
    ctx = PromptLearner(tower, ["road", "sky"], n_ctx=8).context.detach()
    torch.manual_seed(3)
    reference = torch.randn(1, 8, 512)  # DenseCLIP: nn.Parameter(torch.randn(1, n, C)); trunc_normal_(it)
    torch.nn.init.trunc_normal_(reference)
    assert torch.equal(ctx, reference[0])
    assert ctx.abs().max() <= 2.0 and 0.8 < float(ctx.std()) < 0.95  # std 1 cut at +-2: 0.88
    coop = PromptLearner(tower, ["road"], n_ctx=8, context_init="coop").context.detach()
    assert abs(float(coop.std()) - 0.02) < 0.003


# ---------------------------------------------------------------- the done criterion
def test_info_counts_the_context_decoder_of_the_shipped_vltseg_config(capsys):
    from dgseg.cli import main

    assert main(["info", str(CONFIG_DIR / "vltseg_eva02_clip_l_gta.yaml"), "--set", "model.backbone.weights=null",
                 "--set", "model.text.weights=null", "--json"]) == 0
    params = json.loads(capsys.readouterr().out)["params"]
    assert params["context_decoder"] == 3_751_680
    assert params["text"] == 3_751_680 + 8 * 768  # + the learnable context


def test_openai_clip_vit_gives_its_image_embedding_as_the_global_embedding():
    from dgseg.config import BackboneConfig
    from dgseg.models.backbones import build_backbone

    cfg = BackboneConfig(name="vit_large_patch14_clip_224.openai", patch_size=16, img_size=64,
                         model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2})
    with pytest.raises(ValueError, match="no visual projection"):
        build_backbone(BackboneConfig(name="vit_small_patch14_dinov2", img_size=64), projection=True)
    backbone = build_backbone(cfg, projection=True)  # projection width from timm's pretrained config: 768
    assert backbone.embed_out == 768
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        _, (glob, dense) = backbone(x, embeddings=True)
        vit = backbone.vit
        torch.testing.assert_close(glob, vit.forward_head(vit.forward_features(x)))  # ln_post, then proj
    assert dense.shape == (1, 768, 4, 3)


def test_the_auxiliary_text_loss_is_0_4_times_cross_entropy_on_the_score_map_over_0_07():
    """REFERENCE.md section 3 (DenseCLIP's identity head): the score map s, divided by the temperature 0.07 and
    resized bilinearly to the labels, gets a cross-entropy (ignore 255) weighted 0.4 (TextConfig's defaults,
    which vltseg_eva02_clip_l_gta.yaml also sets)."""
    from dgseg.config.schema import TextConfig

    text = TextConfig()
    guidance = TextGuidance(3, 4, None, None, torch.randn(3, 4), temperature=text.temperature,
                            aux_weight=text.aux_weight)
    torch.manual_seed(0)
    score = torch.rand(2, 3, 4, 5) * 2 - 1  # cosine similarities
    labels = torch.randint(0, 3, (2, 8, 10))
    labels[:, 0] = 255
    logits = F.interpolate(score / 0.07, size=(8, 10), mode="bilinear", align_corners=False)
    expected = 0.4 * F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(guidance.loss({"score_map": score}, labels)["loss_text"], expected)


@pytest.mark.parametrize("learnable", [True, False])
def test_a_class_name_too_long_for_the_prompt_is_named(learnable):
    from dgseg.models.text_tower import PromptLearner

    tower = CLIPTextTower(vocab_size=49408, width=32, layers=1, heads=1, context_length=20, embed_dim=16)
    long_name = "very " * 12 + "long road"
    with pytest.raises(ValueError, match=r"class 1 'very very .*long road': its prompt \(SOS, .*\) is \d+ CLIP tokens, over .* context length 20"):
        PromptLearner(tower, ["sky", long_name, "car"], n_ctx=8, learnable=learnable)
    PromptLearner(tower, ["sky", "very long road", "car"], n_ctx=8, learnable=learnable)  # 1 + 8 + 3 + 1 fits
