"""Segmentation datasets: real ones read from their distributed folder layouts, mapped on the fly.

Every dataset yields ``{"image": uint8 [3, H, W] RGB, "label": int64 [H, W] (19 train IDs, 255 ignore),
"path": str}`` (with a ``transform``, whatever it returns for image and label; plus ``"skipped"`` when
the item replaces bad samples, see ``on_error``). Files are listed and paired by stem when the dataset
is built (cheap: names only); images and labels are decoded, mapped and checked when an item is read.

Layouts (``root`` is the folder that holds the dataset; ``split`` is ``train``/``val``/``test`` or the
dataset's own folder name):

===============  ==============================================================================
``gtav``         ``images/*.png``, ``labels/*.png`` (Cityscapes label IDs; ``*_labelTrainIds.png`` used
                 when present). No split folders: ``train`` (and ``all``) = every image, as the DG
                 papers train on all 24,966; other splits from ``split_file`` (see below).
``synthia``      ``RGB/*.png``, ``GT/LABELS/*.png`` (16-bit, class ID in the first channel). Splits as GTAV.
``urbansyn``     ``rgb/rgb_*.png``, ``ss/ss_*.png`` (train IDs, 19 = void). Splits as GTAV.
``cityscapes``   ``leftImg8bit/{split}/<city>/*_leftImg8bit.png``,
                 ``gtFine/{split}/<city>/*_gtFine_labelIds.png`` (``*_gtFine_labelTrainIds.png`` preferred).
``bdd100k``      ``images/10k/{split}/*.jpg``, ``labels/sem_seg/masks/{split}/*.png`` (train IDs).
``mapillary``    ``{training,validation}/images/*.jpg``, ``{split}/v1.2/labels/*.png`` (or
                 ``{split}/labels``), classes named by ``config_v1.2.json`` (or ``config.json``) in root.
``acdc-<cond>``  ``rgb_anon/<cond>/{split}/<seq>/*_rgb_anon.png``,
                 ``gt/<cond>/{split}/<seq>/*_gt_labelIds.png`` (``*_gt_labelTrainIds.png`` preferred);
                 cond = fog, night, rain, snow.
``folder``       ``{root}/{split}/images/*`` and ``{root}/{split}/labels/*.png`` (label PNGs already in
                 train IDs, same stem as the image, sub-folders allowed); when ``{root}/{split}`` does not
                 exist, ``{root}/images`` and ``{root}/labels``.
===============  ==============================================================================

Split files: ``split_file=`` a text file with one image stem or file name per line, or GTAV's official
``split.mat`` (``trainIds``/``valIds``/``testIds``). For a dataset without split folders it defines the
split (without it, split ``val``/``test`` looks for ``{root}/{split}.txt``, then ``{root}/split.mat``);
for the others it selects a subset of the split folder (e.g. 1/16 of Cityscapes train).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from .labels import (
    CITYSCAPES_IDS,
    NUM_CLASSES,
    SYNTHIA_IDS,
    TRAIN_IDS,
    URBANSYN_IDS,
    IdMap,
    mapillary_id_map,
)

Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
OnError = Literal["raise", "skip"]
UnknownLabels = Literal["warn", "error", "ignore"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A dataset problem: the message names the file or folder and says what was expected."""


@dataclass(frozen=True)
class Sample:
    """One image/label pair. ``id_map`` maps the raw label file to train IDs; ``reader`` is ``png8``
    (PIL: palette/grayscale 8- or 16-bit) or ``png16`` (first channel of a 16-bit PNG, any channels)."""

    image: Path
    label: Path
    id_map: IdMap
    reader: str = "png8"


# ----------------------------------------------------------------------------------------------------
# decoding


