"""Datasets read in an experiment's class set.

Every built-in dataset declares the class set its labels are read in (today all of them: the 19
Cityscapes classes); a ``folder`` dataset has none of its own, its label values are the experiment's
class indices (or raw values through ``label_map`` / ``reduce_zero_label``). When the experiment's
classes are a subset of a dataset's (e.g. ``synthia16`` on GTAV or SYNTHIA), labels are remapped by
class name (the classes left out become ignore); any other difference is an error naming both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .classes import ClassSet, index_remap, load_class_set

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def declared_classes(name: str) -> ClassSet | None:
    """The class set a dataset's labels come in: None for ``folder`` (the experiment's), else Cityscapes."""
    return None if name.lower() == "folder" else load_class_set("cityscapes")


class RemapLabels:
    """Maps label values through ``lut`` (uint8 [256]: dataset class index -> experiment class index,
    255 ignore), then applies ``transform``. Picklable (DataLoader workers)."""

    def __init__(self, lut: np.ndarray, transform: Transform | None = None) -> None:
        self.lut = torch.from_numpy(np.asarray(lut, dtype=np.int64))
        self.transform = transform

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        label = self.lut[label.clamp(0, 255)]
        return self.transform(image, label) if self.transform is not None else (image, label)


def class_set_kwargs(spec: Any, classes: ClassSet, transform: Transform | None, where: str) -> dict[str, Any]:
    """``build_dataset`` kwargs that make the dataset of config entry ``spec`` yield ``classes`` indices:
    ``transform`` (wrapped in :class:`RemapLabels` when the classes are a subset of the dataset's), and
    for ``folder`` ``num_classes``, ``label_map``, ``reduce_zero_label``. ClassSetError naming ``where``
    and both class sets when the dataset cannot provide the experiment's classes."""
    declared = declared_classes(spec.name)
    if declared is None:
        kwargs: dict[str, Any] = {"num_classes": classes.num_classes, "transform": transform}
        if getattr(spec, "label_map", None) is not None:
            kwargs["label_map"] = spec.label_map
        if getattr(spec, "reduce_zero_label", False):
            kwargs["reduce_zero_label"] = True
        return kwargs
    lut = index_remap(declared, classes, f"{where} ({spec.name})")
    return {"transform": transform if lut is None else RemapLabels(lut, transform)}


__all__ = ["RemapLabels", "class_set_kwargs", "declared_classes"]
