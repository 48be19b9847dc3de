"""The report's pictures (matplotlib, Agg; PNG files next to the page): bars, per-class heat maps,
confusion matrices, prediction grids, curves. Each function writes one file atomically and returns it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dgseg.atomic import write_atomic
from dgseg.report.runs import RunRecord
from dgseg.viz import plain_text


def _save(fig, path: Path) -> Path:
    return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=90))


def _figure(w: float, h: float):
    from dgseg.viz import _new_figure

    return _new_figure(w, h)


def bars(runs: list[RunRecord], domains: list[str], path: Path) -> Path:
    fig = _figure(max(7.0, 1.1 * (len(domains) + 1)), 3.6)
    ax = fig.subplots()
    cols = domains + ["mean targets"]
    width = 0.8 / max(len(runs), 1)
    for i, run in enumerate(runs):
        vals = [run.domains.get(d, {}).get("mIoU", np.nan) for d in domains] + [run.mean_targets()]
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(cols))]
        ax.bar(xs, [np.nan if v is None else v for v in vals], width, label=plain_text(run.name))
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([plain_text(c.replace("synthetic-", "")) for c in cols], rotation=20, fontsize=8)
    ax.set_ylabel("mIoU (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def heatmaps(runs: list[RunRecord], domains: list[str], path: Path, baseline: RunRecord | None = None) -> Path:
    """classes x domains IoU, one panel per run; with a baseline, the other runs show run - baseline. Rows are
    class names (every name of any run, in order of first appearance), so runs with different class sets line
    up by name; a class a run does not have is blank in its panel. The figure is sized from its labels (class
    names, domain labels, panel titles) and laid out by matplotlib's constrained layout: every label is whole."""
    shown = [r for r in runs if r is not baseline] if baseline is not None else runs
    classes = list(dict.fromkeys(n for r in shown + ([baseline] if baseline is not None else []) for n in r.classes))
    labels = [d.replace("synthetic-", "") for d in domains]
    titles = [f"{r.name} - {baseline.name}" if baseline is not None else r.name for r in shown]
    fig = _figure(*_heatmap_size(classes, labels, titles))
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(shown), sharey=True))
    for ax, run, title in zip(axes, shown, titles):
        grid = np.array([[_iou(run, d, name) for d in domains] for name in classes], dtype=float)
        if baseline is not None:
            grid = grid - np.array([[_iou(baseline, d, name) for d in domains] for name in classes])
            im = ax.imshow(grid, cmap="RdBu", vmin=-30, vmax=30, aspect="auto")
        else:
            im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        ax.set_title(plain_text(title), fontsize=8)
        for (k, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, k, f"{v:.0f}", ha="center", va="center", fontsize=5, color="w" if baseline is None else "k")
        ax.set_xticks(range(len(domains)))
        ax.set_xticklabels([plain_text(t) for t in labels], rotation=60, ha="right", rotation_mode="anchor", fontsize=6)
        ax.set_yticks(range(len(classes)))
        ax.set_yticklabels([plain_text(n) for n in classes], fontsize=6)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="IoU difference" if baseline is not None else "IoU (%)")
    return _save(fig, path)


def _text_width(text: str, points: float) -> float:
    """The width in inches of ``text`` set in matplotlib's default font at ``points``."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    return TextToPath().get_text_width_height_descent(text, FontProperties(size=points), ismath=False)[0] / 72


def _heatmap_size(classes: list[str], labels: list[str], titles: list[str]) -> tuple[float, float]:
    """(width, height) in inches that hold the heat maps' panels (0.55 in per domain, 0.22 in per class) with
    the class names left of the first, the domain labels below each (60 degrees, right end at the tick),
    the titles above and the colour bar on the right, with room to spare for the layout's paddings."""
    cell = 0.55
    slant = [_text_width(t, 6) for t in labels]  # along the text; 60 degrees: cos 0.5, sin 0.87
    left = max([_text_width(c, 6) for c in classes] + [w * 0.5 - (j + 0.5) * cell for j, w in enumerate(slant)],
               default=0.0)
    panels = sum(max(cell * len(labels), _text_width(t, 8) + 0.2) for t in titles)
    width = 0.4 + left + panels + 0.15 * len(titles) + 1.0  # 1.0: the colour bar, its ticks and its label
    height = 0.6 + 0.22 * max(len(classes), 3) + 0.87 * max(slant, default=0) + 0.15
    return width, height


def _iou(run: RunRecord, domain: str, name: str) -> float:
    """The run's IoU of the class ``name`` on ``domain``; NaN when the run has no such class or value."""
    if name not in run.classes:
        return np.nan
    k = run.classes.index(name)
    values = run.domains.get(domain, {}).get("IoU") or []
    v = values[k] if k < len(values) else None
    return np.nan if v is None else float(v)


