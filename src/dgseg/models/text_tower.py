"""The frozen CLIP text transformer and the learnable prompts that feed it.

``CLIPTextTower`` has OpenAI / open_clip / EVA-CLIP parameter names (``token_embedding``,
``positional_embedding``, ``transformer.resblocks.*``, ``ln_final``, ``text_projection``). Its MLP
activation depends on the weights' family: OpenAI's CLIP was trained with QuickGELU
(``x * sigmoid(1.702 x)``), EVA-CLIP's text towers with exact GELU (EVA-CLIP ``eva_clip/model.py``:
``act_layer = QuickGELU if quick_gelu else nn.GELU``, and its configs leave ``quick_gelu`` off).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from dgseg.models.weights_io import WeightsError, is_openai_clip

SOS, EOS = 49406, 49407
ACTIVATIONS = ("auto", "gelu", "quick_gelu")


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


def text_activation(state: dict[str, Tensor], source: str, activation: str = "auto") -> str:
    """``gelu`` or ``quick_gelu`` for a CLIP checkpoint's text tower.

    ``auto``: the EVA-CLIP layout (text tower under ``text.``, as EVA-CLIP's and open_clip's ``CustomCLIP``
    save it) means GELU; OpenAI's release (text tower at the top level and OpenAI's ``input_resolution``
    entry) means QuickGELU. A top-level tower without that entry (an open_clip file) could be either:
    open_clip's LAION / DataComp models use GELU, its ``-quickgelu`` and OpenAI-converted ones QuickGELU;
    ``model.text.activation`` must then say which.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"model.text.activation: '{activation}' is not one of {', '.join(ACTIVATIONS)}")
    if activation != "auto":
        return activation
    if "text.token_embedding.weight" in state:
        return "gelu"
    if is_openai_clip(state):
        return "quick_gelu"
    raise WeightsError(
        f"{source}: cannot tell this CLIP text tower's activation from its keys (an open_clip-style file: top-level "
        "text tower, no OpenAI 'input_resolution'). Set model.text.activation: quick_gelu (OpenAI weights, "
        "open_clip '-quickgelu' models) or gelu (open_clip LAION / DataComp models, EVA-CLIP)"
    )


