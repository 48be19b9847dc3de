"""Whether a label file a dataset reads as its raw label IDs holds train IDs instead, and what to name it.

GTAV, SYNTHIA, Cityscapes and ACDC read two forms of label file: their raw IDs (``labels/00001.png``,
``*_gtFine_labelIds.png``) and train IDs (``*_labelTrainIds.png``, as the usual converters write them). A
train-ID file under a raw-ID name is read through the raw-ID table: its 255 is not a raw ID, and its
road, sidewalk, building, ... (0..6) are void there. :func:`train_id_hint` says so, naming the file's
train-ID name; ``dgseg data check`` and the dataset's own errors add it to what they report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .labels import IGNORE_INDEX, NUM_CLASSES, TRAIN_IDS, IdMap

IGNORED_SHARE = 0.5
"""A file whose values are all train IDs looks like one when its raw-ID table does not define one of them
(255) or reads more than this share of its pixels as ignore (a raw-ID file keeps most pixels)."""


def train_id_suffix(kinds: Sequence[tuple], id_map: IdMap) -> str | None:
    """The file suffix a dataset of label ``kinds`` ((suffix, IdMap[, reader]), :data:`~dgseg.data.pairing.LabelKind`)
    reads as train IDs, when a file read through ``id_map`` is of another kind; else None."""
    if id_map is TRAIN_IDS:
        return None
    return next((kind[0] for kind in kinds if kind[1] is TRAIN_IDS), None)


def looks_like_train_ids(raw: np.ndarray, id_map: IdMap) -> str | None:
    """Why the label values ``raw`` [H, W], read through ``id_map``, look like train IDs: all of them are
    train IDs (0..18, 255) and ``id_map`` does not define some (255), or is a table of 16-bit values (SYNTHIA's)
    while ``raw`` came from an 8-bit file, or reads most pixels as ignore (:data:`IGNORED_SHARE`; a file of one
    value, such as Cityscapes' all-0 test labels, is not judged); None when they do not."""
    raw = np.asarray(raw)
    if raw.size == 0 or raw.dtype.kind not in "ui" or raw.min() < 0 or raw.max() > IGNORE_INDEX:
        return None
    counts = np.bincount(raw.reshape(-1), minlength=IGNORE_INDEX + 1)  # values 0..255: cheap
    values = np.flatnonzero(counts)
    counts = counts[values]
    if np.any((values >= NUM_CLASSES) & (values != IGNORE_INDEX)):
        return None
    inside = values < len(id_map.known)
    undefined = values[~inside].tolist() + values[inside][~id_map.known[values[inside]]].tolist()
    if undefined:
        return f"{id_map.name} do not define {sorted(int(v) for v in undefined)}"
    if len(id_map.lut) > 256 and raw.dtype == np.uint8:  # SYNTHIA's raw IDs: a table of 16-bit values
        return f"{id_map.name} come in 16-bit files; this file is 8-bit"
    ignored = counts[id_map.lut[values] == IGNORE_INDEX].sum() / raw.size
    if len(values) > 1 and ignored > IGNORED_SHARE:
        return f"{id_map.name} read {100 * ignored:.0f}% of its pixels as ignore"
    return None


def train_id_hint(label: Path, raw: np.ndarray, id_map: IdMap, kinds: Sequence[tuple], name: str) -> str:
    """``; ...`` saying that ``label`` (raw values ``raw``, read through ``id_map``) looks like a train-ID file
    and the name dataset ``name`` (of label ``kinds``) reads as train IDs; ``""`` when it does not look like one
    or the dataset has no train-ID form."""
    suffix = train_id_suffix(kinds, id_map)
    why = None if suffix is None else looks_like_train_ids(raw, id_map)
    if why is None:
        return ""
    own = next((k[0] for k in sorted(kinds, key=lambda k: -len(k[0]))
                if k[1] is id_map and label.name.lower().endswith(k[0].lower())), label.suffix)
    renamed = label.name[: len(label.name) - len(own)] + suffix
    values = np.flatnonzero(np.bincount(np.asarray(raw).reshape(-1))).tolist()
    return (f"; its values {values} look like train IDs ({why}): {name} reads a label file as train IDs when it "
            f"is named *{suffix}, here {label.with_name(renamed)}")