def confusion(run: RunRecord, domain: str, path: Path) -> Path | None:
    """Row-normalised confusion matrix (rows: ground truth) of one domain; None when the run has none. Sized
    from its class names and title, laid out by matplotlib's constrained layout: every label is whole."""
    matrix = run.domains.get(domain, {}).get("confusion")
    if not matrix:
        return None
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.full_like(m, np.nan), where=rows > 0)
    k = len(m)
    names = run.classes[:k]
    title = f"{run.name}: {domain}"
    longest = max((_text_width(n, 6) for n in names), default=0.0)  # sizes the figure: every label whole
    fig = _figure(max(0.6 + longest + 0.26 * k + 1.2, _text_width(title, 8) + 0.3), 1.0 + 0.24 * k + longest)
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k))
    ax.set_xticklabels([plain_text(n) for n in names], rotation=90, fontsize=6)
    ax.set_yticks(range(k))
    ax.set_yticklabels([plain_text(n) for n in names], fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.suptitle(plain_text(title), fontsize=8)  # centred on the figure, which is as wide as it
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the row")
    return _save(fig, path)


def prediction_row(runs: list[RunRecord], domain: str, index: int, path: Path) -> Path | None:
    """image | ground truth | each run's prediction, side by side (from the runs' stored examples)."""
    from PIL import Image

    from dgseg.viz import colorize

    owner = next((r for r in runs if len(r.examples.get(domain, [])) > index), None)
    if owner is None:
        return None
    ex = owner.examples[domain][index]
    image = np.asarray(Image.open(ex["image"]).convert("RGB"))
    label = np.asarray(Image.open(ex["label"]))
    tiles = [image, colorize(label, owner.palette)]
    for run in runs:
        items = run.examples.get(domain, [])
        if len(items) > index:
            pred_image = Image.open(items[index]["pred"])
            if pred_image.mode not in ("L", "P"):
                raise ValueError(f"report: {items[index]['pred']}: a {pred_image.mode} image; expected a class-index "
                                 "PNG (one channel), as dgseg eval writes in examples/")
            if pred_image.size != (label.shape[1], label.shape[0]):  # a run evaluated at another size
                pred_image = pred_image.resize((label.shape[1], label.shape[0]), Image.NEAREST)
            tiles.append(colorize(np.asarray(pred_image), run.palette))
        else:
            tiles.append(np.full_like(image, 128))  # this run stored no prediction for the scene
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
    return write_atomic(path, lambda f: Image.fromarray(row).save(f, format="JPEG", quality=85))


def legend(classes: list[str], palette: np.ndarray, path: Path) -> Path:
    cols = min(len(classes), 10)
    rows = -(-len(classes) // cols)
    fig = _figure(1.3 * cols, 0.3 * rows + 0.1)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    for i, name in enumerate(classes):
        r, c = divmod(i, cols)
        y = 1 - (r + 0.5) / rows
        ax.add_patch(_rect((c / cols + 0.005, y - 0.3 / rows), 0.15 / cols, 0.6 / rows, palette[i] / 255.0))
        ax.text(c / cols + 0.18 / cols, y, plain_text(name), va="center", fontsize=7)
    return _save(fig, path)


def _rect(xy, w, h, colour):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, w, h, facecolor=colour, edgecolor="k", lw=0.3)


def curves(runs: list[RunRecord], path: Path) -> Path:
    """Total loss, learning rate and validation mIoU (mean over the logged domains) of every run."""
    fig = _figure(12.0, 3.4)
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
    for run in runs:
        train = [r for r in run.log if "loss" in r and "iter" in r]
        if train:
            line = ax_loss.plot([r["iter"] for r in train], [r["loss"] for r in train], lw=1, label=plain_text(run.name))[0]
            lr = [r for r in train if "lr" in r]
            ax_lr.plot([r["iter"] for r in lr], [r["lr"] for r in lr], lw=1, color=line.get_color())
        vals = [(r["iter"], np.nanmean([v["mIoU"] if isinstance(v, dict) else v for v in r["eval"].values()]))
                for r in run.log if isinstance(r.get("eval"), dict) and r["eval"] and "iter" in r]
        if vals:
            ax_val.plot(*zip(*vals), marker="o", ms=3, lw=1, label=plain_text(run.name))
    for ax, title in ((ax_loss, "training loss"), (ax_lr, "learning rate"), (ax_val, "validation mIoU (mean of domains)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if any(r.log for r in runs):
        ax_loss.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