class CLIPTextTower(nn.Module):
    """The CLIP text transformer; ``activation`` is ``gelu`` or ``quick_gelu``."""

    def __init__(self, vocab_size: int = 49408, width: int = 512, layers: int = 12, heads: int = 8,
                 context_length: int = 77, embed_dim: int = 512, quick_gelu: bool = True) -> None:
        super().__init__()
        self.context_length = context_length
        self.activation = "quick_gelu" if quick_gelu else "gelu"
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

    @property
    def embed_dim(self) -> int:
        return self.text_projection.shape[1]

    def encode_embeddings(self, x: Tensor, eos_index: Tensor) -> Tensor:
        """Token embeddings [K, T, W] (T <= context_length) -> projected EOS features [K, D]."""
        t = x.shape[1]
        x = x + self.positional_embedding[:t]
        x = self.transformer(x, self.attn_mask[:t, :t].to(x.dtype))
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), eos_index] @ self.text_projection

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], source: str = "state dict",
                        activation: str = "auto") -> CLIPTextTower:
        """Infer the sizes from a CLIP checkpoint (whole CLIP or text tower; ``text.`` prefix allowed) and the
        activation from its family (:func:`text_activation`)."""
        text = {k[5:]: v for k, v in state.items() if k.startswith("text.")}
        need = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection")
        tower_state = text if "token_embedding.weight" in text else state  # the tower's own keys, unprefixed
        missing = [k for k in need if k not in tower_state]
        if missing:  # checked before the activation: a file without a text tower is not an activation question
            raise WeightsError(f"{source}: not a CLIP text tower (missing {missing}); expected OpenAI/open_clip "
                               "keys token_embedding, positional_embedding, transformer.resblocks.*, ln_final, "
                               "text_projection")
        act = text_activation(state, source, activation)  # from the whole file: its family shows outside the tower
        state = tower_state
        vocab, width = state["token_embedding.weight"].shape
        context = state["positional_embedding"].shape[0]
        embed = state["text_projection"].shape[1]
        layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
        heads = max(width // 64, 1)
        tower = cls(vocab, width, layers, heads, context, embed, quick_gelu=act == "quick_gelu")
        own = tower.state_dict()
        text_state = {k: v for k, v in state.items() if k in own}
        absent = [k for k in own if k not in text_state]
        if absent:
            raise WeightsError(f"{source}: CLIP text tower keys missing: {absent[:5]}")
        tower.load_state_dict(text_state)
        return tower

    @classmethod
    def from_arch(cls, arch: str, activation: str = "auto") -> CLIPTextTower:
        """A randomly initialised tower of open_clip's model ``arch`` (e.g. ``EVA02-L-14``, ``ViT-L-14``);
        ``auto`` takes the config's ``quick_gelu`` flag (off: GELU)."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.text.activation: '{activation}' is not one of {', '.join(ACTIVATIONS)}")
        try:
            import open_clip
        except ImportError as exc:
            raise WeightsError("model.text.arch needs open-clip-torch (its model configs): pip install "
                               "open-clip-torch") from exc
        cfg = open_clip.get_model_config(arch)
        if cfg is None or "text_cfg" not in cfg or "width" not in cfg["text_cfg"]:
            import difflib

            close = difflib.get_close_matches(arch, open_clip.list_models(), n=5, cutoff=0.5)
            hint = f"similar: {', '.join(close)}" if close else "expected an open_clip model name such as EVA02-L-14"
            raise ValueError(f"model.text.arch: open_clip has no CLIP text tower config '{arch}'; {hint}")
        t = cfg["text_cfg"]
        quick = cfg.get("quick_gelu", False) if activation == "auto" else activation == "quick_gelu"
        width = t["width"]
        return cls(t.get("vocab_size", 49408), width, t.get("layers", 12), t.get("heads", max(width // 64, 1)),
                   t.get("context_length", 77), cfg["embed_dim"], quick_gelu=quick)


def tokenize_names(names: list[str]) -> list[list[int]]:
    """CLIP BPE token ids of each class name (open_clip's tokenizer; its vocabulary ships in the package)."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError as exc:
        raise WeightsError("CLIP text guidance needs the CLIP tokenizer: pip install open-clip-torch "
                           "(or give model.text.embeddings, a file of precomputed class embeddings)") from exc
    tok = SimpleTokenizer()
    return [tok.encode(n) for n in names]


CONTEXT_INITS = ("denseclip", "coop")


def init_context(n_ctx: int, width: int, how: str = "denseclip") -> Tensor:
    """Context vectors [n_ctx, width]. ``denseclip``: ``trunc_normal_`` (std 1, cut at +-2) over a ``randn``
    tensor, as DenseCLIP's ``contexts`` (``segmentation/denseclip/denseclip.py``); ``coop``: normal, std 0.02."""
    if how == "denseclip":
        ctx = torch.randn(n_ctx, width)
        return nn.init.trunc_normal_(ctx)
    if how == "coop":
        return torch.empty(n_ctx, width).normal_(std=0.02)
    raise ValueError(f"model.text.context_init: '{how}' is not one of {', '.join(CONTEXT_INITS)}")


class PromptLearner(nn.Module):
    """``[SOS, ctx x n, name, EOS]`` token embeddings with shared learnable (or fixed) context vectors."""

    def __init__(self, tower: CLIPTextTower, names: list[str], n_ctx: int = 8, learnable: bool = True,
                 context_init: str = "denseclip") -> None:
        super().__init__()
        classes = names
        if not learnable:  # a fixed hand-written template instead of context vectors
            names, n_ctx = [f"a photo of a {n}." for n in names], 0
        ids = tokenize_names(names)
        longest = max(range(len(ids)), key=lambda k: len(ids[k]))
        length = 1 + n_ctx + len(ids[longest]) + 1
        if length > tower.context_length:
            n = len(ids[longest])
            parts = (f"SOS, {n_ctx} context tokens (model.text.context_length), the name's {n}, EOS" if learnable
                     else f"SOS, 'a photo of a NAME.' in {n}, EOS")
            raise ValueError(f"class {longest} {classes[longest]!r}: its prompt ({parts}) is {length} CLIP tokens, "
                             f"over the text tower's context length {tower.context_length}; shorten the class name")
        tokens = torch.zeros(len(names), length, dtype=torch.long)
        eos = []
        for k, name_ids in enumerate(ids):
            seq = [SOS] + [0] * n_ctx + name_ids + [EOS]
            tokens[k, : len(seq)] = torch.tensor(seq)
            eos.append(len(seq) - 1)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("eos_index", torch.tensor(eos), persistent=False)
        self.n_ctx = n_ctx
        self.context = nn.Parameter(init_context(n_ctx, tower.width, context_init), requires_grad=learnable)

    def embeddings(self, tower: CLIPTextTower) -> Tensor:
        with torch.no_grad():
            x = tower.token_embedding(self.tokens)
        ctx = self.context.to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :1], ctx, x[:, 1 + self.n_ctx:]], dim=1)
