"""Listing a dataset's files and pairing images with labels by stem; reading split files.

:func:`pair_files` returns the :class:`Sample` pairs and the problems found (duplicates, an image
without a label, a label without an image, an image file of a suffix the dataset does not read) as
(path, reason); the dataset decides whether a problem raises or is skipped: nothing is left out without
a word. Only names are read here: files are decoded by :mod:`dgseg.data.reading` when an item is read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .labels import IdMap
from .reading import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Sample:
    """One image/label pair. ``id_map`` maps the raw label file to train IDs; ``reader`` is ``png8``
    (PIL: palette/grayscale 8- or 16-bit) or ``png16`` (first channel of a 16-bit PNG, any channels)."""

    image: Path
    label: Path
    id_map: IdMap
    reader: str = "png8"


def _list_files(folder: Path, suffixes: Sequence[str], recursive: bool) -> list[Path]:
    lowered = tuple(s.lower() for s in suffixes)
    if recursive:
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(lowered)]
        return found
    return sorted(p for p in folder.iterdir() if p.name.lower().endswith(lowered) and p.is_file())


def _stem(name: str, suffix: str, prefix: str) -> str:
    stem = name[: len(name) - len(suffix)]
    return stem[len(prefix) :] if prefix and stem.startswith(prefix) else stem


def _match_suffix(name: str, suffixes: Sequence[str]) -> str | None:
    low = name.lower()
    for s in sorted(suffixes, key=len, reverse=True):
        if low.endswith(s.lower()):
            return name[len(name) - len(s) :]
    return None


def pair_files(
    image_dir: Path,
    label_dir: Path,
    image_suffixes: Sequence[str],
    label_kinds: Sequence[tuple[str, IdMap]],
    *,
    recursive: bool = False,
    image_prefix: str = "",
    label_prefix: str = "",
    reader: str = "png8",
    only_stems: set[str] | None = None,
) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Pair images and labels by stem (file name less suffix and prefix).

    ``label_kinds`` lists (file suffix, IdMap) in order of preference: when a stem has several label
    files (e.g. ``_labelTrainIds.png`` and ``_labelIds.png``) the first kind is used. Returns the pairs
    (sorted by image path) and the problems found as (path, reason): duplicate stems, an image without
    a label, a label without an image, an image file (:data:`IMAGE_SUFFIXES`) whose name does not end in
    one of ``image_suffixes``, a stem of ``only_stems`` (a split file) without an image.
    """
    problems: list[tuple[str, str]] = []
    images: dict[str, Path] = {}
    for path in _list_files(image_dir, (*image_suffixes, *IMAGE_SUFFIXES), recursive):
        suffix = _match_suffix(path.name, image_suffixes)
        stem = _stem(path.name, suffix or _match_suffix(path.name, IMAGE_SUFFIXES) or path.suffix, image_prefix)
        if only_stems is not None and stem not in only_stems:
            continue
        if suffix is None:  # an image file, but not one of the dataset's: say so rather than drop it
            problems.append(
                (
                    str(path),
                    f"image file not read by this dataset: expected names ending in "
                    f"{' or '.join(image_suffixes)}; convert or rename it, or move it out of {image_dir}",
                )
            )
            continue
        if stem in images:
            problems.append(
                (
                    str(path),
                    f"duplicate image stem '{stem}' (also {images[stem]}); expected one image per stem",
                )
            )
            continue
        images[stem] = path

    suffixes = [s for s, _ in label_kinds]
    rank = {s.lower(): i for i, s in enumerate(suffixes)}
    labels: dict[str, tuple[int, Path, IdMap]] = {}
    for path in _list_files(label_dir, suffixes, recursive):
        suffix = _match_suffix(path.name, suffixes)
        assert suffix is not None
        kind = rank[suffix.lower()]
        stem = _stem(path.name, suffix, label_prefix)
        if only_stems is not None and stem not in only_stems:
            continue
        if stem in labels:
            old_kind, old_path, _ = labels[stem]
            if old_kind == kind:
                problems.append(
                    (
                        str(path),
                        f"duplicate label stem '{stem}' (also {old_path}); expected one label per stem",
                    )
                )
                continue
            if old_kind < kind:
                continue
        labels[stem] = (kind, path, label_kinds[kind][1])

    samples = []
    for stem, image in images.items():
        if stem not in labels:
            want = " or ".join(f"{label_prefix}{stem}{s}" for s in suffixes)
            problems.append((str(image), f"image without a label: expected {want} under {label_dir}"))
            continue
        _, label, id_map = labels[stem]
        samples.append(Sample(image, label, id_map, reader))
    if only_stems is not None:
        where = f"in {image_dir} or its sub-folders" if recursive else f"in {image_dir}"
        for stem in sorted(only_stems - set(images)):
            want = " or ".join(f"{image_prefix}{stem}{s}" for s in image_suffixes)
            problems.append(
                (str(image_dir / stem), f"listed in the split file but no such image found: expected {want} {where}")
            )
    for stem, (_, label, _) in labels.items():
        if stem not in images:
            want = " or ".join(f"{image_prefix}{stem}{s}" for s in image_suffixes)
            problems.append((str(label), f"label without an image: expected {want} under {image_dir}"))
    samples.sort(key=lambda s: str(s.image))
    return samples, problems


