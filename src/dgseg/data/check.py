"""``dgseg data check NAME ROOT [--split S] [--split-file F]``: decode every file of a dataset, print the counts,
the class pixel histogram, warnings (classes without a pixel, raw values a ``label_map`` leaves to ignore, label
files read as raw IDs that seem to hold train IDs) and every problem found; the exit code is 1 when there is any
problem (warnings alone keep it 0). An option that does not fit (a ``--split`` the dataset does not have, a
``--split-file`` not found, ``--classes``, ``--label-map``, an unknown NAME) is a ValueError naming it: exit 2, as every command's
usage errors."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from dgseg.image_size import DEFAULT_PATCH, SizeRule, image_size_problem

from .base import NoPairsError, SplitFileNotFound
from .class_remap import declared_classes
from .classes import ClassSet, folder_id_map, index_remap, load_class_set
from .datasets import DataError, build_dataset, dataset_names, unknown_labels_policy
from .labels import CLASSES, IGNORE_INDEX
from .reading import SplitNotFound

RAW_VALUES = 65536
"""Label files hold raw values 0..65535 (8 or 16 bit), the range a ``label_map`` key may take."""
SHOWN = 10
"""The implicitly ignored raw values listed one by one (the most pixels first); the rest are summed."""


@dataclass
class Unlisted:
    """A raw value that a ``label_map`` does not list (so read as ignore): its pixels, how many files hold it,
    the first two of them."""

    pixels: int = 0
    files: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``class_pixels`` is int64 [K + 1]: the K classes of
    ``class_names`` (the 19 Cityscapes classes by default), then ignore. ``unlisted``: with a ``label_map``,
    the raw values it does not list (read as ignore by definition), value -> :class:`Unlisted`; None without
    one. ``train_id_like``: the label files read as raw IDs without a problem whose values look like train IDs
    (:func:`dgseg.data.label_forms.train_id_hint`), as (path, hint)."""

    name: str
    root: str | None
    split: str
    listed: int = 0
    read: int = 0
    class_names: tuple[str, ...] = CLASSES
    class_pixels: np.ndarray | None = None
    image_sizes: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    unlisted: dict[int, Unlisted] | None = None
    train_id_like: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.class_pixels is None:
            self.class_pixels = np.zeros(len(self.class_names) + 1, np.int64)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def warnings(self) -> list[str]:
        """What is legal but likely a mistake: raw values the label_map leaves to ignore without listing them,
        classes without a pixel in the samples read. Printed by :meth:`format`; the check still passes."""
        found = []
        total = int(self.class_pixels.sum())
        if self.unlisted:
            ranked = sorted(self.unlisted.items(), key=lambda kv: (-kv[1].pixels, kv[0]))
            lines = [f"raw {v}: {100.0 * u.pixels / max(total, 1):.2f}% of all pixels ({u.pixels:,}) in {u.files} "
                     f"file{'s' if u.files > 1 else ''}, e.g. {', '.join(u.examples)}" for v, u in ranked[:SHOWN]]
            if len(ranked) > SHOWN:
                rest = sum(u.pixels for _, u in ranked[SHOWN:])
                more = len(ranked) - SHOWN
                lines.append(f"and {more} more value{'s' if more > 1 else ''}: {100.0 * rest / max(total, 1):.2f}% of "
                             f"all pixels ({rest:,})")
            found.append("label values the label_map does not list are read as 255 (ignore); map each to its class, "
                         "or list it as VALUE: 255 to mean ignore:" + "".join("\n        " + x for x in lines))
        if self.train_id_like:
            n = len(self.train_id_like)
            path, hint = self.train_id_like[0]
            found.append(f"{n} label file{'s' if n > 1 else ''} read as raw label IDs "
                         f"seem{'s' if n == 1 else ''} to hold train IDs; the first, {path}: {hint.lstrip('; ')}")
        k = len(self.class_names)
        empty = [f"{i} {self.class_names[i]}" for i in range(k) if self.class_pixels[i] == 0]
        if total and empty:
            where = (f"split {self.split}" if self.read == self.listed else
                     f"the {self.read} of {self.listed} samples read")
            found.append(f"classes without a pixel in {where}: {', '.join(empty)}")
        return found

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
        k = len(self.class_names)
        labelled = int(self.class_pixels[:k].sum())
        if total:
            lines.append("  class pixels (share of labelled pixels):")
            for i, name in enumerate(self.class_names):
                n = int(self.class_pixels[i])
                lines.append(f"    {i:3d} {name:<14s} {100.0 * n / max(labelled, 1):6.2f}%  {n:,}")
            n = int(self.class_pixels[k])
            lines.append(
                f"    {IGNORE_INDEX:3d} {'ignore':<14s} {100.0 * n / total:6.2f}% of all pixels  {n:,}"
            )
        warned = self.warnings
        if warned:
            lines.append(f"  warnings ({len(warned)}):")
            lines += [f"    - {w}" for w in warned]
        if self.problems:
            lines.append(f"  problems ({len(self.problems)}):")
            lines += [f"    - {p}" for p in self.problems]
            lines.append(f"FAILED: {len(self.problems)} problem(s)")
        else:
            lines.append("  problems: none")
            lines.append(f"OK ({len(warned)} warning{'s' if len(warned) > 1 else ''})" if warned else "OK")
        return "\n".join(lines)


