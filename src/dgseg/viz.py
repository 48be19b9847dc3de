"""Pictures of segmentations: colour label maps, overlays, a report figure and training curves.

Every function takes the colour table as ``palette`` (a sequence of K RGB triples, or a [K,3] array);
left as None it is ``dgseg.data.labels.PALETTE`` (the 19 Cityscapes colours). Label maps are class
indices ``[H,W]`` (numpy or torch); ``ignore_index`` (255) pixels are drawn black. Figures are drawn
with matplotlib's Agg canvas directly (no pyplot, no display needed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dgseg.atomic import write_atomic

__all__ = ["colorize", "overlay", "save_png", "report_figure", "plot_curves", "plain_text"]

Palette = Sequence[Sequence[int]] | np.ndarray


def _palette_array(palette: Palette | None) -> np.ndarray:
    if palette is None:
        try:
            from dgseg.data.labels import PALETTE
        except ImportError as e:
            raise ImportError(f"no default palette ({e}); pass palette=[(r, g, b), ...]") from e
        palette = PALETTE
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or len(pal) == 0:
        raise ValueError(f"palette must be K RGB triples ([K,3]), got shape {pal.shape}")
    if pal.min() < 0 or pal.max() > 255:
        raise ValueError("palette colours must be in 0..255")
    return pal.astype(np.uint8)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _to_label(label: Any) -> np.ndarray:
    lab = _to_numpy(label)
    if lab.ndim != 2:
        raise ValueError(f"label must be a [H,W] class map, got shape {lab.shape}")
    if lab.dtype.kind not in "iu":
        raise ValueError(f"label must hold integer class indices, got dtype {lab.dtype}")
    return lab.astype(np.int64, copy=False)


def _to_image(image: Any) -> np.ndarray:
    """uint8 [H,W,3] from an HWC array or a CHW tensor/array (the datasets' format)."""
    img = _to_numpy(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be [H,W,3] (or [3,H,W]), got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0..255), got dtype {img.dtype}")
    return np.ascontiguousarray(img)


def colorize(
    label: np.ndarray | torch.Tensor, palette: Palette | None = None, ignore_index: int = 255
) -> np.ndarray:
    """Colours a ``[H,W]`` class map: uint8 ``[H,W,3]``, ``ignore_index`` pixels black.

    A value that is neither a palette index nor ``ignore_index`` raises ValueError.
    """
    lab = _to_label(label)
    pal = _palette_array(palette)
    known = lab != ignore_index
    bad = known & ((lab < 0) | (lab >= len(pal)))
    if bad.any():
        raise ValueError(
            f"label value {int(lab[bad][0])} has no colour "
            f"(palette has {len(pal)} colours, ignore_index is {ignore_index})"
        )
    out = np.zeros((*lab.shape, 3), dtype=np.uint8)
    out[known] = pal[lab[known]]
    return out


def overlay(
    image: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    palette: Palette | None = None,
    alpha: float = 0.5,
    ignore_index: int = 255,
) -> np.ndarray:
    """Blends the label colours into an RGB image: ``(1 - alpha) * image + alpha * colour``.

    image: uint8 ``[H,W,3]`` (or ``[3,H,W]``); label: ``[H,W]`` of the same size. Ignored pixels keep the
    image. Returns uint8 ``[H,W,3]``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _to_image(image)
    lab = _to_label(label)
    if img.shape[:2] != lab.shape:
        raise ValueError(f"image {img.shape[:2]} and label {lab.shape} differ in size")
    colour = colorize(lab, palette, ignore_index)
    blend = np.rint((1.0 - alpha) * img.astype(np.float32) + alpha * colour.astype(np.float32))
    out = img.copy()
    known = lab != ignore_index
    out[known] = np.clip(blend[known], 0, 255).astype(np.uint8)
    return out


def save_png(path: str | Path, array: np.ndarray | torch.Tensor) -> Path:
    """Writes uint8 ``[H,W]`` (grey / label IDs) or ``[H,W,3]`` (RGB) as a PNG; creates the folder.

    Integer label maps of another dtype are accepted when their values fit in 0..255.
    """
    a = _to_numpy(array)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ValueError(f"save_png expects [H,W] or [H,W,3], got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() > 255)):
            raise ValueError(f"save_png expects uint8 values 0..255, got dtype {a.dtype}")
        a = a.astype(np.uint8)
    return write_atomic(path, lambda f: Image.fromarray(np.ascontiguousarray(a)).save(f, format="PNG"))


def plain_text(text: Any) -> str:
    """``text`` (a class name, domain label or run name: the user's) as matplotlib draws it literally: each ``$``
    escaped, since matplotlib reads text between two ``$`` as math (``cost $5 $x$`` in italics, and a name such as
    ``$\\foo$`` raises a parse error when the figure is saved)."""
    return str(text).replace("$", r"\$")


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _bar_chart(ax, bars: Mapping[str, Mapping[str, float]]) -> None:
    methods = list(bars)
    domains: list[str] = []
    for per_domain in bars.values():
        domains += [d for d in per_domain if d not in domains]
    x = np.arange(len(domains))
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        values = [float(bars[method].get(d, math.nan)) for d in domains]
        rects = ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=plain_text(method))
        ax.bar_label(
            rects, labels=["" if math.isnan(v) else f"{v:.1f}" for v in values], fontsize=7, padding=1
        )
    finite = [float(v) for per in bars.values() for v in per.values() if not math.isnan(float(v))]
    ax.set_ylim(0, max(finite, default=100.0) * 1.25 or 1.0)  # head room for the legend and labels
    ax.set_xticks(x, [plain_text(d) for d in domains])
    ax.set_ylabel("mIoU (%)")
    ax.set_title("mIoU per domain")
    ax.grid(axis="y", alpha=0.3)
    if methods:
        ax.legend(fontsize=8, ncols=min(len(methods), 4), loc="upper center")


def report_figure(
    rows: Sequence[Mapping[str, Any]],
    bars: Mapping[str, Mapping[str, float]],
    path: str | Path,
    palette: Palette | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Writes a PNG: per domain a row of image / ground truth / prediction, then a grouped bar chart.

    rows: dicts ``{"domain": str, "image": uint8 [H,W,3] or [3,H,W], "label": [H,W] or None,
    "pred": [H,W]}``. bars: ``{method: {domain: mIoU}}`` (percent); one bar group per domain, one
    colour per method. class_names (optional, same length as the palette) adds a colour legend.
    """
    pal = _palette_array(palette)
    n = len(rows)
    has_bars = any(len(v) for v in bars.values())
    height = 2.6 * n + (3.2 if has_bars else 0.0) + 0.4
    fig = _new_figure(12.0 if class_names is None else 13.5, max(height, 2.0))
    grid = fig.add_gridspec(n + int(has_bars), 3, height_ratios=[2.6] * n + ([3.2] if has_bars else []))
    for r, row in enumerate(rows):
        image = _to_image(row["image"])
        panels = [(image, "image"), (row.get("label"), "ground truth"), (row.get("pred"), "prediction")]
        for c, (content, title) in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if content is None:
                ax.text(0.5, 0.5, "no label", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(content if c == 0 else colorize(content, pal), interpolation="nearest")
            ax.set_title(f"{plain_text(row.get('domain', ''))}: {title}" if c == 0 else title, fontsize=9)
    if has_bars:
        _bar_chart(fig.add_subplot(grid[n, :]), bars)
    if class_names is not None:
        from matplotlib.patches import Patch

        handles = [Patch(color=pal[i] / 255.0, label=plain_text(name))
                   for i, name in enumerate(class_names[: len(pal)])]
        fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.88 if class_names is not None else 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: fig.savefig(f, format="png"))
    return path


def read_log(path: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The JSON-object lines of a ``log.jsonl`` and the numbers (1-based) of the lines that are not.

    A line cut short (a crash or a full disk mid-write, by a writer other than dgseg's atomic one) is
    reported, not fatal: the records around it are kept.
    """
    path = Path(path)
    records, bad = [], []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad.append(i)
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad.append(i)
    return records, bad


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records, bad = read_log(path)
    if bad:
        import warnings

        warnings.warn(f"{path}: {len(bad)} line(s) are not JSON objects (cut short by a crash or a full disk?) "
                      f"and are left out: line {', '.join(map(str, bad[:5]))}", stacklevel=3)
    return records


def _last_per_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per iteration, the last one written (a resumed run logs its re-run iterations again)."""
    by_step = {r["iter"]: r for r in records}
    return [by_step[k] for k in sorted(by_step)]


def plot_curves(jsonl_log_path: str | Path, out_png: str | Path) -> Path:
    """Plots training curves from a JSONL log: loss (and lr) and mIoU per domain against iteration.

    Log format, one JSON object per line:

        {"iter": 10, "loss": 1.23, "lr": 1e-4}                    # a training record
        {"iter": 100, "eval": {"cityscapes": {"mIoU": 45.6}, "bdd100k": {"mIoU": 40.1}}}

    Records without ``iter`` are skipped; ``lr`` is optional (drawn on a right-hand axis); an eval value
    may also be a plain number (the mIoU). Lines that are not JSON objects (cut short by a crash) are left
    out with a warning naming them; an iteration logged twice (after ``--resume``) is drawn with its last
    record.
    """
    path = Path(jsonl_log_path)
    records = [r for r in _read_jsonl(path) if "iter" in r]
    train = _last_per_step([r for r in records if "loss" in r])
    evals: dict[str, list[tuple[float, float]]] = {}
    for r in _last_per_step([r for r in records if r.get("eval")]):
        for domain, res in (r.get("eval") or {}).items():
            miou = res.get("mIoU") if isinstance(res, Mapping) else res
            if miou is not None:
                evals.setdefault(domain, []).append((float(r["iter"]), float(miou)))

    fig = _new_figure(12.0, 4.0)
    ax_loss, ax_miou = fig.subplots(1, 2)
    if train:
        ax_loss.plot(
            [r["iter"] for r in train], [r["loss"] for r in train], color="tab:blue", lw=1, label="loss"
        )
        ax_loss.set_ylabel("loss", color="tab:blue")
        with_lr = [r for r in train if "lr" in r]
        if with_lr:
            ax_lr = ax_loss.twinx()
            ax_lr.plot([r["iter"] for r in with_lr], [r["lr"] for r in with_lr], color="tab:orange", lw=1)
            ax_lr.set_ylabel("lr", color="tab:orange")
            ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    else:
        ax_loss.text(0.5, 0.5, "no training records", ha="center", va="center", transform=ax_loss.transAxes)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_title("training loss")
    for domain, points in evals.items():
        xs, ys = zip(*points)
        ax_miou.plot(xs, ys, marker="o", ms=3, lw=1, label=plain_text(domain))
    if evals:
        ax_miou.legend(fontsize=8)
    else:
        ax_miou.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_miou.transAxes)
    ax_miou.set_xlabel("iteration")
    ax_miou.set_ylabel("mIoU (%)")
    ax_miou.set_title("evaluation")
    ax_miou.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda f: fig.savefig(f, format="png"))
    return out