def listed_stem(line: str, image_suffixes: Sequence[str] = (), image_prefix: str = "") -> str:
    """The pairing stem of a split-file line: a stem or a file name, with or without its folders
    (``aachen/aachen_000000_000019_leftImg8bit.png``, ``rgb_12.png``, ``rgb_12``, ``12``). The
    dataset's own image suffixes are stripped (then a generic image suffix, then the part of a dataset
    suffix before its extension, as mmseg's split files list ``<stem>`` of ``<stem>_leftImg8bit.png``),
    then the dataset's image prefix."""
    name = PurePosixPath(line.replace("\\", "/")).name  # the same on every OS: a line written on Windows too
    suffix = _match_suffix(name, image_suffixes) or _match_suffix(name, IMAGE_SUFFIXES)
    if suffix:
        name = name[: len(name) - len(suffix)]
    marks = sorted({s[: len(s) - len(Path(s).suffix)] for s in image_suffixes} - {""}, key=len, reverse=True)
    mark = None if suffix and _match_suffix(suffix, image_suffixes) else _match_suffix(name, marks)
    if mark:
        name = name[: len(name) - len(mark)]
    return name[len(image_prefix) :] if image_prefix and name.startswith(image_prefix) else name


def read_split_file(
    path: Path, split: str, image_suffixes: Sequence[str] = (), image_prefix: str = "", folders: bool = False
) -> set[str]:
    """Stems listed by a split file: text (one stem or file name per line, '#' comments; each read by
    :func:`listed_stem` with the dataset's ``image_suffixes`` and ``image_prefix``) or GTAV's
    ``split.mat`` (1-based image numbers under ``{split}Ids``, stems zero-padded to 5 digits). With
    ``folders``, a text line's folders are kept: ``cam0/0001.jpg`` is ``cam0/0001`` (the ``folder`` dataset,
    :mod:`dgseg.data.path_pairing`)."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat

        try:
            ids = loadmat(str(path))[f"{split}Ids"]
        except KeyError as e:
            raise DataError(
                f"{path}: no '{split}Ids' in this split file; expected trainIds/valIds/testIds"
            ) from e
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable .mat split file ({e})") from e
        return {f"{int(i):05d}" for i in np.asarray(ids).ravel()}
    stems = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip().replace("\\", "/")  # a list written on Windows: cam0\0001.jpg
        if line:
            stem = listed_stem(line, image_suffixes, image_prefix)
            parents = [p for p in PurePosixPath(line).parent.parts if p != "/"] if folders else []
            stems.add("/".join([*parents, stem]))
    if not stems:
        raise DataError(f"{path}: split file lists no images; expected one image stem per line")
    return stems