def _to_rgb8(im: Image.Image, path: str | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a decoded image of any mode (as OpenCV's IMREAD_COLOR: alpha dropped,
    grayscale repeated, 16-bit samples scaled to 8 bits by their high byte)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        gray = np.asarray(im)
        if gray.size and (int(gray.min()) < 0 or int(gray.max()) > 65535):
            raise DataError(
                f"{path}: 32-bit integer image with values {int(gray.min())}..{int(gray.max())}; "
                "expected an 8- or 16-bit image"
            )
        gray = (gray.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        raise DataError(f"{path}: floating-point image (mode F); expected an 8- or 16-bit image")
    return np.array(im.convert("RGB"))


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3]; DataError naming the file when it cannot be.

    Grayscale, palette, RGBA and CMYK images are converted (alpha dropped); 16-bit images keep their
    high byte (as OpenCV reads them in colour mode). Any decoder failure (truncated, corrupt, not an
    image, a decompression bomb) is a DataError; no other exception leaves this function.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb8(im, path)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise DataError(
            f"{path}: unreadable or truncated image ({type(e).__name__}: {e}); expected a complete image file"
        ) from e


LABEL_MODES = ("P", "L", "I;16", "I;16L", "I;16B", "I")


def read_label(path: str | Path, reader: str = "png8") -> np.ndarray:
    """Decode a label file to raw IDs [H, W] (uint8, uint16 or int32); DataError naming the file when
    it cannot be (no other exception leaves this function).

    ``png8``: a single-channel PNG (palette indices or grayscale values, 8 or 16 bit); a colour (RGB,
    RGBA) or grey+alpha image is refused, since its pixel values are not class IDs.
    ``png16``: the first channel of a PNG of any depth and channel count (SYNTHIA's 16-bit RGB labels;
    PIL alone silently keeps only the high byte of those, see :func:`read_png16_first_channel`).
    """
    try:
        if reader == "png16":
            return read_png16_first_channel(path)
        with Image.open(path) as im:
            mode = im.mode
            if mode not in LABEL_MODES:
                raise DataError(
                    f"{path}: label image has mode {mode}; expected a single-channel PNG of class IDs "
                    f"(palette or grayscale), not a colour visualisation"
                )
            im.load()
            return np.asarray(im)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: label file not found") from e
    except Exception as e:  # see read_image
        want = "a 16-bit PNG" if reader == "png16" else "a complete PNG"
        raise DataError(f"{path}: unreadable or truncated label ({type(e).__name__}: {e}); expected {want}") from e


def read_png16_first_channel(path: str | Path) -> np.ndarray:
    """First channel of a PNG with its full bit depth: [H, W] uint16 (or uint8 for 8-bit files).

    PIL keeps only the high byte of 16-bit RGB(A) samples; such files are read twice (high bytes as
    PIL does by default, then low bytes through the little-endian raw mode) and the bytes joined.
    (torchvision's libpng binding is not used: it crashes the process on some corrupt files.)
    """
    with Image.open(path) as im:
        tile = im.tile
        if not (len(tile) == 1 and tile[0][3] in ("RGB;16B", "RGBA;16B")):
            im.load()
            arr = np.asarray(im)
            return arr if arr.ndim == 2 else arr[..., 0]
        im.load()
        high = np.asarray(im)[..., 0].astype(np.uint16)
    with Image.open(path) as im:
        t = im.tile[0]
        low_mode = t[3].replace("16B", "16L")
        im.tile = [t._replace(args=low_mode) if hasattr(t, "_replace") else (*t[:3], low_mode)]
        im.load()
        low = np.asarray(im)[..., 0].astype(np.uint16)
    return (high << 8) | low


_read_png16_first_channel_pil = read_png16_first_channel  # the name older code and tests import


# ----------------------------------------------------------------------------------------------------
# listing and pairing


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
    a label, a label without an image.
    """
    problems: list[tuple[str, str]] = []
    images: dict[str, Path] = {}
    for path in _list_files(image_dir, image_suffixes, recursive):
        suffix = _match_suffix(path.name, image_suffixes)
        stem = _stem(path.name, suffix or path.suffix, image_prefix)
        if only_stems is not None and stem not in only_stems:
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
        for stem in sorted(only_stems - set(images)):
            problems.append((str(image_dir / stem), "listed in the split file but no such image found"))
    for stem, (_, label, _) in labels.items():
        if stem not in images:
            want = " or ".join(f"{image_prefix}{stem}{s}" for s in image_suffixes)
            problems.append((str(label), f"label without an image: expected {want} under {image_dir}"))
    samples.sort(key=lambda s: str(s.image))
    return samples, problems


def read_split_file(path: Path, split: str) -> set[str]:
    """Stems listed by a split file: text (one stem or file name per line, '#' comments) or GTAV's
    ``split.mat`` (1-based image numbers under ``{split}Ids``, stems zero-padded to 5 digits)."""
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
        line = line.split("#", 1)[0].strip()
        if line:
            name = Path(line).name
            suffix = _match_suffix(name, IMAGE_SUFFIXES)
            stems.add(name[: len(name) - len(suffix)] if suffix else name)
    if not stems:
        raise DataError(f"{path}: split file lists no images; expected one image stem per line")
    return stems


# ----------------------------------------------------------------------------------------------------
# datasets


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
        unknown_labels: label values the dataset does not define are mapped to 255 and ``warn``
            (default, once per file), raise (``error``) or pass silently (``ignore``).
        name: shown in messages.
        skipped: problems found while listing (on_error="skip"), kept in ``self.skipped``.
    """

    name = "dataset"

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform | None = None,
        on_error: OnError = "raise",
        unknown_labels: UnknownLabels = "warn",
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
        self._bad: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Decode sample ``index``: (image uint8 [H,W,3], label uint8 train IDs [H,W], unknown raw values).

        Raises DataError for an unreadable file or an image/label size mismatch; never skips.
        """
        s = self.samples[index]
        image = read_image(s.image)
        raw = read_label(s.label, s.reader)
        if raw.shape != image.shape[:2]:
            raise DataError(
                f"{s.label}: label is {raw.shape[1]}x{raw.shape[0]} but its image {s.image} is "
                f"{image.shape[1]}x{image.shape[0]} (WxH); expected the same size"
            )
        label, unknown = s.id_map.map_checked(raw)
        return image, label, unknown

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label, unknown = self.read(index)
        if unknown and self.unknown_labels != "ignore":
            s = self.samples[index]
            msg = (
                f"{s.label}: label values {unknown} are not defined by {s.id_map.name}; "
                "they are read as 255 (ignore)"
            )
            if self.unknown_labels == "error":
                raise DataError(msg)
            warnings.warn(msg, stacklevel=3)
        return image, label

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
                    image, label = self._load(i)
                    break
                except DataError as e:
                    if self.on_error == "raise":
                        raise
                    self._skip(i, e)
            passed.append((str(self.samples[i].image), self._bad[i]))
        else:
            raise DataError(f"{self.name}: every sample failed to load; see dataset.skipped")
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
        label_t = torch.from_numpy(label.astype(np.int64))
        if self.transform is not None:
            image_t, label_t = self.transform(image_t, label_t)
        item = {"image": image_t, "label": label_t, "path": str(self.samples[i].image)}
        if passed:  # the item stands in for these bad samples: a DataLoader worker's report travels with it
            item["skipped"] = passed
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
    label_kinds: tuple[tuple[str, IdMap], ...] = ((".png", TRAIN_IDS),)
    recursive: bool = False
    image_prefix: str = ""
    label_prefix: str = ""
    reader: str = "png8"
    split_dirs: Mapping[str, str] | None = {"train": "train", "val": "val", "test": "test"}

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Transform | None = None,
        on_error: OnError = "raise",
        unknown_labels: UnknownLabels = "warn",
        split_file: str | os.PathLike | None = None,
    ) -> None:
        if root is None:
            raise DataError(f"{self.name}: root is None; expected the dataset folder")
        self.root = Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            raise DataError(
                f"{self.root}: {self.name} root folder not found; expected a folder "
                f"with {self.image_dir.format(split='<split>')}/ and "
                f"{self.label_dir.format(split='<split>')}/"
            )
        if self.split_dirs is None:
            split_dir = ""
            only_stems = self._split_stems(split, split_file)
        else:  # a split file selects a subset of the split folder (e.g. 1/16 of the labels)
            split_dir = self._split_folder(split)
            only_stems = None if split_file is None else read_split_file(Path(split_file), split)
        image_dir = self.root / self.image_dir.format(split=split_dir)
        label_dir = self.root / self._label_dir(split_dir)
        for folder, what in ((image_dir, "image"), (label_dir, "label")):
            if not folder.is_dir():
                raise DataError(
                    f"{folder}: {what} folder of {self.name} split '{split}' not found; "
                    f"expected the layout {self._layout_hint()}"
                )
        samples, problems = pair_files(
            image_dir, label_dir, self.image_suffixes, self._label_kinds(),
            recursive=self.recursive, image_prefix=self.image_prefix, label_prefix=self.label_prefix,
            reader=self.reader, only_stems=only_stems,
        )  # fmt: skip
        if problems and on_error == "raise":
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            path, reason = problems[0]
            raise DataError(f"{path}: {reason}{more}; leave such files out with --set data.on_error=skip "
                            "(on_error='skip' in Python)")
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

    def _label_kinds(self) -> tuple[tuple[str, IdMap], ...]:
        return self.label_kinds

    def _label_dir(self, split_dir: str) -> str:
        return self.label_dir.format(split=split_dir)

    def _layout_hint(self) -> str:
        return f"{self.root}/{self.image_dir} and {self.root}/{self.label_dir}"

    def _split_folder(self, split: str) -> str:
        assert self.split_dirs is not None
        if split in self.split_dirs:
            return self.split_dirs[split]
        if split in self.split_dirs.values():
            return split
        raise DataError(
            f"{self.root}: unknown split '{split}' for {self.name}; expected one of "
            f"{sorted(set(self.split_dirs) | set(self.split_dirs.values()))}"
        )

    def _split_stems(self, split: str, split_file: str | os.PathLike | None) -> set[str] | None:
        if split_file is not None:
            return read_split_file(Path(split_file), split)
        if split in ("train", "all"):
            return None
        for candidate in (self.root / f"{split}.txt", self.root / "split.mat"):
            if candidate.is_file():
                return read_split_file(candidate, split)
        raise DataError(
            f"{self.root}: {self.name} has no split folders; split 'train' (or 'all') uses "
            f"every image, split '{split}' needs split_file=... or {self.root}/{split}.txt "
            "(one image stem per line)"
        )


class GTAV(PairedFilesDataset):
    """GTA5 (Richter et al. 2016): 24,966 game frames, Cityscapes label IDs."""

    name = "gtav"
    image_dir = "images"
    label_dir = "labels"
    image_suffixes = (".png", ".jpg")
    label_kinds = (("_labelTrainIds.png", TRAIN_IDS), (".png", CITYSCAPES_IDS))
    split_dirs = None


class Synthia(PairedFilesDataset):
    """SYNTHIA-RAND-CITYSCAPES: 9,400 frames, 16-bit labels with the class ID in the first channel."""

    name = "synthia"
    image_dir = "RGB"
    label_dir = "GT/LABELS"
    image_suffixes = (".png",)
    label_kinds = ((".png", SYNTHIA_IDS),)
    reader = "png16"
    split_dirs = None


class UrbanSyn(PairedFilesDataset):
    """UrbanSyn: ``rgb/rgb_N.png`` with ``ss/ss_N.png`` in train IDs (19 = void -> 255)."""

    name = "urbansyn"
    image_dir = "rgb"
    label_dir = "ss"
    image_suffixes = (".png",)
    label_kinds = ((".png", URBANSYN_IDS),)
    image_prefix = "rgb_"
    label_prefix = "ss_"
    split_dirs = None


class Cityscapes(PairedFilesDataset):
    """Cityscapes fine annotations (2,975 train / 500 val)."""

    name = "cityscapes"
    image_dir = "leftImg8bit/{split}"
    label_dir = "gtFine/{split}"
    image_suffixes = ("_leftImg8bit.png",)
    label_kinds = (("_gtFine_labelTrainIds.png", TRAIN_IDS), ("_gtFine_labelIds.png", CITYSCAPES_IDS))
    recursive = True


class BDD100K(PairedFilesDataset):
    """BDD100K 10k semantic segmentation (7,000 train / 1,000 val), masks in train IDs."""

    name = "bdd100k"
    image_dir = "images/10k/{split}"
    label_dir = "labels/sem_seg/masks/{split}"
    image_suffixes = (".jpg", ".png")
    label_kinds = ((".png", TRAIN_IDS),)


class Mapillary(PairedFilesDataset):
    """Mapillary Vistas v1.2 (18,000 training / 2,000 validation), 66 classes mapped by name."""

    name = "mapillary"
    image_dir = "{split}/images"
    label_dir = "{split}/v1.2/labels"
    image_suffixes = (".jpg", ".png")
    split_dirs = {"train": "training", "val": "validation", "test": "testing"}

    def _label_kinds(self) -> tuple[tuple[str, IdMap], ...]:
        for name in ("config_v1.2.json", "config.json"):
            path = self.root / name
            if path.is_file():
                try:
                    return ((".png", mapillary_id_map(path)),)
                except ValueError as e:
                    raise DataError(str(e)) from e
        raise DataError(
            f"{self.root / 'config_v1.2.json'}: Mapillary class config not found; expected the "
            "config_v1.2.json of the Vistas release in the dataset root (labels are mapped by "
            "class name)"
        )

    def _label_dir(self, split_dir: str) -> str:
        if (self.root / split_dir / "v1.2" / "labels").is_dir():
            return f"{split_dir}/v1.2/labels"
        if (self.root / split_dir / "labels").is_dir():
            return f"{split_dir}/labels"
        return f"{split_dir}/v1.2/labels"


ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


class ACDC(PairedFilesDataset):
    """ACDC (adverse conditions): one condition of fog/night/rain/snow; Cityscapes label IDs."""

    image_suffixes = ("_rgb_anon.png",)
    label_kinds = (("_gt_labelTrainIds.png", TRAIN_IDS), ("_gt_labelIds.png", CITYSCAPES_IDS))
    recursive = True

    def __init__(
        self, root: str | os.PathLike, split: str = "train", *, condition: str, **kwargs: Any
    ) -> None:
        if condition not in ACDC_CONDITIONS:
            raise DataError(f"ACDC condition '{condition}' unknown; expected one of {ACDC_CONDITIONS}")
        self.name = f"acdc-{condition}"
        self.image_dir = f"rgb_anon/{condition}/{{split}}"
        self.label_dir = f"gt/{condition}/{{split}}"
        super().__init__(root, split, **kwargs)


class Folder(PairedFilesDataset):
    """Images with same-stem label PNGs: ``{root}/{split}/images`` and ``{root}/{split}/labels``
    (sub-folders allowed), or ``{root}/images`` and ``{root}/labels`` when ``{root}/{split}`` does not
    exist. Label values are class indices 0..num_classes-1 (255 ignore), or raw values mapped by
    ``label_map`` / ``reduce_zero_label`` (see :func:`dgseg.data.classes.folder_id_map`)."""

    name = "folder"
    recursive = True

    def __init__(self, root: str | os.PathLike, split: str = "train", *, num_classes: int = NUM_CLASSES,
                 label_map: Mapping[int, int] | None = None, reduce_zero_label: bool = False,
                 **kwargs: Any) -> None:
        from .classes import ClassSetError, folder_id_map

        try:
            self._id_map = folder_id_map(num_classes, label_map, reduce_zero_label, f"folder {root}")
        except ClassSetError as e:
            raise DataError(str(e)) from None
        if root is not None and (Path(root) / split).is_dir():
            self.image_dir, self.label_dir = f"{split}/images", f"{split}/labels"
        else:
            self.image_dir, self.label_dir = "images", "labels"
        self.split_dirs = {split: split}
        super().__init__(root, split, **kwargs)

    def _label_kinds(self) -> tuple[tuple[str, IdMap], ...]:
        return ((".png", self._id_map),)


# ----------------------------------------------------------------------------------------------------
# factory

DATASETS: dict[str, Callable[..., Dataset]] = {
    "gtav": GTAV,
    "synthia": Synthia,
    "urbansyn": UrbanSyn,
    "cityscapes": Cityscapes,
    "bdd100k": BDD100K,
    "mapillary": Mapillary,
    **{
        f"acdc-{c}": (lambda root, split="train", _c=c, **kw: ACDC(root, split, condition=_c, **kw))
        for c in ACDC_CONDITIONS
    },
    "folder": Folder,
}


def dataset_names() -> list[str]:
    """Every name :func:`build_dataset` accepts (synthetic ones as ``synthetic-<style>``)."""
    from .synthetic import STYLES

    return [*DATASETS, *(f"synthetic-{s}" for s in STYLES)]


def build_dataset(
    name: str, root: str | os.PathLike | None = None, split: str = "train", **kwargs: Any
) -> Dataset:
    """Build a dataset by name (see the module docstring for layouts).

    ``kwargs`` go to the dataset: ``transform``, ``on_error``, ``unknown_labels``, ``split_file``; for
    ``synthetic-<style>`` (root=None): ``length``, ``size`` (H, W), ``seed``, ``transform``.
    """
    key = name.lower()
    if key.startswith("synthetic-"):
        from .synthetic import SyntheticDataset

        if root not in (None, ""):
            raise DataError(
                f"{name}: the synthetic benchmark is generated, it takes no root (got {root}); pass root=None"
            )
        kwargs.pop("on_error", None)
        kwargs.pop("unknown_labels", None)
        return SyntheticDataset(style=key[len("synthetic-") :], split=split, **kwargs)
    if key not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; expected one of {', '.join(dataset_names())}")
    return DATASETS[key](root, split, **kwargs)


def build_datasets(specs: Sequence[Mapping[str, Any]], **common: Any) -> Dataset:
    """Build and concatenate several datasets, e.g. GTAV + Synthia as one source.

    Each spec is a mapping with ``name``, ``root`` (optional for synthetic) and ``split`` plus any
    dataset kwargs; ``common`` kwargs (e.g. ``transform``) go to every dataset unless a spec sets them.
    Returns the dataset itself for one spec, a ``torch.utils.data.ConcatDataset`` for several.
    """
    if not specs:
        raise DataError("build_datasets: no dataset specs given; expected at least one {name, root, split}")
    built = []
    for spec in specs:
        spec = {**common, **spec}
        if "name" not in spec:
            raise DataError(f"dataset spec {spec} has no 'name'; expected name, root, split")
        name = spec.pop("name")
        root = spec.pop("root", None)
        split = spec.pop("split", "train")
        built.append(build_dataset(name, root, split, **spec))
    return built[0] if len(built) == 1 else ConcatDataset(built)


__all__ = [
    "ACDC", "BDD100K", "DATASETS", "DataError", "Cityscapes", "Folder", "GTAV", "Mapillary",
    "NUM_CLASSES", "PairedFilesDataset", "Sample", "SegmentationDataset", "Synthia", "UrbanSyn",
    "build_dataset", "build_datasets", "dataset_names", "pair_files", "read_image", "read_label",
    "read_split_file",
]  # fmt: skip
