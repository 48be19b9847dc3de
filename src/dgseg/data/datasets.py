"""Segmentation datasets: real ones read from their distributed folder layouts, mapped on the fly.

Every dataset yields ``{"image": uint8 [3, H, W] RGB, "label": int64 [H, W] (19 train IDs, 255 ignore),
"path": str}`` (with a ``transform``, whatever it returns for image and label; plus ``"skipped"`` when
the item replaces bad samples, see ``on_error``). Files are listed and paired by stem (``folder``: by the path
under ``images``/``labels``) when the dataset is built (cheap: names only); images and labels are decoded,
mapped and checked when an item is read.

Layouts (``root`` is the folder that holds the dataset; ``split`` is ``train``/``val``/``test`` or the
dataset's own folder name):

===============  ==============================================================================
``gtav``         ``images/*.png``, ``labels/*.png`` (Cityscapes label IDs; ``*_labelTrainIds.png`` used
                 when present). No split folders: ``train`` (and ``all``) = every image, as the DG
                 papers train on all 24,966; other splits from ``split_file`` (see below).
``synthia``      ``RGB/*.png``, ``GT/LABELS/*.png`` (16-bit, class ID in the first channel;
                 ``*_labelTrainIds.png`` used when present). Splits as GTAV.
``urbansyn``     ``rgb/rgb_*.png``, ``ss/ss_*.png`` (train IDs, 19 = void). Splits as GTAV.
``cityscapes``   ``leftImg8bit/{split}/<city>/*_leftImg8bit.png``,
                 ``gtFine/{split}/<city>/*_gtFine_labelIds.png`` (``*_gtFine_labelTrainIds.png`` preferred).
``bdd100k``      ``images/10k/{split}/*.jpg``, ``labels/sem_seg/masks/{split}/*.png`` (train IDs).
``mapillary``    ``{training,validation}/images/*.jpg``, ``{split}/v1.2/labels/*.png`` (or
                 ``{split}/labels``), classes named by ``config_v1.2.json`` (or ``config.json``) in root.
``acdc-<cond>``  ``rgb_anon/<cond>/{split}/<seq>/*_rgb_anon.png``,
                 ``gt/<cond>/{split}/<seq>/*_gt_labelIds.png`` (``*_gt_labelTrainIds.png`` preferred);
                 cond = fog, night, rain, snow.
``folder``       ``{root}/{split}/images/*`` and ``{root}/{split}/labels/*.png`` (label PNGs of class indices,
                 each at the same path under ``labels`` as its image under ``images``, sub-folders allowed);
                 when ``{root}/{split}`` does not exist, ``{root}/images`` and ``{root}/labels``: no split
                 folders, splits as GTAV (``train`` from ``{root}/train.txt`` when there is one).
===============  ==============================================================================

Split files: ``split_file=`` a text file with one image stem or file name per line (the dataset's own
suffix and prefix may be included, see :func:`dgseg.data.pairing.listed_stem`), or GTAV's official
``split.mat`` (``trainIds``/``valIds``/``testIds``). For a dataset without split folders it defines the
split (without it, split ``val``/``test`` looks for ``{root}/{split}.txt``, then ``{root}/split.mat``;
``folder`` only for ``{root}/{split}.txt``, and for ``train`` too); for the others it selects a subset of the
split folder (e.g. 1/16 of Cityscapes train). A ``folder``'s entries keep their sub-folders (``cam0/0001``):
see :func:`dgseg.data.path_pairing.resolve_entries`.

This module holds the named datasets and the registry (:data:`DATASETS`, :func:`build_dataset`); the base
classes are in :mod:`dgseg.data.base`, file listing and pairing in :mod:`dgseg.data.pairing`, decoding in
:mod:`dgseg.data.reading` (their names stay importable from here).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from .base import OnError as OnError
from .base import PairedFilesDataset, SegmentationDataset
from .base import Transform as Transform
from .base import UnknownLabels as UnknownLabels
from .labels import (
    CITYSCAPES_IDS,
    NUM_CLASSES,
    SYNTHIA_IDS,
    TRAIN_IDS,
    URBANSYN_IDS,
    IdMap,
    mapillary_id_map,
)
from .pairing import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from .pairing import Sample, pair_files, read_split_file
from .reading import LABEL_MODES as LABEL_MODES
from .reading import DataError, SplitNotFound, read_image, read_label
from .reading import _read_png16_first_channel_pil as _read_png16_first_channel_pil
from .reading import read_png16_first_channel as read_png16_first_channel


class GTAV(PairedFilesDataset):
    """GTA5 (Richter et al. 2016): 24,966 game frames, Cityscapes label IDs."""

    name = "gtav"
    image_dir = "images"
    label_dir = "labels"
    image_suffixes = (".png", ".jpg")
    label_kinds = (("_labelTrainIds.png", TRAIN_IDS), (".png", CITYSCAPES_IDS))
    split_dirs = None


class Synthia(PairedFilesDataset):
    """SYNTHIA-RAND-CITYSCAPES: 9,400 frames, 16-bit labels with the class ID in the first channel; the
    ``*_labelTrainIds.png`` that DAFormer's converter (``tools/convert_datasets/synthia.py``, also VLTSeg's)
    writes beside them (8-bit, Cityscapes train IDs) preferred when present."""

    name = "synthia"
    image_dir = "RGB"
    label_dir = "GT/LABELS"
    image_suffixes = (".png",)
    label_kinds = (("_labelTrainIds.png", TRAIN_IDS, "png8"), (".png", SYNTHIA_IDS, "png16"))
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
    """Images with label PNGs at the same path under ``labels/`` as the image's under ``images/`` (sub-folders
    allowed: :mod:`dgseg.data.path_pairing`), in ``{root}/{split}/images`` and ``{root}/{split}/labels``, or
    ``{root}/images`` and ``{root}/labels`` when ``{root}/{split}`` does not exist (no split folders: ``train``
    is ``{root}/train.txt`` when there is one, else every image, as is ``all``; another split needs a split
    file, ``{root}/{split}.txt`` or ``split_file``). Label values are class indices 0..num_classes-1 (255
    ignore), or raw values mapped by ``label_map`` / ``reduce_zero_label`` (see
    :func:`dgseg.data.classes.folder_id_map`)."""

    name = "folder"
    recursive = True
    other_layout = ", or images/ and labels/ directly under it (no split folders)"

    def __init__(self, root: str | os.PathLike, split: str = "train", *, num_classes: int = NUM_CLASSES,
                 label_map: Mapping[int, int] | None = None, reduce_zero_label: bool = False,
                 **kwargs: Any) -> None:
        from .classes import ClassSetError, folder_id_map

        try:
            self._id_map = folder_id_map(num_classes, label_map, reduce_zero_label, f"folder {root}")
        except ClassSetError as e:
            raise DataError(str(e)) from None
        self._split_path: Path | None = None
        base = None if root is None else Path(root).expanduser()
        self.image_dir, self.label_dir = "{split}/images", "{split}/labels"
        self.split_dirs = {split: split}
        if base is not None and not (base / split).is_dir() and (base / "images").is_dir():
            self.image_dir, self.label_dir = "images", "labels"
            self.split_dirs = None  # no split folders: the split is every image or a split file's
        elif base is not None and base.is_dir() and not (base / split).is_dir():
            found = sorted(d.name for d in base.iterdir() if (d / "images").is_dir())
            raise (SplitNotFound if found else DataError)(  # no split folder at all: the root is wrong
                f"{base / split / 'images'}: image folder of folder split '{split}' not found"
                + (f" (found split folders {', '.join(found)})" if found else "")
                + f"; expected {base / split / 'images'} and {base / split / 'labels'}, or images/ and labels/ "
                f"directly under {base} (no split folders)"
            )
        super().__init__(root, split, **kwargs)

    def _split_stems(self, split: str, split_file: str | os.PathLike | None) -> set[str] | None:
        if split_file is not None:
            return self._read_split_file(Path(split_file), split)
        listed = self.root / f"{split}.txt"
        if split != "all" and listed.is_file():
            return self._read_split_file(listed, split)
        held_out = [self.root / f"{s}.txt" for s in ("val", "test") if (self.root / f"{s}.txt").is_file()]
        if split == "train" and held_out:  # every image would include the ones listed for validation
            raise DataError(
                f"{self.root / 'train.txt'}: not found, and split 'train' without it would read every image "
                f"under {self.root / 'images'}, those listed in {' and '.join(str(h) for h in held_out)} too; "
                "expected a train.txt listing the training images (one per line), or split: all to train on every image"
            )
        if split in ("train", "all"):
            return None
        raise SplitNotFound(
            f"{self.root / split / 'images'}: folder split '{split}' not found; {self.root} holds images/ and "
            f"labels/ directly (no split folders: split 'all' is every image, as is 'train' without "
            f"{self.root / 'train.txt'}); expected split folders {split}/images and {split}/labels under "
            f"{self.root}, a split file {listed} or the entry's split_file (one image per line), or split: all"
        )

    def _read_split_file(self, path: Path, split: str) -> set[str]:
        self._split_path = path
        return read_split_file(path, split, self.image_suffixes, self.image_prefix, folders=True)

    def _pair(self, image_dir: Path, label_dir: Path, only_stems: set[str] | None
              ) -> tuple[list[Sample], list[tuple[str, str]]]:
        from .path_pairing import BY_PATH

        return super()._pair(image_dir, label_dir, only_stems, matching=BY_PATH, source=self._split_path)

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


def unknown_labels_policy(name: str, setting: str = "auto") -> str:
    """What reading dataset ``name`` does with label values it does not define, for the config's
    ``data.unknown_labels`` ``setting``: ``auto`` is ``error`` for ``folder`` (its class count is the user's, so
    a value beyond it is a mistake) and ``ignore`` for a built-in dataset (as Rein's offline converters: every
    raw ID outside the dataset's table -> 255, here logged); any other setting is itself."""
    if setting != "auto":
        return setting
    return "error" if name.lower() == "folder" else "ignore"


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
    "read_split_file", "unknown_labels_policy",
]  # fmt: skip
