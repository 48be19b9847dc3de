"""CLIP text guidance of VLTSeg v1, as DenseCLIP defines it (github raoyongming/DenseCLIP,
``segmentation/denseclip/denseclip.py``, ``DenseCLIP.after_extract_feat``).

Prompts ``[SOS, ctx_1 .. ctx_n, <class name tokens>, EOS]`` with context vectors shared by all classes
(CoOp) go through a frozen CLIP text tower; the EOS feature after the text projection is the class
embedding ``t_k``. The visual embeddings come from the image encoder itself: its LAST block's tokens through
its final norm and pretrained visual projection (``ln_post`` + ``proj`` in OpenAI's CLIP, ``norm`` +
``head`` in EVA-CLIP; :meth:`dgseg.models.backbones.Backbone.forward` with ``embeddings=True``), a global
embedding (cls token) and dense embeddings ``z`` [B, D, H/p, W/p]. Optionally (on by default) the context
decoder lets the class embeddings attend to the visual context: ``t <- t + gamma * decoder(t, [g; z])``,
gamma per channel, initialised to 1e-4. The score map ``s = <z / |z|, t / |t|>`` [B, K, H/p, W/p] is
trained with an auxiliary cross-entropy on ``s / temperature`` and concatenated to the stride-16 features
the head reads.

Class embeddings of a frozen tower without learnable context can be written to a file
(:func:`save_class_embeddings`) so that training and inference need no text tower.
"""

from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgseg.config import TextConfig
from dgseg.models.context_decoder import ContextDecoder
from dgseg.models.text_tower import CLIPTextTower, PromptLearner, QuickGELU, tokenize_names
from dgseg.models.weights_io import (
    WeightsError,
    clip_download_hint,
    is_safetensors,
    local_weights_file,
    read_state_dict,
)

__all__ = ["CLIPTextTower", "ContextDecoder", "PromptLearner", "QuickGELU", "TextGuidance", "build_text_guidance",
           "load_class_embeddings", "save_class_embeddings", "stored_class_embeddings", "stored_text_tower",
           "text_embed_config", "tokenize_names"]

GAMMA_INIT = 1e-4  # DenseCLIP: self.gamma = nn.Parameter(torch.ones(text_dim) * 1e-4)


