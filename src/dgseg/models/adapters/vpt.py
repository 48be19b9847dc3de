"""VPT-deep: ``tokens`` learnable prompts inserted after the prefix tokens before every block and
removed after it."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dgseg.models.adapters.base import Adapter


class VPT(Adapter):
    def __init__(self, num_layers: int, embed_dim: int, patch_size: int, tokens: int = 150) -> None:
        super().__init__()
        self.num_tokens = tokens
        self.layers = list(range(num_layers))
        self.prompts = nn.Parameter(torch.empty(num_layers, tokens, embed_dim))
        bound = math.sqrt(6.0 / float(3 * patch_size * patch_size + embed_dim))
        nn.init.uniform_(self.prompts, -bound, bound)

    def attach(self, backbone: nn.Module) -> None:
        kind = type(backbone.vit).__name__
        if kind != "VisionTransformer":
            raise ValueError(
                f"VPT needs a token-sequence ViT with absolute position embeddings; '{backbone.name}' is a {kind} "
                "(rotary or windowed attention cannot take extra tokens)"
            )

    def before_block(self, x: Tensor, layer: int, num_prefix: int) -> Tensor:
        prompts = self.prompts[layer].to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :num_prefix], prompts, x[:, num_prefix:]], dim=1)

    def after_block(self, x: Tensor, layer: int, num_prefix: int) -> Tensor:
        return torch.cat([x[:, :num_prefix], x[:, num_prefix + self.num_tokens:]], dim=1)
