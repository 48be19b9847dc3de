"""Listing a dataset's files and pairing images with labels by key; reading split files.

:func:`pair_files` lists and pairs the files of every dataset; a :class:`Matching` says what a file's key is:
its stem for the built-in datasets (:data:`BY_STEM`), its path under its folder for ``folder``
(:data:`dgseg.data.path_pairing.BY_PATH`). It returns the :class:`Sample` pairs and the problems found
(duplicates, an image without a label, a label without an image, an image file of a suffix the dataset
does not read, a split-file entry without an image) as (path, reason); the dataset decides whether a
problem raises or is skipped: nothing is left out without a word. Only names are read here: files are
decoded by :mod:`dgseg.data.reading` when an item is read.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .labels import IdMap
from .reading import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

LabelKind = tuple[str, IdMap] | tuple[str, IdMap, str]
"""A dataset's kind of label file: (file suffix, IdMap), and optionally the reader of its files (``png8`` or
``png16``, see :class:`Sample`; without it, the dataset's ``reader``)."""

LABEL_MARK = re.compile(
    r"_(?:gtFine_|gtCoarse_|gt_)?(?:labelTrainIds|labelIds|labelColor|color|instanceTrainIds|instanceIds|invIds)$",
    re.IGNORECASE,
)
"""The end of a label file's stem that names a label form (Cityscapes' ``_gtFine_labelIds``, ACDC's
``_gt_labelColor``, the converters' ``_labelTrainIds``): a label whose key ends in one is never the label
of an image of that key, so a message names the image of the key without it."""


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


def _stem_key(path: Path, folder: Path, suffix: str, prefix: str) -> str:
    return _stem(path.name, suffix, prefix)


def _select_stems(entries: Collection[str], images: Mapping[str, Path], image_dir: Path,
                  source: str | Path | None) -> tuple[set[str], dict[str, list[str]]]:
    return set(entries), {e: [] for e in sorted(entries) if e not in images}


@dataclass(frozen=True)
class Matching:
    """How :func:`pair_files` matches an image with its label: they pair when their keys are equal.

    ``key(file, folder listed, suffix, prefix)`` is a file's key; ``select(entries, images, image_dir, source)``
    reads a split file's entries among the image keys (key -> file): the keys selected, whose problems are
    reported, and each entry without an image, with the images of its stem elsewhere (relative to
    ``image_dir``); ``duplicate`` words two files of one key (``{what}``, ``{key}``, ``{other}``)."""

    key: Callable[[Path, Path, str, str], str]
    select: Callable[[Collection[str], Mapping[str, Path], Path, str | Path | None],
                     tuple[set[str], dict[str, list[str]]]]
    duplicate: str


BY_STEM = Matching(_stem_key, _select_stems,
                   "duplicate {what} stem '{key}' (also {other}); expected one {what} per stem")
"""Every built-in dataset's: the file name less its suffix and the dataset's prefix, in any sub-folder.
(The ``folder`` dataset's, by path under its folders, is :data:`dgseg.data.path_pairing.BY_PATH`.)"""


def last_part(key: str) -> str:
    """The stem of a key: its part after the last ``/``."""
    return key.rpartition("/")[2]


def _file_name(key: str, prefix: str, suffix: str) -> str:
    """The file name a key stands for, with its sub-folders: ``cam0/0001`` -> ``cam0/<prefix>0001<suffix>``."""
    folders, _, stem = key.rpartition("/")
    return f"{folders}/{prefix}{stem}{suffix}" if folders else f"{prefix}{stem}{suffix}"


def _expected(key: str, prefix: str, suffixes: Sequence[str]) -> str:
    return " or ".join(_file_name(key, prefix, s) for s in suffixes)


