"""Decode heads. `build_head(name, in_channels, num_classes, **kwargs)`; one registry line per head.

Every head has `forward(features, queries=None) -> dict`, `loss(outputs, labels) -> dict[str, Tensor]`
(the values whose key contains "loss" are summed) and `semantic(outputs, size) -> B x K x H x W`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from .linear import LinearHead
from .mask2former import Mask2FormerHead

HEADS: dict[str, type[nn.Module]] = {
    "mask2former": Mask2FormerHead,
    "linear": LinearHead,
}


def build_head(name: str, in_channels: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the head registered as `name` (see HEADS) on maps with `in_channels`."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; model.head.name must be one of {sorted(HEADS)}")
    cls = HEADS[name]
    accepted = set(inspect.signature(cls).parameters) - {"in_channels", "num_classes"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"head {name!r} has no option(s) {unknown}; valid model.head options: {sorted(accepted)}"
        )
    return cls(in_channels=list(in_channels), num_classes=num_classes, **kwargs)


__all__ = ["HEADS", "LinearHead", "Mask2FormerHead", "build_head"]