class TextGuidance(nn.Module):
    """Pixel-text score map from the image encoder's projected embeddings and CLIP class embeddings.

    ``forward(feats, visual)``: ``feats`` the neck's four levels, ``visual`` = (global [B, D], dense
    [B, D, h, w]) -> (feats with the score map concatenated to level 2, {"score_map": [B, K, h, w]}).
    """

    def __init__(self, num_classes: int, embed_dim: int, tower: CLIPTextTower | None,
                 prompts: PromptLearner | None, class_embeddings: Tensor | None,
                 decoder: ContextDecoder | None = None, temperature: float = 0.07, aux_weight: float = 0.4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.aux_weight = aux_weight
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
        self.decoder = decoder
        self.gamma = nn.Parameter(torch.full((embed_dim,), GAMMA_INIT)) if decoder is not None else None

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

    def forward(self, feats: list[Tensor], visual: tuple[Tensor, Tensor]) -> tuple[list[Tensor], dict[str, Tensor]]:
        glob, dense = visual
        b, d, h, w = dense.shape
        if feats[2].shape[-2:] != (h, w):
            raise ValueError(f"text guidance: the stride-16 features are {tuple(feats[2].shape[-2:])} but the "
                             f"visual embeddings {h} x {w}; the score map is concatenated to that level")
        text = self.text_embeddings().to(dense.dtype).expand(b, -1, -1)  # B x K x D
        if self.decoder is not None:
            context = torch.cat([glob[:, None], dense.flatten(2).transpose(1, 2)], dim=1)  # B x (1 + hw) x D
            text = text + self.gamma.to(dense.dtype) * self.decoder(text, context)
        z = F.normalize(dense, dim=1)
        t = F.normalize(text, dim=-1)
        score = torch.einsum("bdhw,bkd->bkhw", z, t)
        out = list(feats)
        out[2] = torch.cat([feats[2], score.to(feats[2].dtype)], dim=1)
        return out, {"score_map": score}

    def loss(self, aux: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        logits = F.interpolate(aux["score_map"].float() / self.temperature, size=labels.shape[-2:],
                               mode="bilinear", align_corners=False)
        if not (labels != 255).any():
            return {"loss_text": logits.sum() * 0.0}
        return {"loss_text": self.aux_weight * F.cross_entropy(logits, labels, ignore_index=255)}


def save_class_embeddings(path: str | Path, embeddings: Tensor, names: list[str], replace: bool = True) -> Path:
    """Write class embeddings [K, D] to safetensors (``class_embeddings``; the names in the metadata).
    ``replace=False`` keeps and refuses a file at ``path``."""
    from safetensors.torch import save

    from dgseg.atomic import write_atomic

    return write_atomic(path, save({"class_embeddings": embeddings.detach().float().contiguous()},
                                   metadata={"classes": "\n".join(names)}), replace=replace)


def load_class_embeddings(path: str | Path, names: list[str]) -> Tensor:
    """Class embeddings [K, D] for the classes ``names``; a file written by ``dgseg text-embed`` records its
    class names, and embeddings of other classes (or of the same classes in another order) are refused."""
    state = read_state_dict(path)
    if "class_embeddings" not in state:
        raise WeightsError(f"{path}: expected a tensor 'class_embeddings' [K, D] (written by dgseg text-embed)")
    emb = state["class_embeddings"]
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise WeightsError(f"{path}: class_embeddings is {tuple(emb.shape)}, expected [{len(names)}, D]")
    recorded = _recorded_names(Path(path))
    if recorded is not None and recorded != list(names):
        raise WeightsError(f"{path}: its embeddings are of the classes {recorded}, the experiment's data.classes are "
                           f"{list(names)}; write them for these classes with dgseg text-embed")
    return emb


def _recorded_names(path: Path) -> list[str] | None:
    """The class names in a safetensors file's metadata (``classes``, one per line), whatever the file's name
    (``text-embed --out emb.pt`` writes safetensors too); None when absent."""
    if not is_safetensors(path):
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        text = (f.metadata() or {}).get("classes")
    return None if text is None else text.split("\n")


def _build_tower(cfg: TextConfig) -> CLIPTextTower:
    stored = _TOWER.get()
    if stored is not None:
        state, activation = stored
        return CLIPTextTower.from_state_dict(state, "the full export's text tower", activation)
    if cfg.weights is not None:
        path = local_weights_file(cfg.weights, "model.text.weights", clip_download_hint(cfg.arch))
        return CLIPTextTower.from_state_dict(read_state_dict(path), str(path), cfg.activation)
    if cfg.arch is not None:
        return CLIPTextTower.from_arch(cfg.arch, cfg.activation)
    raise WeightsError(
        "model.text.name=clip needs model.text.weights (a local CLIP checkpoint with the text tower, e.g. "
        "OpenAI ViT-L-14.pt or an open_clip/EVA-CLIP file), model.text.embeddings (precomputed class "
        "embeddings) or model.text.arch (an open_clip model name, e.g. EVA02-L-14: a randomly initialised "
        "tower, for counting and tests); or set model.text.name=none for plain fine-tuning"
    )


def text_embed_config(cfg: TextConfig, config: str) -> TextConfig:
    """``cfg``, the text config of ``config`` that ``dgseg text-embed`` encodes the class names with; refuses
    one without the CLIP text tower's weights (model.text.weights: with model.text.arch alone the tower is
    randomly initialised, its embeddings meaningless) or one that names an embeddings file."""
    if cfg.embeddings is not None:
        raise ValueError(f"{config}: model.text.embeddings is set ({cfg.embeddings}); text-embed "
                         "computes that file from model.text.weights: leave it out (--set model.text.embeddings=)")
    if cfg.weights is None:  # with model.text.arch alone the tower would be randomly initialised
        raise ValueError(f"{config}: model.text.weights is not set; text-embed encodes the class "
                         "names with a CLIP text tower: give its checkpoint with --set model.text.weights=FILE "
                         "(e.g. OpenAI ViT-L-14.pt or an open_clip/EVA-CLIP file)")
    return cfg


_STORED: contextvars.ContextVar[Tensor | None] = contextvars.ContextVar("stored_class_embeddings", default=None)
_TOWER: contextvars.ContextVar[tuple[dict[str, Tensor], str] | None] = contextvars.ContextVar("stored_text_tower",
                                                                                              default=None)


@contextlib.contextmanager
def _setting(var: contextvars.ContextVar, value):
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def stored_class_embeddings(embeddings: Tensor | None):
    """Builds inside it take fixed class embeddings from ``embeddings`` (a checkpoint's ``text.class_embeddings``,
    the ones it trained with and will load anyway) instead of the ``model.text.embeddings`` file or the text tower
    that computed them, so a run loads without either. None: as usual. Learnable context is unaffected."""
    return _setting(_STORED, embeddings)


def stored_text_tower(tower: tuple[dict[str, Tensor], str] | None):
    """Builds inside it take the frozen text tower from ``tower`` (its tensors, unprefixed, and its activation: a
    full export's own) instead of reading ``model.text.weights``. None: as usual."""
    return _setting(_TOWER, tower)


def build_text_guidance(cfg: TextConfig, names: list[str]) -> TextGuidance:
    """The text branch for the classes ``names`` (the experiment's class set, in label order)."""
    num_classes = len(names)
    stored = _STORED.get()
    if cfg.embeddings is not None and cfg.learnable_context:
        raise ValueError("model.text.embeddings are fixed class embeddings; set model.text.learnable_context=false "
                         "or give model.text.weights (a CLIP text tower) to learn the context")
    if stored is not None and not cfg.learnable_context:  # a checkpoint's own: no file, no tower needed
        emb = stored.float().clone()
        tower, prompts = None, None
        embed_dim = emb.shape[1]
    elif cfg.embeddings is not None:
        emb = load_class_embeddings(cfg.embeddings, names)
        tower, prompts = None, None
        embed_dim = emb.shape[1]
    else:
        tower = _build_tower(cfg)
        prompts = PromptLearner(tower, names, cfg.context_length, learnable=cfg.learnable_context,
                                context_init=cfg.context_init)
        embed_dim = tower.embed_dim
        emb = None
        if not cfg.learnable_context:
            with torch.no_grad():
                emb = tower.encode_embeddings(prompts.embeddings(tower), prompts.eos_index)
            tower, prompts = None, None
    decoder = None
    if cfg.context_decoder:
        decoder = ContextDecoder(embed_dim, cfg.decoder_width, cfg.decoder_heads, cfg.decoder_layers, dropout=0.1)
    return TextGuidance(num_classes, embed_dim, tower, prompts, emb, decoder, cfg.temperature, cfg.aux_weight)