def pair_files(
    image_dir: Path,
    label_dir: Path,
    image_suffixes: Sequence[str],
    label_kinds: Sequence[LabelKind],
    *,
    matching: Matching = BY_STEM,
    recursive: bool = False,
    image_prefix: str = "",
    label_prefix: str = "",
    reader: str = "png8",
    entries: Collection[str] | None = None,
    source: str | Path | None = None,
) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Pair images and labels by key (:class:`Matching`: by stem, :data:`BY_STEM`, unless told otherwise).

    ``label_kinds`` lists (file suffix, IdMap[, reader]) in order of preference: when a key has several label
    files (e.g. ``_labelTrainIds.png`` and ``_labelIds.png``) the first kind is used; a kind without a
    reader is read by ``reader``. An image without a
    label of its key pairs with a label of another key of the same stem (the key's last part) when no other
    image or label has that stem and no image has that label's key (a key with sub-folders: a label in
    another sub-folder). With the split file ``entries`` (named ``source`` in messages), only the images
    they select (``matching.select``). Returns the pairs (sorted by image path) and the problems found as
    (path, reason), in the order found: an image file (:data:`IMAGE_SUFFIXES`) whose name does not end in one
    of ``image_suffixes``, duplicate keys, an image without a label (naming a label whose key differs from
    the image's only in letter case), an entry without an image, a label without an image (one named as a
    label form the dataset does not read, :data:`LABEL_MARK`, naming the image of its stem without it).
    """
    found: list[tuple[str, tuple[str, str]]] = []  # (key, problem), reported when the key is selected

    def problem(key: str, path: Path, reason: str) -> None:
        found.append((key, (str(path), reason)))

    images: dict[str, Path] = {}
    for path in _list_files(image_dir, (*image_suffixes, *IMAGE_SUFFIXES), recursive):
        suffix = _match_suffix(path.name, image_suffixes)
        generic = suffix or _match_suffix(path.name, IMAGE_SUFFIXES) or path.suffix
        key = matching.key(path, image_dir, generic, image_prefix)
        if suffix is None:  # an image file, but not one of the dataset's: say so rather than drop it
            problem(key, path, f"image file not read by this dataset: expected names ending in "
                               f"{' or '.join(image_suffixes)}; convert or rename it, or move it out of {image_dir}")
        elif key in images:
            problem(key, path, matching.duplicate.format(what="image", key=key, other=images[key]))
        else:
            images[key] = path

    suffixes = [kind[0] for kind in label_kinds]
    rank = {s.lower(): i for i, s in enumerate(suffixes)}
    labels: dict[str, tuple[int, Path, IdMap]] = {}
    for path in _list_files(label_dir, suffixes, recursive):
        suffix = _match_suffix(path.name, suffixes)
        assert suffix is not None
        kind = rank[suffix.lower()]
        key = matching.key(path, label_dir, suffix, label_prefix)
        if key in labels and labels[key][0] <= kind:  # a label of a preferred kind is kept
            if labels[key][0] == kind:
                problem(key, path, matching.duplicate.format(what="label", key=key, other=labels[key][1]))
            continue
        labels[key] = (kind, path, label_kinds[kind][1])

    image_stems = Counter(last_part(k) for k in images)
    label_stems: dict[str, list[str]] = {}
    label_cases: dict[str, list[str]] = {}
    for key in labels:
        label_stems.setdefault(last_part(key), []).append(key)
        label_cases.setdefault(key.lower(), []).append(key)
    samples: dict[str, Sample] = {}
    paired: set[str] = set()  # label keys
    for key, image in images.items():
        same = label_stems.get(last_part(key), [])
        if key in labels:
            label_key = key
        elif image_stems[last_part(key)] == 1 and len(same) == 1 and same[0] not in images:
            label_key = same[0]  # the only label of the only image of this stem, in another sub-folder
        else:
            cases = [k for k in label_cases.get(key.lower(), []) if k != key and k not in images]
            elsewhere = [k for k in same if k not in images and k not in cases]
            problem(key, image, _without_label(key, label_dir, label_prefix, suffixes,
                                               [labels[k][1] for k in elsewhere], [labels[k][1] for k in cases]))
            continue
        kind, label, id_map = labels[label_key]
        samples[key] = Sample(image, label, id_map, label_kinds[kind][2] if len(label_kinds[kind]) > 2 else reader)
        paired.add(label_key)

    if entries is None:  # every image
        chosen, missing = {k for k, _ in found} | set(images) | set(labels), {}
    else:
        chosen, missing = matching.select(entries, images, image_dir, source)
    problems = [p for key, p in found if key in chosen]
    for entry, others in missing.items():
        where = " or its sub-folders" if recursive and "/" not in entry else ""
        note = (f" (found with its stem: {', '.join(others)}; write the entry as "
                f"{'that path' if len(others) == 1 else 'one of these paths'})" if others else "")
        problems.append((str(image_dir / entry), (
            f"listed in the split file{f' {source}' if source else ''} but no such image found: expected "
            f"{_expected(entry, image_prefix, image_suffixes)} in {image_dir}{where}{note}")))
    for key, (_, label, _) in labels.items():
        mark = LABEL_MARK.search(key)
        base = key[: mark.start()] if mark and mark.start() > len(key) - len(last_part(key)) else key  # less its mark
        if key not in paired and (key in chosen or base in chosen):
            where = (image_dir, label_dir, image_prefix, label_prefix)
            own = labels[base][1] if base in labels and base in paired else None
            problems.append((str(label), _without_image(label, key, base, where, image_suffixes, suffixes, images, own)))
    return sorted((s for key, s in samples.items() if key in chosen), key=lambda s: str(s.image)), problems


def _without_image(label: Path, key: str, base: str, where: tuple[Path, Path, str, str],
                   image_suffixes: Sequence[str], label_suffixes: Sequence[str], images: Mapping[str, Path],
                   paired: Path | None) -> str:
    """Why ``label`` (of ``key``) pairs with no image. A key ending in a :data:`LABEL_MARK` (``base`` is the key
    without it) names a label form this dataset does not read: the image expected is the one of ``base``,
    never one carrying the mark; when that image is there, the message names the label it pairs with
    (``paired``) or the names it would. ``where``: image folder, label folder, image prefix, label prefix."""
    image_dir, label_dir, image_prefix, label_prefix = where
    if base == key:
        return f"label without an image: expected {_expected(key, image_prefix, image_suffixes)} under {image_dir}"
    mark = key[len(base):]
    form = (f"its name ends in {label.name[label.name.rfind(mark):]}, not in a label suffix this dataset reads "
            f"({' or '.join(label_suffixes)})")
    if base not in images:
        return f"label without an image: expected {_expected(base, image_prefix, image_suffixes)} under {image_dir} ({form})"
    if paired is not None:
        return f"label file not read by this dataset: {form}; its image {images[base]} pairs with {paired}"
    return (f"label file not read by this dataset: {form}; the label of its image {images[base]} is "
            f"{_expected(base, label_prefix, label_suffixes)} under {label_dir}: rename the file to "
            f"{'that name' if len(label_suffixes) == 1 else 'the name of the form it holds'} or move it out of {label_dir}")


def _without_label(key: str, label_dir: Path, prefix: str, suffixes: Sequence[str], elsewhere: Sequence[Path],
                   cases: Sequence[Path]) -> str:
    """Why the image of ``key`` has no label: the label expected under ``label_dir``, the labels of its stem in
    other sub-folders (``elsewhere``) and those whose key differs from it only in letter case (``cases``)."""
    note = (f" ({', '.join(map(str, elsewhere))} {'has' if len(elsewhere) == 1 else 'have'} its stem, but a label "
            "in another sub-folder pairs by stem only when no other image or label has that stem)" if elsewhere else "")
    if cases:
        note += (f"; {', '.join(map(str, cases))} {'differs' if len(cases) == 1 else 'differ'} from the name "
                 "expected only in letter case (pairing is case-sensitive, also on a case-insensitive file system)")
    return f"image without a label: expected {_expected(key, prefix, suffixes)} under {label_dir}{note}"


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
