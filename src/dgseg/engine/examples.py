"""A few predictions kept from an evaluation (``eval.examples`` per domain) for reports and TensorBoard.

On disk (``RUN/examples/<domain>/<k>_<tag>_{image.jpg,label.png,pred.png}``): the image as RGB JPEG, the
ground truth and the prediction as single-channel PNGs of class indices (255 = ignore), so a report can
colour them with the run's class palette. Images whose longer side exceeds :data:`MAX_SIDE` are downscaled
(nearest for the label maps) so that pages load fast.

``<tag>`` is new for every evaluation: its images are written beside the previous ones, ``eval.json`` then
names them, and only after that are the previous evaluation's images removed (:func:`prune_examples`). A
crash in between leaves the old ``eval.json`` naming its own, unchanged images.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MAX_SIDE = 512


def example(image: torch.Tensor, label: torch.Tensor, pred: torch.Tensor) -> dict[str, np.ndarray]:
    """image: normalised float [3, h, w]; label, pred: [H, W] class indices -> uint8 arrays at one size."""
    from dgseg.data.transforms import denormalize

    label, pred = label.cpu(), pred.cpu()
    h, w = label.shape[-2:]
    scale = min(1.0, MAX_SIDE / max(h, w))  # landscape or portrait
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    img = F.interpolate(image[None].float().cpu(), size=size, mode="bilinear", align_corners=False)[0]
    maps = [F.interpolate(m[None, None].float(), size=size, mode="nearest")[0, 0] for m in (label, pred)]
    return {"image": denormalize(img).permute(1, 2, 0).numpy(),
            "label": maps[0].clamp(0, 255).to(torch.uint8).numpy(),
            "pred": maps[1].clamp(0, 255).to(torch.uint8).numpy()}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "domain"


def _save(array: np.ndarray, path: Path, **kwargs) -> None:
    from PIL import Image

    from dgseg.atomic import write_atomic

    kind = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    # temp file + rename: replaces a symlink at the name, never writes through it
    write_atomic(path, lambda f: Image.fromarray(array).save(f, format=kind, **kwargs))


def save_examples(out_dir: Path, examples: dict[str, list[dict]]) -> dict[str, list[dict[str, str]]]:
    """Write the examples under ``out_dir/examples/``; returns domain -> [{image, label, pred}] relative paths.
    An ``examples/`` or ``examples/<domain>/`` that is a symbolic link is refused (:class:`dgseg.atomic.LinkError`),
    never written through."""
    from dgseg.atomic import own_folder
    from dgseg.engine.run_folder import KEPT

    root = own_folder(out_dir / "examples", KEPT["examples"])
    tag = secrets.token_hex(4)
    written: dict[str, list[dict[str, str]]] = {}
    taken: set[str] = set()
    for domain, items in examples.items():
        base = name = _safe(domain)
        n = 1
        while name in taken:  # two labels that differ only in characters _safe replaces: -2, -3, ...
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        folder = own_folder(root / name, KEPT["examples"])
        for k, ex in enumerate(items):
            names = {part: f"{k}_{tag}_{part}.{ext}" for part, ext in (("image", "jpg"), ("label", "png"),
                                                                         ("pred", "png"))}
            _save(ex["image"], folder / names["image"], quality=88)
            _save(ex["label"], folder / names["label"])
            _save(ex["pred"], folder / names["pred"])
            written.setdefault(domain, []).append({k2: str((folder / v).relative_to(out_dir))
                                                   for k2, v in names.items()})
    return written


_WRITTEN = re.compile(r"\d+(_[0-9a-f]+)?_(image\.jpg|label\.png|pred\.png)")  # the names save_examples gives


def prune_examples(out_dir: Path, named: dict[str, list[dict[str, str]]]) -> None:
    """Remove the example images of earlier evaluations: the files under ``out_dir/examples/<domain>/`` with
    the names :func:`save_examples` gives that ``named`` (what ``eval.json`` now holds) does not name, then
    the domain folders left empty. Call it after ``eval.json`` is written. Other files are kept, and a
    symbolic link (folder or file) is never followed."""
    root = out_dir / "examples"
    if root.is_symlink() or not root.is_dir():
        return
    keep = {(out_dir / v).resolve() for items in named.values() for item in items for v in item.values()}
    for folder in sorted(root.iterdir()):
        if folder.is_symlink() or not folder.is_dir():
            continue
        for f in folder.iterdir():
            if _WRITTEN.fullmatch(f.name) and not f.is_symlink() and f.is_file() and f.resolve() not in keep:
                f.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
