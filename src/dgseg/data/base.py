"""The dataset base classes: :class:`SegmentationDataset` reads a list of :class:`Sample` pairs as
train-ID segmentation items (with the ``on_error`` and ``unknown_labels`` policies), and
:class:`PairedFilesDataset` lists and pairs the folders of a layout its subclasses describe by class
attributes (the named datasets in :mod:`dgseg.data.datasets`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .label_forms import train_id_hint
from .labels import TRAIN_IDS
from .pairing import IMAGE_SUFFIXES, LabelKind, Sample, pair_files, read_split_file
from .reading import DataError, SplitNotFound, exif_transposes, read_image, read_label

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
OnError = Literal["raise", "skip"]
UnknownLabels = Literal["warn", "error", "ignore"]

SKIP_HINT = "leave such files out with --set data.on_error=skip (on_error='skip' in Python)"


SHOWN_PROBLEMS = 5
"""The problems of files an error message lists one by one; it counts the rest."""


def with_skip_hint(message: str) -> str:
    """``message`` (a problem of one file, raised under ``on_error="raise"``) with how to leave such files out."""
    return message if SKIP_HINT in message else f"{message}; {SKIP_HINT}"


def first_problems(problems: Sequence[tuple[str, str]], shown: int = SHOWN_PROBLEMS) -> str:
    """The first ``shown`` (path, reason) ``problems`` as ``(1) path: reason; (2) ...`` (numbered: a reason may
    hold a ``;``), and how many more there are."""
    listed = "; ".join(f"({i}) {path}: {reason}" for i, (path, reason) in enumerate(problems[:shown], 1))
    more = len(problems) - shown
    return listed + (f"; and {more} more problem{'s' if more > 1 else ''}" if more > 0 else "")


class NoPairsError(DataError):
    """No image of a split pairs with a label, though the split has files: ``summary`` says so, ``problems``
    holds the (path, reason) of every file that did not pair; the message lists the first few."""

    def __init__(self, summary: str, problems: Sequence[tuple[str, str]]) -> None:
        self.summary = summary
        self.problems = list(problems)
        super().__init__(f"{summary}: {first_problems(self.problems)}")


class SplitFileNotFound(DataError):
    """The split file given for a dataset is not there (``dgseg data check`` names ``--split-file``)."""


class SegmentationDataset(Dataset):
    """A list of :class:`Sample` read as train-ID segmentation items.

    Args:
        samples: the image/label pairs.
        transform: ``(image uint8 [3,H,W], label int64 [H,W]) -> (image, label)``, applied last.
        on_error: ``raise`` a DataError on a bad sample, or ``skip`` it: it is replaced by the next
            good one and recorded in ``self.skipped`` as (path, reason), with a warning; the
            replacement item carries ``"skipped": [(path, reason), ...]`` of the samples it stands in
            for (DataLoader workers keep their own ``self.skipped``; this key is how their skips
            reach the main process).
        unknown_labels: label values the dataset does not define (beyond its ID table: for a
            ``folder``, beyond the class count, other than 255) raise a DataError naming the file, the
            values and what the dataset defines (``error``, default); ``ignore`` reads them as 255
            and records the file in ``self.ignored_labels`` (label path -> reason), the item carrying
            ``"unknown_labels": [(label path, reason)]`` (a DataLoader worker's report, as
            ``"skipped"``); ``warn`` reads them as 255 with a warning.
        name: shown in messages.
        skipped: problems found while listing (on_error="skip"), kept in ``self.skipped`` and, apart from
            the samples skipped while reading, in ``self.left_out``.
    """

    name = "dataset"

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform | None = None,
        on_error: OnError = "raise",
        unknown_labels: UnknownLabels = "error",
        name: str | None = None,
        skipped: Iterable[tuple[str, str]] = (),
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if unknown_labels not in ("warn", "error", "ignore"):
            raise ValueError(f"unknown_labels must be 'warn', 'error' or 'ignore', got {unknown_labels!r}")
        self.samples = list(samples)
        self.transform = transform
        self.on_error = on_error
        self.unknown_labels = unknown_labels
        if name is not None:
            self.name = name
        self.skipped: list[tuple[str, str]] = list(skipped)
        self.left_out: list[tuple[str, str]] = list(self.skipped)  # while listing: never read, in no item
        self.ignored_labels: dict[str, str] = {}
        self._bad: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Decode sample ``index``: (image uint8 [H,W,3], label uint8 train IDs [H,W], unknown raw values).

        Raises DataError for an unreadable file or an image/label size mismatch; never skips.
        """
        return self.read_with_raw(index)[:3]

    def read_with_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
        """:meth:`read`'s (image, label, unknown raw values), and the label file's raw values [H,W] they were
        mapped from (``dgseg data check`` counts the values a label_map leaves out)."""
        image, raw = self.read_raw(index)
        label, unknown = self.samples[index].id_map.map_checked(raw)
        return image, label, unknown, raw

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 [H,W,3], the label file's raw values [H,W]) of sample ``index``, before its ID table
        (:meth:`read` maps them); the same DataErrors as :meth:`read`."""
        s = self.samples[index]
        image = read_image(s.image)
        raw = read_label(s.label, s.reader)
        if raw.shape != image.shape[:2]:
            why = ""
            if raw.shape == image.shape[1::-1]:
                tag = exif_transposes(s.image)
                why = (f" (the image's EXIF orientation tag ({tag}) turns it, as OpenCV reads it; store the image"
                       " upright or the label turned the same way)" if tag else
                       " (the label is the image's size transposed: width and height swapped)")
            raise DataError(
                f"{s.label}: label is {raw.shape[1]}x{raw.shape[0]} but its image {s.image} is "
                f"{image.shape[1]}x{image.shape[0]} (WxH); expected the same size{why}"
            )
        return image, raw

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, tuple[str, str] | None]:
        """(image, label, (label path, reason) when unknown label values were read as 255)."""
        image, label, unknown, raw = self.read_with_raw(index)
        if not unknown:
            return image, label, None
        s = self.samples[index]
        hint = self.label_form_hint(index, raw)
        found = f"{s.label}: label values {unknown} are not defined by {s.id_map.name}{hint}"
        if self.unknown_labels == "error":
            raise DataError(
                f"{found}; expected only the values it defines. To read such values as 255 (ignore), pass "
                "--set data.unknown_labels=ignore (unknown_labels='ignore' in Python): every such file "
                "is then counted and logged; `dgseg data check` lists them all"
            )
        note = (str(s.label), f"label values {unknown} read as 255 (ignore): not defined by {s.id_map.name}{hint}")
        if self.unknown_labels == "warn":
            warnings.warn(f"{found}; they are read as 255 (ignore)", stacklevel=3)
        else:
            self.ignored_labels.setdefault(*note)
        return image, label, note

    def label_form_hint(self, index: int, raw: np.ndarray) -> str:
        """``; ...`` saying that the label file of sample ``index``, of raw values ``raw``, looks like it holds
        train IDs and what to name it to be read so, when the dataset reads another form of label too
        (:func:`dgseg.data.label_forms.train_id_hint`); else ``""``."""
        return ""

    def _skip(self, index: int, error: DataError) -> None:
        reason = str(error)
        self._bad[index] = reason
        path = str(self.samples[index].image)
        self.skipped.append((path, reason))
        warnings.warn(f"{self.name}: skipping a bad sample ({reason})", stacklevel=3)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} of length {n}")
        index %= n
        passed: list[tuple[str, str]] = []
        for attempt in range(n):
            i = (index + attempt) % n
            if i not in self._bad:
                try:
                    image, label, note = self._load(i)
                    break
                except DataError as e:
                    if self.on_error == "raise":
                        raise DataError(with_skip_hint(str(e))) from e
                    self._skip(i, e)
            passed.append((str(self.samples[i].image), self._bad[i]))
        else:
            raise DataError(f"{self.name}: every one of its {n} samples failed to load: {first_problems(passed)}")
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
        label_t = torch.from_numpy(label.astype(np.int64))
        if self.transform is not None:
            image_t, label_t = self.transform(image_t, label_t)
        item = {"image": image_t, "label": label_t, "path": str(self.samples[i].image)}
        if passed:  # the item stands in for these bad samples: a DataLoader worker's report travels with it
            item["skipped"] = passed
        if note is not None and self.unknown_labels == "ignore":  # the same for labels read with ignore
            item["unknown_labels"] = [note]
        return item

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, samples={len(self)}, skipped={len(self.skipped)})"


class PairedFilesDataset(SegmentationDataset):
    """A dataset of paired image/label files in a known layout; subclasses set the class attributes.

    ``image_dir``/``label_dir`` are relative to root; ``{split}`` is replaced by the split's folder name
    (``split_dirs`` maps accepted split names to folder names; ``None``: no split folders, see
    ``split_file``).
    """

    image_dir: str = "images"
    label_dir: str = "labels"
    image_suffixes: tuple[str, ...] = IMAGE_SUFFIXES
    label_kinds: tuple[LabelKind, ...] = ((".png", TRAIN_IDS),)
    recursive: bool = False
    image_prefix: str = ""
    label_prefix: str = ""
    reader: str = "png8"
    split_dirs: Mapping[str, str] | None = {"train": "train", "val": "val", "test": "test"}
    other_layout: str = ""  # said after the layout when the root is not there

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Transform | None = None,
        on_error: OnError = "raise",
        unknown_labels: UnknownLabels = "error",
        split_file: str | os.PathLike | None = None,
    ) -> None:
        if root is None:
            raise DataError(f"{self.name}: root is None; expected the dataset folder")
        self.root = Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            where = ("" if self.root.is_absolute() else
                     f" (a relative path is read from the folder dgseg runs in, {Path.cwd()}: looked at "
                     f"{Path.cwd() / self.root})")
            raise DataError(
                f"{self.root}: {self.name} root folder not found{where}; expected a folder "
                f"with {self.image_dir.format(split='<split>')}/ and "
                f"{self.label_dir.format(split='<split>')}/{self.other_layout}"
            )
        split_path = None if split_file is None else self._split_file(split_file)
        if self.split_dirs is None:
            split_dir = ""
            only_stems = self._split_stems(split, split_path)
        else:  # a split file selects a subset of the split folder (e.g. 1/16 of the labels)
            split_dir = self._split_folder(split)
            only_stems = None if split_path is None else self._read_split_file(split_path, split)
        image_dir = self.root / self.image_dir.format(split=split_dir)
        label_dir = self.root / self._label_dir(split_dir)
        for folder, what in ((image_dir, "image"), (label_dir, "label")):
            if not folder.is_dir():
                found = self._splits_found() if what == "image" else []  # other splits there: the split is wrong
                raise (SplitNotFound if found else DataError)(
                    f"{folder}: {what} folder of {self.name} split '{split}' not found"
                    + (f" (found splits {', '.join(found)})" if found else "")
                    + f"; expected the layout {self._layout_hint()}"
                )
        self.kinds = self._label_kinds()  # the label kinds the files were paired by (and hints name)
        samples, problems = self._pair(image_dir, label_dir, only_stems)
        if problems and not samples:  # skipping the files with problems would leave nothing: say what they are
            raise NoPairsError(f"{image_dir}: no image of {self.name} split '{split}' pairs with a label in "
                               f"{label_dir}; {len(problems)} file{'s' if len(problems) > 1 else ''} did not pair",
                               problems)
        if problems and on_error == "raise":
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            path, reason = problems[0]
            raise DataError(with_skip_hint(f"{path}: {reason}{more}"))
        if problems:
            warnings.warn(
                f"{self.name}: {len(problems)} files left out while pairing, first: "
                f"{problems[0][0]}: {problems[0][1]} (see dataset.skipped)",
                stacklevel=2,
            )
        if not samples:
            raise DataError(
                f"{image_dir}: split '{split}' of {self.name} is empty; expected image files "
                f"({', '.join(self.image_suffixes)}) with labels in {label_dir}"
            )
        super().__init__(samples, transform, on_error, unknown_labels, skipped=problems)

    def _pair(self, image_dir: Path, label_dir: Path, only_stems: set[str] | None, **kwargs: Any
              ) -> tuple[list[Sample], list[tuple[str, str]]]:
        """The pairs and the problems found (:func:`pair_files`: by stem, unless ``kwargs`` say otherwise)."""
        return pair_files(
            image_dir, label_dir, self.image_suffixes, self.kinds,
            recursive=self.recursive, image_prefix=self.image_prefix, label_prefix=self.label_prefix,
            reader=self.reader, entries=only_stems, **kwargs,
        )  # fmt: skip

    def _label_kinds(self) -> tuple[LabelKind, ...]:
        return self.label_kinds

    def label_form_hint(self, index: int, raw: np.ndarray) -> str:
        s = self.samples[index]
        return train_id_hint(s.label, raw, s.id_map, self.kinds, self.name)

    def _split_file(self, split_file: str | os.PathLike) -> Path:
        """The split file given for this dataset; a DataError when it is not there, naming the absolute path
        looked at and a file of that name in the dataset's root (a relative path is from the folder dgseg
        runs in, as ``root`` is)."""
        path = Path(split_file).expanduser()
        if path.is_file():
            return path
        where = "" if path.is_absolute() else f" (a relative path is read from the folder dgseg runs in: looked at {Path.cwd() / path})"
        under = [c for c in dict.fromkeys((self.root / path, self.root / path.name)) if c.is_file() and c != path]
        found = (f"; {under[0]} is there, under the {self.name} root {self.root}: write split_file: {under[0]}"
                 if under else "")
        raise SplitFileNotFound(f"{path}: split file not found{where}{found}; expected a text file listing one image "
                        "per line, or GTAV's split.mat")

    def _label_dir(self, split_dir: str) -> str:
        return self.label_dir.format(split=split_dir)

    def _layout_hint(self) -> str:
        return f"{self.root}/{self.image_dir} and {self.root}/{self.label_dir}"

    def _splits_found(self) -> list[str]:
        """The splits of ``split_dirs`` whose image folder is there."""
        dirs = self.split_dirs or {}
        return [s for s, d in dirs.items() if (self.root / self.image_dir.format(split=d)).is_dir()]

    def _split_folder(self, split: str) -> str:
        assert self.split_dirs is not None
        if split in self.split_dirs:
            return self.split_dirs[split]
        if split in self.split_dirs.values():
            return split
        raise SplitNotFound(
            f"{self.root}: unknown split '{split}' for {self.name}; expected one of "
            f"{sorted(set(self.split_dirs) | set(self.split_dirs.values()))}"
        )

    def _read_split_file(self, path: Path, split: str) -> set[str]:
        return read_split_file(path, split, self.image_suffixes, self.image_prefix)

    def _split_stems(self, split: str, split_file: str | os.PathLike | None) -> set[str] | None:
        if split_file is not None:
            return self._read_split_file(Path(split_file), split)
        if split in ("train", "all"):
            return None
        for candidate in (self.root / f"{split}.txt", self.root / "split.mat"):
            if candidate.is_file():
                return self._read_split_file(candidate, split)
        raise SplitNotFound(
            f"{self.root}: {self.name} has no split folders; split 'train' (or 'all') uses "
            f"every image, split '{split}' needs split_file=... or {self.root}/{split}.txt "
            "(one image stem or file name per line)"
        )
