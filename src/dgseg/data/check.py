"""``dgseg data check NAME ROOT [--split S]``: decode every file of a dataset, print the counts, the
class pixel histogram and every problem found; the exit code is non-zero when there is any problem."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from .datasets import DataError, build_dataset
from .labels import CLASSES, IGNORE_INDEX, NUM_CLASSES


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``class_pixels`` is int64 [20]: the 19 classes, then ignore."""

    name: str
    root: str | None
    split: str
    listed: int = 0
    read: int = 0
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, np.int64))
    image_sizes: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [
            f"dataset {self.name}, split {self.split}, root {self.root}",
            f"  samples: {self.listed} listed, {self.read} read",
        ]
        if self.image_sizes:
            sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.image_sizes.most_common(5))
            more = f" and {len(self.image_sizes) - 5} more" if len(self.image_sizes) > 5 else ""
            lines.append(f"  image sizes (WxH): {sizes}{more}")
        total = int(self.class_pixels.sum())
        labelled = int(self.class_pixels[:NUM_CLASSES].sum())
        if total:
            lines.append("  class pixels (share of labelled pixels):")
            for i, name in enumerate(CLASSES):
                n = int(self.class_pixels[i])
                lines.append(f"    {i:3d} {name:<14s} {100.0 * n / max(labelled, 1):6.2f}%  {n:,}")
            n = int(self.class_pixels[NUM_CLASSES])
            lines.append(
                f"    {IGNORE_INDEX:3d} {'ignore':<14s} {100.0 * n / total:6.2f}% of all pixels  {n:,}"
            )
        if self.problems:
            lines.append(f"  problems ({len(self.problems)}):")
            lines += [f"    - {p}" for p in self.problems]
            lines.append(f"FAILED: {len(self.problems)} problem(s)")
        else:
            lines.append("  problems: none")
            lines.append("OK")
        return "\n".join(lines)


def check_dataset(
    name: str, root: str | None, split: str = "train", limit: int | None = None, **kwargs: Any
) -> CheckReport:
    """Scan a dataset: list and pair its files, decode every image and label (or the first ``limit``),
    and collect the class histogram and every problem (unpaired files, unreadable or truncated
    files, size mismatches, label values outside the dataset's ID table)."""
    report = CheckReport(name, None if root is None else str(root), split)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = build_dataset(name, root, split, on_error="skip", **kwargs)
    except (DataError, ValueError, OSError) as e:
        report.problems.append(str(e))
        return report
    report.listed = len(ds)
    report.problems += [f"{path}: {reason}" for path, reason in getattr(ds, "skipped", [])]
    n = len(ds) if limit is None else min(limit, len(ds))
    for i in range(n):
        try:
            image, label, unknown = ds.read(i)
        except DataError as e:
            report.problems.append(str(e))
            continue
        report.read += 1
        if unknown:
            sample = ds.samples[i]
            report.problems.append(
                f"{sample.label}: label values {unknown} are not defined by "
                f"{sample.id_map.name} (read as 255, ignore)"
            )
        counts = np.bincount(label.reshape(-1), minlength=256)
        report.class_pixels[:NUM_CLASSES] += counts[:NUM_CLASSES]
        report.class_pixels[NUM_CLASSES] += counts[NUM_CLASSES:].sum()
        report.image_sizes[(image.shape[1], image.shape[0])] += 1
    return report


def run_check(
    name: str, root: str | None, split: str = "train", out: TextIO | None = None, limit: int | None = None
) -> int:
    """Check a dataset and print the report to ``out`` (stdout); return 0 when clean, 1 otherwise.

    ``root`` None (or "none", "-", "") is for the synthetic benchmark."""
    out = sys.stdout if out is None else out
    if root is not None and str(root).lower() in ("", "none", "-"):
        root = None
    report = check_dataset(name, root, split, limit=limit)
    print(report.format(), file=out)
    return 0 if report.ok else 1


def add_check_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``check NAME [ROOT] [--split S] [--limit N]`` to an argparse subparsers object; the parsed
    args carry ``func=main_check``."""
    p = subparsers.add_parser(
        "check", help="decode every file of a dataset and report problems", description=__doc__
    )
    p.add_argument("name", help="dataset name, e.g. cityscapes, gtav, acdc-night, synthetic-fog")
    p.add_argument(
        "root", nargs="?", default=None, help="dataset folder (omit, or 'none', for the synthetic benchmark)"
    )
    p.add_argument("--split", default="train", help="train, val, test or the dataset's own folder name")
    p.add_argument("--limit", type=int, default=None, help="check only the first N samples")
    p.set_defaults(func=main_check)
    return p


def main_check(args: argparse.Namespace) -> int:
    """Entry point for parsed ``check`` arguments; returns the exit code."""
    return run_check(args.name, args.root, args.split, limit=getattr(args, "limit", None))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m dgseg.data.check")
    add_check_parser(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    raise SystemExit(parsed.func(parsed))
