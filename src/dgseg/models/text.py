"""CLIP text guidance of VLTSeg v1 (DenseCLIP-style): class-name prompts with learnable context.

Prompts are ``[SOS, ctx_1 .. ctx_n, <class name tokens>, EOS]``; the context vectors are shared by all
classes (CoOp). A frozen CLIP text transformer encodes them; the EOS feature after the text projection
is the class embedding ``t_k``. Visual features ``z`` of the stride-16 map are projected to the text
width; the score map ``s = <z / |z|, t / |t|>`` [B, K, H/16, W/16] is trained with an auxiliary
cross-entropy on ``s / temperature`` and is concatenated to the stride-16 features fed to the head.

Class embeddings of a frozen tower without learnable context are computed once; they can be written
to a file (:func:`save_class_embeddings`) so that training and inference need no text tower at all.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgseg.config import TextConfig
from dgseg.models.weights_io import WeightsError, read_state_dict

SOS, EOS = 49406, 49407


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, quick_gelu: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, quick_gelu) for _ in range(layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for blk in self.resblocks:
            x = blk(x, mask)
        return x


class CLIPTextTower(nn.Module):
    """The CLIP text transformer with OpenAI / open_clip parameter names (``token_embedding``,
    ``positional_embedding``, ``transformer.resblocks.*``, ``ln_final``, ``text_projection``)."""

    def __init__(self, vocab_size: int = 49408, width: int = 512, layers: int = 12, heads: int = 8,
                 context_length: int = 77, embed_dim: int = 512, quick_gelu: bool = True) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width).normal_(std=0.01))
        self.transformer = Transformer(width, layers, heads, quick_gelu)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim).normal_(std=width**-0.5))
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    @property
    def width(self) -> int:
        return self.token_embedding.embedding_dim

    def encode_embeddings(self, x: Tensor, eos_index: Tensor) -> Tensor:
        """Token embeddings [K, T, W] (T <= context_length) -> projected EOS features [K, D]."""
        t = x.shape[1]
        x = x + self.positional_embedding[:t]
        x = self.transformer(x, self.attn_mask[:t, :t].to(x.dtype))
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), eos_index] @ self.text_projection

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], source: str = "state dict") -> CLIPTextTower:
        """Infer the sizes from a CLIP checkpoint (whole CLIP or text tower; ``text.`` prefix allowed)."""
        if "text.token_embedding.weight" in state:
            state = {k[5:]: v for k, v in state.items() if k.startswith("text.")}
        need = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection")
        missing = [k for k in need if k not in state]
        if missing:
            raise WeightsError(f"{source}: not a CLIP text tower (missing {missing}); expected OpenAI/open_clip "
                               "keys token_embedding, positional_embedding, transformer.resblocks.*, ln_final, "
                               "text_projection")
        vocab, width = state["token_embedding.weight"].shape
        context = state["positional_embedding"].shape[0]
        embed = state["text_projection"].shape[1]
        layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
        heads = max(width // 64, 1)
        tower = cls(vocab, width, layers, heads, context, embed)
        own = tower.state_dict()
        text_state = {k: v for k, v in state.items() if k in own}
        absent = [k for k in own if k not in text_state]
        if absent:
            raise WeightsError(f"{source}: CLIP text tower keys missing: {absent[:5]}")
        tower.load_state_dict(text_state)
        return tower


def tokenize_names(names: list[str]) -> list[list[int]]:
    """CLIP BPE token ids of each class name (open_clip's tokenizer; its vocabulary ships in the package)."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError as exc:
        raise WeightsError("CLIP text guidance needs the CLIP tokenizer: pip install open-clip-torch "
                           "(or give model.text.embeddings, a file of precomputed class embeddings)") from exc
    tok = SimpleTokenizer()
    return [tok.encode(n) for n in names]


class PromptLearner(nn.Module):
    """``[SOS, ctx x n, name, EOS]`` token embeddings with shared learnable (or fixed) context vectors."""

    def __init__(self, tower: CLIPTextTower, names: list[str], n_ctx: int = 8, learnable: bool = True) -> None:
        super().__init__()
        if not learnable:  # a fixed hand-written template instead of context vectors
            names, n_ctx = [f"a photo of a {n}." for n in names], 0
        ids = tokenize_names(names)
        length = 1 + n_ctx + max(len(i) for i in ids) + 1
        if length > tower.context_length:
            raise ValueError(f"prompts of {length} tokens exceed the text tower's context length {tower.context_length}")
        tokens = torch.zeros(len(names), length, dtype=torch.long)
        eos = []
        for k, name_ids in enumerate(ids):
            seq = [SOS] + [0] * n_ctx + name_ids + [EOS]
            tokens[k, : len(seq)] = torch.tensor(seq)
            eos.append(len(seq) - 1)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("eos_index", torch.tensor(eos), persistent=False)
        self.n_ctx = n_ctx
        ctx = torch.empty(n_ctx, tower.width).normal_(std=0.02)
        self.context = nn.Parameter(ctx, requires_grad=learnable)

    def embeddings(self, tower: CLIPTextTower) -> Tensor:
        with torch.no_grad():
            x = tower.token_embedding(self.tokens)
        ctx = self.context.to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :1], ctx, x[:, 1 + self.n_ctx:]], dim=1)


