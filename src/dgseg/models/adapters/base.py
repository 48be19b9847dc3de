"""The adapter protocol: how a method plugs into a frozen timm ViT.

An adapter is a plain ``nn.Module`` that the backbone calls around the blocks listed in
``layers``: ``before_block(x, layer, num_prefix)`` and ``after_block(x, layer, num_prefix)`` get and
return tokens ``B x (P + N) x C`` (P prefix tokens: cls and registers). Methods that change the
blocks themselves (LoRA, AdaptFormer) do it once in ``attach``. ``trains_backbone`` says whether the
backbone's own weights train; ``backbone_grad`` whether autograd must run through the backbone.
"""

from __future__ import annotations

from torch import Tensor, nn


class Adapter(nn.Module):
    trains_backbone: bool = False
    backbone_grad: bool = True
    link: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.layers: list[int] = []

    def attach(self, backbone: nn.Module) -> None:
        """Called once with the :class:`~dgseg.models.backbones.Backbone`; hooks are installed after."""

    def before_block(self, x: Tensor, layer: int, num_prefix: int) -> Tensor:
        return x

    def after_block(self, x: Tensor, layer: int, num_prefix: int) -> Tensor:
        return x

    def queries(self) -> Tensor | None:
        """Object queries for the head (Rein-link), or None."""
        return None


class Frozen(Adapter):
    """Freeze: the backbone is frozen and runs without autograd; only the head trains."""

    backbone_grad = False


class FullFineTune(Adapter):
    """Full fine-tuning: every backbone weight trains (with a learning-rate multiplier)."""

    trains_backbone = True

    def __init__(self, lr_mult: float = 0.1) -> None:
        super().__init__()
        self.lr_mult = lr_mult
