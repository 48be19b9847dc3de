"""The ``folder`` dataset's pairing: by the path relative to the images folder, so the same file name may
appear in several sub-folders (``images/cam0/0001.jpg`` and ``images/cam1/0001.jpg``).

The label of ``images/<sub-folders>/<stem>.<ext>`` is ``labels/<sub-folders>/<stem>.png``. A label in
another sub-folder pairs by stem alone when that stem is unique among all the images and among all the
labels (as :func:`dgseg.data.pairing.pair_files` pairs every dataset: such layouts keep working); otherwise
the image is without a label, and the message names the label expected and the same-stem labels found.
Split-file entries are read with their folders, which must be the image's (:func:`resolve_entries`).
Problems are returned as (path, reason), as :func:`~dgseg.data.pairing.pair_files` returns them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from .labels import IdMap
from .pairing import IMAGE_SUFFIXES, Sample, _list_files, _match_suffix, _stem
from .reading import DataError


def _key(path: Path, folder: Path, suffix: str) -> str:
    """``<sub-folders>/<stem>`` of ``path`` under ``folder`` (just the stem at the top)."""
    stem = _stem(path.name, suffix, "")
    parent = path.parent.relative_to(folder).as_posix()
    return stem if parent == "." else f"{parent}/{stem}"


def _last(key: str) -> str:
    return key.rpartition("/")[2]


def _names(entry: list[str], key: list[str], images: str) -> bool:
    """Whether a split-file entry (its parts) names the image ``key`` (its parts under ``images/``): the entry is
    the key's trailing parts, or the whole key after a folder named ``images`` (the folders above it may be given:
    ``val/images/cam0/0001``); ``cam1/0001`` does not name ``0001`` directly under ``images/``."""
    if len(entry) <= len(key):
        return key[len(key) - len(entry):] == entry
    return entry[len(entry) - len(key):] == key and entry[len(entry) - len(key) - 1] == images


def resolve_entries(entries: Sequence[str], images: Mapping[str, Path], image_dir: Path,
                    source: str | Path | None) -> tuple[set[str], dict[str, list[str]]]:
    """The image keys a split file's ``entries`` select (``<sub-folders>/<stem>`` or a bare stem, as read by
    :func:`dgseg.data.pairing.read_split_file` with ``folders=True``) among the ``images`` listed (key ->
    file), and the entries that match none (entry -> the images of its stem elsewhere, under ``image_dir``).
    An entry matches an image when their paths agree on their common trailing parts: ``cam0/0001`` and
    ``val/images/cam0/0001`` match ``cam0/0001`` (folders above ``images/`` may be given), ``0001`` matches
    every ``<sub-folders>/0001``, ``cam1/0001`` does not match ``cam0/0001``. DataError naming the split
    file, the entry and the candidates when an entry matches several images."""
    by_stem: dict[str, list[str]] = {}
    for key in images:
        by_stem.setdefault(_last(key), []).append(key)
    chosen: set[str] = set()
    missing: dict[str, list[str]] = {}
    for entry in sorted(entries):
        parts = entry.split("/")
        same = by_stem.get(parts[-1], [])
        found = [k for k in same if _names(parts, k.split("/"), image_dir.name)]
        if len(found) > 1:
            names = sorted(images[k].relative_to(image_dir).as_posix() for k in found)
            raise DataError(
                f"{source}: split-file entry '{entry}' matches {len(names)} images under {image_dir} "
                f"({', '.join(names)}); expected one: write the entry with its sub-folders under "
                f"{image_dir.name}/, e.g. {names[0]}"
            )
        if found:
            chosen.add(found[0])
        else:
            missing[entry] = sorted(images[k].relative_to(image_dir).as_posix() for k in same)
    return chosen, missing


def pair_by_path(
    image_dir: Path,
    label_dir: Path,
    image_suffixes: Sequence[str],
    label_kinds: Sequence[tuple[str, IdMap]],
    *,
    reader: str = "png8",
    entries: Sequence[str] | None = None,
    source: str | Path | None = None,
) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Pair the images and labels under two folders (and their sub-folders) by relative path; with the split
    file ``entries`` (named ``source`` in messages), only the images they select (see the module docstring
    and :func:`resolve_entries`). Returns the pairs (sorted by image path) and the problems."""
    image_problems: dict[str, list[tuple[str, str]]] = {}  # key -> problems of that image
    images: dict[str, Path] = {}
    listed: dict[str, Path] = {}  # every image file's key, read or not
    for path in _list_files(image_dir, (*image_suffixes, *IMAGE_SUFFIXES), True):
        suffix = _match_suffix(path.name, image_suffixes)
        key = _key(path, image_dir, suffix or _match_suffix(path.name, IMAGE_SUFFIXES) or path.suffix)
        listed.setdefault(key, path)
        if suffix is None:
            image_problems.setdefault(key, []).append((str(path), (
                f"image file not read by this dataset: expected names ending in {' or '.join(image_suffixes)}; "
                f"convert or rename it, or move it out of {image_dir}")))
        elif key in images:
            image_problems.setdefault(key, []).append((str(path), (
                f"duplicate image '{key}' (also {images[key]}); expected one image per name in a folder")))
        else:
            images[key] = path

    suffixes = [s for s, _ in label_kinds]
    rank = {s.lower(): i for i, s in enumerate(suffixes)}
    labels: dict[str, tuple[int, Path, IdMap]] = {}
    label_problems: dict[str, list[tuple[str, str]]] = {}
    for path in _list_files(label_dir, suffixes, True):
        suffix = _match_suffix(path.name, suffixes)
        assert suffix is not None
        kind = rank[suffix.lower()]
        key = _key(path, label_dir, suffix)
        if key in labels and labels[key][0] <= kind:
            if labels[key][0] == kind:
                label_problems.setdefault(key, []).append((str(path), (
                    f"duplicate label '{key}' (also {labels[key][1]}); expected one label per name in a folder")))
            continue
        labels[key] = (kind, path, label_kinds[kind][1])

    image_stems = Counter(_last(k) for k in images)
    label_stems: dict[str, list[str]] = {}
    for key in labels:
        label_stems.setdefault(_last(key), []).append(key)
    samples: dict[str, Sample] = {}
    paired_labels: set[str] = set()
    for key, image in images.items():
        stem = _last(key)
        same = label_stems.get(stem, [])
        if key in labels:
            found = key
        elif image_stems[stem] == 1 and len(same) == 1 and same[0] not in images:
            found = same[0]  # the only label of the only image of this stem, in another sub-folder
        else:
            want = " or ".join(f"{key}{s}" for s in suffixes)
            elsewhere = [str(labels[k][1]) for k in same if k not in images]
            note = (f" ({', '.join(elsewhere)} {'has' if len(elsewhere) == 1 else 'have'} its stem, but a label in "
                    "another sub-folder pairs by stem only when no other image or label has that stem)"
                    if elsewhere else "")
            image_problems.setdefault(key, []).append(
                (str(image), f"image without a label: expected {want} under {label_dir}{note}"))
            continue
        _, label, id_map = labels[found]
        samples[key] = Sample(image, label, id_map, reader)
        paired_labels.add(found)
    for key, (_, label, _) in labels.items():
        if key not in paired_labels:
            want = " or ".join(f"{key}{s}" for s in image_suffixes)
            label_problems.setdefault(key, []).append(
                (str(label), f"label without an image: expected {want} under {image_dir}"))

    chosen, problems = set(images) | set(image_problems) | set(labels), []
    if entries is not None:
        chosen, missing = resolve_entries(entries, listed, image_dir, source)
        for entry, elsewhere in missing.items():
            want = " or ".join(f"{entry}{s}" for s in image_suffixes)
            note = (f" (found with its stem: {', '.join(elsewhere)}; write the entry as "
                    f"{'that path' if len(elsewhere) == 1 else 'one of these paths'})" if elsewhere else "")
            problems.append((str(image_dir / entry), f"listed in the split file {source} but no such image found: "
                                                     f"expected {want} in {image_dir}{note}"))
    problems = [p for key in sorted(chosen) for p in (*image_problems.get(key, ()), *label_problems.get(key, ()))
                ] + problems
    return sorted((s for k, s in samples.items() if k in chosen), key=lambda s: str(s.image)), problems
