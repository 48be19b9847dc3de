"""The public face of the benchmark: :class:`SyntheticDataset` (scene i of a split, rendered in one style,
as a PyTorch dataset) and :func:`benchmark` (generation speed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..reading import SplitNotFound
from .layout import SPLITS
from .scene import DEFAULT_SIZE, Scene, make_scene
from .styles import SOURCE_STYLE, STYLES, render

DEFAULT_LENGTH = {"train": 1000, "val": 100, "test": 100}
CACHE_MB = 1024.0
"""Memory (MiB) a process may fill with rendered scenes, shared by its synthetic datasets. Rendering is most
of a synthetic sample's cost on the CPU (about 30 ms for 256 x 512 on one core) and a scene's image and label are a
pure function of (style, seed, split, size, index), so a run that draws each training scene many times, or
validates on the same scenes every few hundred iterations, renders each once; the bytes are the same, so
the results are too. Scenes past the budget are rendered every time."""
_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_CACHED_BYTES = 0


def clear_scene_cache() -> None:
    global _CACHED_BYTES
    _CACHE.clear()
    _CACHED_BYTES = 0


class SyntheticDataset(Dataset):
    """Synthetic street scenes in one style: item i is scene i of ``split``, rendered in ``style``.

    Args:
        style: one of :data:`STYLES` (``game`` is the source domain, the others are targets).
        split: ``train``, ``val`` or ``test`` (disjoint scene streams).
        length: number of scenes (default 1000 for train, 100 for val/test).
        size: (H, W) of the images (default (256, 512)).
        seed: the benchmark's seed (scene i is a pure function of (seed, split, i)).
        transform: ``(image uint8 [3,H,W], label int64 [H,W]) -> (image, label)``.

    Items: ``{"image": uint8 [3, H, W], "label": int64 [H, W], "path": "synthetic://<style>/<split>/<i>"}``.
    """

    def __init__(
        self,
        style: str = SOURCE_STYLE,
        split: str = "train",
        length: int | None = None,
        size: tuple[int, int] = DEFAULT_SIZE,
        seed: int = 0,
        transform: Any = None,
    ) -> None:
        if style not in STYLES:
            raise ValueError(
                f"synthetic style '{style}' unknown; expected one of {list(STYLES)} "
                f"(dataset names synthetic-<style>)"
            )
        if split not in SPLITS:
            raise SplitNotFound(f"synthetic split '{split}' unknown; expected one of {list(SPLITS)}")
        self.style, self.split, self.seed = style, split, int(seed)
        self.length = int(DEFAULT_LENGTH[split] if length is None else length)
        if self.length <= 0:
            raise ValueError(f"synthetic dataset length must be positive, got {self.length}")
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 16:
            raise ValueError(f"synthetic image size (H, W) must be at least 16 pixels, got {self.size}")
        self.transform = transform
        self.name = f"synthetic-{style}"
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        return make_scene(self.seed, self.split, index, self.size)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(image uint8 [H, W, 3], label uint8 [H, W], []) for scene ``index``: fresh arrays (the caller may
        change them), from the process's scene cache (:data:`CACHE_MB`) when it holds the scene."""
        global _CACHED_BYTES
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.name} of length {self.length}")
        key = (self.style, self.seed, self.split, self.size, index)
        hit = _CACHE.get(key)
        if hit is None:
            scene = self.scene(index)
            hit = (render(scene, self.style), scene.label.copy())
            size = hit[0].nbytes + hit[1].nbytes
            if _CACHED_BYTES + size <= CACHE_MB * 2**20:
                _CACHE[key] = hit
                _CACHED_BYTES += size
        return hit[0].copy(), hit[1].copy(), []

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self.length
        image, label, _ = self.read(index)
        image_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        label_t = torch.from_numpy(label.astype(np.int64))
        if self.transform is not None:
            image_t, label_t = self.transform(image_t, label_t)
        return {
            "image": image_t,
            "label": label_t,
            "path": f"synthetic://{self.style}/{self.split}/{index:06d}",
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"SyntheticDataset(style={self.style!r}, split={self.split!r}, length={self.length}, "
            f"size={self.size}, seed={self.seed})"
        )


def benchmark(
    n: int = 40, size: tuple[int, int] = DEFAULT_SIZE, styles: tuple[str, ...] = STYLES, repeats: int = 3
) -> dict[str, float]:
    """Images per second (scene generation + rendering) per style on the calling thread, CPU time.

    The best of ``repeats`` runs of ``n`` scenes each, so other processes on the machine disturb the
    number less.
    """
    import time

    render(make_scene(0, "train", 10**6, size), "photo")  # load the textures once
    result = {}
    for style in styles:
        best = float("inf")
        for rep in range(repeats):
            start = time.process_time()
            for i in range(n):
                render(make_scene(0, "train", rep * n + i, size), style)
            best = min(best, time.process_time() - start)
        result[style] = n / best
    return result