def check_dataset(
    name: str, root: str | None, split: str = "train", limit: int | None = None,
    classes: str | ClassSet | None = None, patch_size: int = DEFAULT_PATCH, unknown_labels: str = "auto",
    **kwargs: Any
) -> CheckReport:
    """Scan a dataset: list and pair its files, decode every image and label (or the first ``limit``),
    and collect the class histogram and every problem (unpaired files, unreadable or truncated
    files, size mismatches, label values outside the dataset's ID table, images too small for a model
    with ``patch_size``-px patches). Each file with label values outside the table says what training does
    with them under ``data.unknown_labels`` = ``unknown_labels`` (the config's default: auto). A ``split`` the
    dataset does not have, ``classes`` that are no class set or do not fit the dataset, an invalid
    ``label_map``: ValueError naming the option (``dgseg data check`` exits 2), not a problem of the dataset.

    ``classes`` (a preset, a classes file or a ClassSet; default cityscapes) names the histogram rows;
    for ``folder`` it also sets the class count, and ``kwargs`` may carry ``label_map`` or
    ``reduce_zero_label``. With a ``label_map`` the raw values it does not list (ignore by definition) are
    counted in ``report.unlisted``, from the same decoded labels."""
    remap = None
    cs = load_class_set(classes, "--classes")  # the options' errors are the caller's: ValueErrors, not problems
    declared = declared_classes(name)
    if declared is None:
        kwargs.setdefault("num_classes", cs.num_classes)
        folder_id_map(kwargs["num_classes"], kwargs.get("label_map"), kwargs.get("reduce_zero_label", False),
                      "--label-map")
    else:  # the experiment's classes are a subset of the dataset's: remapped by name
        remap = index_remap(declared, cs, f"--classes: {name} with classes {cs.source}")
    report = CheckReport(name, None if root is None else str(root), split, class_names=cs.names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = build_dataset(name, root, split, on_error="skip", **kwargs)
    except SplitNotFound as e:
        raise ValueError(f"--split: {e}") from None
    except SplitFileNotFound as e:
        raise ValueError(f"--split-file: {e}") from None
    except NoPairsError as e:  # every file it names is a problem of its own
        report.problems += [e.summary, *(f"{path}: {reason}" for path, reason in e.problems)]
        return report
    except (DataError, ValueError, OSError) as e:
        report.problems.append(str(e))
        return report
    report.listed = len(ds)
    listed = None
    hint = getattr(ds, "label_form_hint", None)
    if kwargs.get("label_map") is not None:  # valid: the dataset was built with it
        listed = np.zeros(RAW_VALUES, bool)
        listed[[int(v) for v in kwargs["label_map"]]] = True
        report.unlisted = {}
    report.problems += [f"{path}: {reason}" for path, reason in getattr(ds, "skipped", [])]
    n = len(ds) if limit is None else min(limit, len(ds))
    for i in range(n):
        try:
            if hint is None:  # the synthetic benchmark: no label files
                image, label, unknown = ds.read(i)
            else:
                image, label, unknown, raw = ds.read_with_raw(i)
            if listed is not None:
                _count_unlisted(report.unlisted, raw, listed, str(ds.samples[i].label))
        except DataError as e:
            report.problems.append(str(e))
            continue
        report.read += 1
        small = image_size_problem(image.shape[0], image.shape[1], SizeRule(patch_size))
        if small:
            where = ds.samples[i].image if hasattr(ds, "samples") else f"{name} sample {i}"
            report.problems.append(f"{where}: {small}")
        form = "" if hint is None else hint(i, raw)
        if unknown:
            sample = ds.samples[i]
            report.problems.append(f"{sample.label}: label values {unknown} are not defined by "
                                   f"{sample.id_map.name}; {training_reads_unknown(name, unknown_labels)}{form}")
        elif form:
            report.train_id_like.append((str(ds.samples[i].label), form))
        if remap is not None:
            label = remap[label]
        k = len(cs.names)
        counts = np.bincount(label.reshape(-1), minlength=256)
        report.class_pixels[:k] += counts[:k]
        report.class_pixels[k] += counts[k:].sum()
        report.image_sizes[(image.shape[1], image.shape[0])] += 1
    return report


def _count_unlisted(unlisted: dict[int, Unlisted], raw: np.ndarray, listed: np.ndarray, path: str) -> None:
    """Adds the pixels of ``raw`` whose values ``listed`` (bool [65536]) lacks to ``unlisted``, with ``path``.
    Values outside 0..65535 are no label_map's: the ID table reports them as unknown."""
    values = raw.reshape(-1)
    if not (values.dtype.kind == "u" and values.dtype.itemsize <= 2):
        values = values[(values >= 0) & (values < RAW_VALUES)]
    counts = np.bincount(values, minlength=RAW_VALUES)
    for v in np.flatnonzero((counts > 0) & ~listed).tolist():
        u = unlisted.setdefault(v, Unlisted())
        u.pixels += int(counts[v])
        u.files += 1
        if len(u.examples) < 2:
            u.examples.append(path)


def training_reads_unknown(name: str, setting: str = "auto") -> str:
    """What training does with label values dataset ``name`` does not define, under ``data.unknown_labels``
    ``setting`` (resolved as training resolves it: :func:`unknown_labels_policy`), and how to change it."""
    policy = unknown_labels_policy(name, setting)
    why = f"data.unknown_labels={setting}" + (f" is {policy} for {name} datasets" if setting == "auto" else "")
    if policy != "error":
        return f"training reads them as 255, ignore ({why}{', with a warning' if policy == 'warn' else ''})"
    fix = "pass --set data.unknown_labels=ignore to read them as 255 (ignore)"
    if name.lower() == "folder":
        fix += ", or give the dataset a label_map from raw values to class indices (--label-map here)"
    return f"training stops on these ({why}); {fix}"


def run_check(
    name: str, root: str | None, split: str = "train", out: TextIO | None = None, limit: int | None = None,
    classes: str | None = None, label_map: dict | None = None, reduce_zero_label: bool = False,
    patch_size: int = DEFAULT_PATCH, unknown_labels: str = "auto", split_file: str | None = None,
) -> int:
    """Check a dataset and print the report to ``out`` (stdout); return 0 when clean, 1 otherwise (a problem
    of the dataset). ValueError for an option that does not fit: ``dgseg`` exits 2, as for a usage error.

    ``root`` None (or "none", "-", "") is for the synthetic benchmark. ``classes``, ``label_map``,
    ``reduce_zero_label`` and ``split_file`` as in a config, ``unknown_labels`` as ``data.unknown_labels`` (see
    :func:`check_dataset`)."""
    if name.lower() not in dataset_names():  # an argument that does not fit, not a problem of a dataset
        raise ValueError(f"NAME '{name}': unknown dataset; expected one of {', '.join(dataset_names())}")
    if patch_size < 1:
        raise ValueError(f"--patch-size {patch_size}: expected the model's patch size in pixels, 1 or more "
                         "(e.g. 14 or 16)")
    given = [o for o, v in (("--label-map", label_map is not None), ("--reduce-zero-label", reduce_zero_label)) if v]
    if given and name.lower() != "folder":  # each built-in dataset reads its own IDs
        raise ValueError(f"{' and '.join(given)}: for 'folder' datasets only; '{name}' maps its own label IDs to "
                         "the Cityscapes classes (pick a subset of them with --classes, e.g. synthia16)")
    if split_file is not None and name.lower().startswith("synthetic-"):
        raise ValueError(f"--split-file {split_file}: {name} is generated, it has no files to select; expected a "
                         "dataset read from files")
    out = sys.stdout if out is None else out
    if root is not None and str(root).lower() in ("", "none", "-"):
        root = None
    extra: dict[str, Any] = {} if split_file is None else {"split_file": split_file}
    if label_map is not None:
        extra["label_map"] = label_map
    if reduce_zero_label:
        extra["reduce_zero_label"] = True
    report = check_dataset(name, root, split, limit=limit, classes=classes, patch_size=patch_size,
                           unknown_labels=unknown_labels, **extra)
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
    add_check_options(p)
    p.set_defaults(func=main_check)
    return p


def add_check_options(p: argparse.ArgumentParser) -> None:
    """``--split-file``, ``--patch-size`` and the class set the histogram is in: ``--classes``, ``--label-map``,
    ``--reduce-zero-label``."""
    p.add_argument("--split-file", help="check the images this split file lists (a config entry's split_file)")
    p.add_argument("--patch-size", type=int, default=DEFAULT_PATCH,
                   help="flag images too small for a model with this patch size (default 16)")
    p.add_argument("--classes", help="class set: cityscapes (default), synthia16, synthia13 or a classes YAML file")
    p.add_argument("--label-map", help="folder only: raw value -> class index as YAML, e.g. '{10: 0, 20: 1}'")
    p.add_argument("--reduce-zero-label", action="store_true", help="folder only: 0 -> ignore, v -> v - 1")


def check_options(args: argparse.Namespace) -> dict[str, Any]:
    """run_check kwargs of :func:`add_check_options`'s options; ValueError for an unreadable --label-map."""
    import yaml

    from dgseg.strict_yaml import DuplicateKeyError, load_yaml_text

    label_map = getattr(args, "label_map", None)
    if label_map is not None:
        try:
            label_map = load_yaml_text(label_map)
        except DuplicateKeyError as e:  # PyYAML would keep the last one silently
            raise ValueError(f"--label-map '{label_map}': {e}") from None
        except yaml.YAMLError as e:
            raise ValueError(f"--label-map: not valid YAML ({e}); expected e.g. '{{10: 0, 20: 1}}'") from e
        if not isinstance(label_map, dict):
            raise ValueError(f"--label-map: expected a mapping such as '{{10: 0, 20: 1}}', got {label_map!r}")
    return {"classes": getattr(args, "classes", None), "label_map": label_map,
            "reduce_zero_label": getattr(args, "reduce_zero_label", False),
            "split_file": getattr(args, "split_file", None),
            "patch_size": getattr(args, "patch_size", DEFAULT_PATCH)}


def main_check(args: argparse.Namespace) -> int:
    """Entry point for parsed ``check`` arguments; returns the exit code."""
    return run_check(args.name, args.root, args.split, limit=getattr(args, "limit", None), **check_options(args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m dgseg.data.check")
    add_check_parser(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    raise SystemExit(parsed.func(parsed))