class TextGuidance(nn.Module):
    """Pixel-text score map from the stride-16 features and CLIP class embeddings.

    ``forward(feats)`` -> (feats with the score map concatenated to level 2, {"score_map": [B, K, h, w]}).
    """

    def __init__(self, in_channels: list[int], num_classes: int, embed_dim: int, tower: CLIPTextTower | None,
                 prompts: PromptLearner | None, class_embeddings: Tensor | None, temperature: float = 0.07,
                 aux_weight: float = 0.4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.temperature = temperature
        self.aux_weight = aux_weight
        self.proj = nn.Conv2d(in_channels[2], embed_dim, 1)
        self.frozen = tower
        if tower is not None:
            tower.requires_grad_(False)
            tower.eval()
        self.prompts = prompts
        if class_embeddings is not None:
            if class_embeddings.shape != (num_classes, embed_dim):
                raise ValueError(f"class embeddings {tuple(class_embeddings.shape)}, expected ({num_classes}, {embed_dim})")
            self.register_buffer("class_embeddings", class_embeddings.float().clone())
        else:
            self.class_embeddings = None

    def head_in_channels(self, in_channels: list[int]) -> list[int]:
        out = list(in_channels)
        out[2] += self.num_classes
        return out

    def train(self, mode: bool = True) -> TextGuidance:
        super().train(mode)
        if self.frozen is not None:
            self.frozen.eval()
        return self

    def text_embeddings(self) -> Tensor:
        """Class embeddings [K, D]: the fixed buffer, or the tower run on the (learnable) prompts."""
        if self.class_embeddings is not None:
            return self.class_embeddings
        return self.frozen.encode_embeddings(self.prompts.embeddings(self.frozen), self.prompts.eos_index)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], dict[str, Tensor]]:
        z = F.normalize(self.proj(feats[2]), dim=1)
        t = F.normalize(self.text_embeddings().to(z.dtype), dim=-1)
        score = torch.einsum("bdhw,kd->bkhw", z, t)
        out = list(feats)
        out[2] = torch.cat([feats[2], score], dim=1)
        return out, {"score_map": score}

    def loss(self, aux: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        logits = F.interpolate(aux["score_map"].float() / self.temperature, size=labels.shape[-2:],
                               mode="bilinear", align_corners=False)
        if not (labels != 255).any():
            return {"loss_text": logits.sum() * 0.0}
        return {"loss_text": self.aux_weight * F.cross_entropy(logits, labels, ignore_index=255)}


def save_class_embeddings(path: str | Path, embeddings: Tensor, names: list[str]) -> Path:
    """Write class embeddings [K, D] to safetensors (``class_embeddings``; the names in the metadata)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"class_embeddings": embeddings.detach().float().contiguous()}, str(path),
              metadata={"classes": "\n".join(names)})
    return path


def load_class_embeddings(path: str | Path, num_classes: int) -> Tensor:
    state = read_state_dict(path)
    if "class_embeddings" not in state:
        raise WeightsError(f"{path}: expected a tensor 'class_embeddings' [K, D] (written by dgseg text-embed)")
    emb = state["class_embeddings"]
    if emb.ndim != 2 or emb.shape[0] != num_classes:
        raise WeightsError(f"{path}: class_embeddings is {tuple(emb.shape)}, expected [{num_classes}, D]")
    return emb


def build_text_guidance(cfg: TextConfig, in_channels: list[int], num_classes: int) -> TextGuidance:
    from dgseg.data.labels import CLASSES

    names = list(CLASSES)[:num_classes]
    if cfg.embeddings is not None:
        if cfg.learnable_context:
            raise ValueError("model.text.embeddings are fixed class embeddings; set model.text.learnable_context=false "
                             "or give model.text.weights (a CLIP text tower) to learn the context")
        emb = load_class_embeddings(cfg.embeddings, num_classes)
        return TextGuidance(in_channels, num_classes, emb.shape[1], None, None, emb, cfg.temperature, cfg.aux_weight)
    if cfg.weights is None:
        raise WeightsError(
            "model.text.name=clip needs model.text.weights (a local CLIP checkpoint with the text tower, e.g. "
            "OpenAI ViT-L-14.pt or an open_clip/EVA-CLIP file) or model.text.embeddings (precomputed class "
            "embeddings); or set model.text.name=none for plain fine-tuning"
        )
    path = Path(cfg.weights)
    tower = CLIPTextTower.from_state_dict(read_state_dict(path), str(path))
    prompts = PromptLearner(tower, names, cfg.context_length, learnable=cfg.learnable_context)
    embed_dim = tower.text_projection.shape[1]
    if not cfg.learnable_context:
        with torch.no_grad():
            emb = tower.encode_embeddings(prompts.embeddings(tower), prompts.eos_index)
        return TextGuidance(in_channels, num_classes, embed_dim, None, None, emb, cfg.temperature, cfg.aux_weight)
    return TextGuidance(in_channels, num_classes, embed_dim, tower, prompts, None, cfg.temperature, cfg.aux_weight)
