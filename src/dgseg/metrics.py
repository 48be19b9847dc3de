"""Segmentation metrics: a confusion matrix per domain, mIoU / aAcc / mAcc, and result tables.

    m = SegMetric(num_classes=19, ignore_index=255)
    for pred, label in batches:          # int class maps, [H,W] or [B,H,W], tensors or arrays
        m.update(pred, label)
    m.all_reduce()                       # sums the confusion matrix over ranks (no-op without DDP)
    m.compute()  # {"mIoU": 61.2, "IoU": [...19], "aAcc": 93.1, "mAcc": 70.4}  (percentages)

The confusion matrix is indexed ``[ground truth, prediction]``. A class whose union (ground truth or
prediction) is empty over everything seen has IoU NaN and is left out of mIoU; likewise a class with no
ground-truth pixel has accuracy NaN and is left out of mAcc.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["SegMetric", "format_table", "per_class_table"]


def _as_index_tensor(x: Any, name: str) -> torch.Tensor:
    """An integer tensor (int64) from a tensor or array of class indices; floats are refused."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(
                f"{name} must hold integer class indices, got dtype {t.dtype}"
                + (" (logits? take .argmax(1) first)" if t.dtype.is_floating_point else "")
            )
        return t.long()
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices, got numpy dtype {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


class SegMetric:
    """Accumulates a ``K x K`` confusion matrix (int64, rows = ground truth, columns = prediction).

    Args:
        num_classes: K, the number of evaluated classes (19 Cityscapes train IDs by default).
        ignore_index: label value whose pixels are skipped (255).
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def __repr__(self) -> str:
        return (
            f"SegMetric(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.confusion.sum())})"
        )

    def reset(self) -> None:
        self.confusion.zero_()

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Adds one image ``[H,W]`` or a batch ``[B,H,W]`` of predicted and ground-truth class indices.

        Pixels whose target is ``ignore_index`` are skipped. Raises ValueError when the shapes differ,
        when a target value is neither a class in ``[0, K)`` nor ``ignore_index``, or when a prediction
        at a labelled pixel is outside ``[0, K)``.
        """
        p = _as_index_tensor(pred, "pred")
        t = _as_index_tensor(target, "target")
        if p.shape != t.shape:
            raise ValueError(
                f"pred and target must have the same shape, got pred {tuple(p.shape)} "
                f"and target {tuple(t.shape)}"
            )
        if p.dim() not in (2, 3):
            raise ValueError(f"expected [H,W] or [B,H,W] class maps, got shape {tuple(p.shape)}")
        if p.device != t.device:
            p = p.to(t.device)
        k = self.num_classes
        t = t.reshape(-1)
        p = p.reshape(-1)
        labelled = t != self.ignore_index
        bad = labelled & ((t < 0) | (t >= k))
        if bool(bad.any()):
            value = int(t[bad][0])
            raise ValueError(
                f"target value {value} is not a class in [0, {k}) nor ignore_index {self.ignore_index}"
            )
        t = t[labelled]
        p = p[labelled]
        bad = (p < 0) | (p >= k)
        if bool(bad.any()):
            raise ValueError(f"pred value {int(p[bad][0])} is not a class in [0, {k})")
        counts = torch.bincount(t * k + p, minlength=k * k).reshape(k, k)
        self.confusion += counts.to(self.confusion.device)

    def merge(self, other: SegMetric) -> SegMetric:
        """Adds another metric's counts to this one (same K and ignore_index); returns self."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge SegMetric(num_classes={other.num_classes}, ignore_index={other.ignore_index}) "
                f"into SegMetric(num_classes={self.num_classes}, ignore_index={self.ignore_index})"
            )
        self.confusion += other.confusion.to(self.confusion.device)
        return self

    def all_reduce(self) -> SegMetric:
        """Sums the confusion matrix over all ranks when torch.distributed is initialised; returns self."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        device = self.confusion.device
        t = self.confusion
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            t = t.cuda()
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        self.confusion = t.to(device)
        return self

    def compute(self) -> dict[str, Any]:
        """``{"mIoU": float, "IoU": [float]*K, "aAcc": float, "mAcc": float}``, all in percent.

        NaN marks a class with an empty union (IoU) or no ground truth (Acc); means skip NaNs and are
        NaN themselves when nothing was seen.
        """
        conf = self.confusion.cpu()
        tp = conf.diagonal().tolist()
        gt = conf.sum(1).tolist()
        pr = conf.sum(0).tolist()
        iou = [100.0 * i / (g + q - i) if g + q - i > 0 else math.nan for i, g, q in zip(tp, gt, pr)]
        acc = [100.0 * i / g if g > 0 else math.nan for i, g in zip(tp, gt)]
        total = sum(gt)
        return {
            "mIoU": _nanmean(iou),
            "IoU": iou,
            "aAcc": 100.0 * sum(tp) / total if total > 0 else math.nan,
            "mAcc": _nanmean(acc),
        }


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


# ----------------------------------------------------------------------------------------------- tables


def rpd(target_miou: float, source_miou: float) -> float:
    """rPD (relative performance under domain shift): ``100 * target mIoU / source mIoU``; NaN when either is NaN or the source
    score is not positive."""
    if math.isnan(target_miou) or math.isnan(source_miou) or source_miou <= 0:
        return math.nan
    return 100.0 * target_miou / source_miou


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    value = float(value)
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _cells(row: Sequence[Any]) -> list[str]:
    return [str(c).replace("|", "\\|") for c in row]


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table: first column left-aligned, the others (numbers) right-aligned and padded. A ``|`` in a cell
    (a class name or domain label) is escaped, so it stays in its cell instead of starting another column."""
    header, rows = _cells(header), [_cells(r) for r in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _ordered_domains(results: Mapping[str, Mapping[str, Any]], source: str | None) -> list[str]:
    if source is None:
        return list(results)
    if source not in results:
        raise ValueError(f"source domain {source!r} has no result; results hold {sorted(results)}")
    return [source] + [d for d in results if d != source]


def _default_class_names(num_classes: int) -> list[str]:
    try:
        from dgseg.data.labels import CLASSES
    except ImportError:
        CLASSES = ()
    if len(CLASSES) == num_classes:
        return list(CLASSES)
    return [f"class {i}" for i in range(num_classes)]


def _check_class_names(results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> None:
    for domain, res in results.items():
        if "IoU" in res and len(res["IoU"]) != len(class_names):
            raise ValueError(
                f"domain {domain!r} has {len(res['IoU'])} per-class IoUs but {len(class_names)} class names"
            )


def mean_domains(
    results: Mapping[str, Mapping[str, Any]], source: str | None = None, mean_over: Sequence[str] | None = None
) -> list[str]:
    """The domains the mean row averages: ``mean_over`` (checked against ``results``; Rein's
    ``mean_used_keys`` of ``rein/dg_metrics.py``) or, when None, every domain but the source."""
    if mean_over is None:
        return [d for d in results if d != source]
    missing = [d for d in mean_over if d not in results]
    if missing:
        raise ValueError(f"mean over {missing}: no such domain; results hold {sorted(results)}")
    return list(mean_over)


def mean_miou(
    results: Mapping[str, Mapping[str, Any]], source: str | None = None, mean_over: Sequence[str] | None = None
) -> float:
    """The mean mIoU over :func:`mean_domains` (NaN domains skipped)."""
    return _nanmean([float(results[d].get("mIoU", math.nan)) for d in mean_domains(results, source, mean_over)])


def format_table(
    results: Mapping[str, Mapping[str, Any]],
    class_names: Sequence[str] | None = None,
    source: str | None = None,
    extra_columns: Sequence[str] = (),
    mean_over: Sequence[str] | None = None,
) -> str:
    """A markdown table of mIoU / aAcc per domain (the source first when given).

    ``results`` maps a domain name to ``SegMetric.compute()``'s dict. With ``source`` the source domain
    (in-domain validation) is the first row and an ``rPD`` column gives ``100 * mIoU_target /
    mIoU_source`` for each target (relative performance under domain shift). A last row ``mean (targets)`` averages the
    target domains (all domains but the source) when there are two or more; with ``mean_over`` the row
    ``mean (a, b, ...)`` averages exactly those domains. ``class_names``, when given, is checked against
    the length of each result's per-class IoU list. ``extra_columns`` are result keys shown after aAcc
    (e.g. ``mIoU_synthia16``; averaged in the mean row like mIoU).
    """
    if class_names is not None:
        _check_class_names(results, class_names)
    domains = _ordered_domains(results, source)
    targets = [d for d in domains if d != source]
    src_miou = float(results[source]["mIoU"]) if source is not None else math.nan
    has_rpd = source is not None

    header = ["domain", "mIoU", "aAcc", *extra_columns] + (["rPD"] if has_rpd else [])
    rows = []
    for d in domains:
        miou = float(results[d].get("mIoU", math.nan))
        row = [f"{d} (source)" if d == source else d, _fmt(miou), _fmt(results[d].get("aAcc"))]
        row += [_fmt(results[d].get(c)) for c in extra_columns]
        if has_rpd:
            row.append("-" if d == source else _fmt(rpd(miou, src_miou)))
        rows.append(row)
    averaged = mean_domains(results, source, mean_over)
    if len(targets) >= 2 or mean_over is not None:
        mean_value = _nanmean([float(results[d].get("mIoU", math.nan)) for d in averaged])
        mean_aacc = _nanmean([float(results[d].get("aAcc", math.nan)) for d in averaged])
        label = "mean (targets)" if mean_over is None else f"mean ({', '.join(averaged)})"
        row = [label, _fmt(mean_value), _fmt(mean_aacc)]
        row += [_fmt(_nanmean([float(results[d].get(c, math.nan)) for d in averaged])) for c in extra_columns]
        if has_rpd:
            row.append(_fmt(rpd(mean_value, src_miou)))
        rows.append(row)
    return _markdown(header, rows)


def per_class_table(
    results: Mapping[str, Mapping[str, Any]],
    class_names: Sequence[str] | None = None,
    source: str | None = None,
) -> str:
    """A markdown table of per-class IoU: one row per class, one column per domain (source first).

    ``class_names`` defaults to ``dgseg.data.labels.CLASSES`` when its length matches, else
    ``class 0 .. class K-1``. A NaN IoU (class never seen in that domain) prints as ``-``. The last row
    is the mIoU.
    """
    domains = _ordered_domains(results, source)
    if not domains:
        return _markdown(["class"], [])
    k = len(results[domains[0]]["IoU"])
    names = list(class_names) if class_names is not None else _default_class_names(k)
    _check_class_names(results, names)
    header = ["class"] + [f"{d} (source)" if d == source else d for d in domains]
    rows = [[name] + [_fmt(results[d]["IoU"][i]) for d in domains] for i, name in enumerate(names)]
    rows.append(["mIoU"] + [_fmt(results[d].get("mIoU")) for d in domains])
    return _markdown(header, rows)
