"""The ``folder`` dataset's matching (:data:`BY_PATH`, for :func:`dgseg.data.pairing.pair_files`): by the path
relative to the images folder, so the same file name may appear in several sub-folders (``images/cam0/0001.jpg``
and ``images/cam1/0001.jpg``).

The label of ``images/<sub-folders>/<stem>.<ext>`` is ``labels/<sub-folders>/<stem>.png``. A label in
another sub-folder pairs by stem alone when that stem is unique among all the images and among all the
labels (as the built-in datasets pair by stem: such layouts keep working); otherwise the image is without a
label, and the message names the label expected and the same-stem labels found. Paths pair case-sensitively
(``Cam0/`` is not ``cam0/``), on every file system. Split-file entries are read with their folders, which must
be the image's (:func:`resolve_entries`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from .pairing import Matching, _stem, last_part
from .reading import DataError


def _key(path: Path, folder: Path, suffix: str, prefix: str) -> str:
    """``<sub-folders>/<stem>`` of ``path`` under ``folder`` (just the stem at the top)."""
    stem = _stem(path.name, suffix, prefix)
    parent = path.parent.relative_to(folder).as_posix()
    return stem if parent == "." else f"{parent}/{stem}"


def _names(entry: list[str], key: list[str], images: str) -> bool:
    """Whether a split-file entry (its parts) names the image ``key`` (its parts under ``images/``): the entry is
    the key's trailing parts, or the whole key after a folder named ``images`` (the folders above it may be given:
    ``val/images/cam0/0001``); ``cam1/0001`` does not name ``0001`` directly under ``images/``."""
    if len(entry) <= len(key):
        return key[len(key) - len(entry):] == entry
    return entry[len(entry) - len(key):] == key and entry[len(entry) - len(key) - 1] == images


def resolve_entries(entries: Collection[str], images: Mapping[str, Path], image_dir: Path,
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
        by_stem.setdefault(last_part(key), []).append(key)
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


BY_PATH = Matching(_key, resolve_entries,
                   "duplicate {what} '{key}' (also {other}); expected one {what} per name in a folder")
"""The ``folder`` dataset's matching (see the module docstring), for :func:`dgseg.data.pairing.pair_files`."""
