"""The 19 Cityscapes train-ID classes and the tables that map each dataset's raw label IDs onto them.

Every dataset in dgseg is read as 19 train IDs (0..18) with 255 = ignore. A raw label file is mapped
through an :class:`IdMap`: a numpy lookup table (256 entries for 8-bit label PNGs, 65536 for 16-bit
ones) plus the set of raw values the dataset defines, so that a value outside it can be reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Official Cityscapes colours (cityscapesscripts/helpers/labels.py), RGB, one row per train ID.
PALETTE: np.ndarray = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
        (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip
PALETTE.flags.writeable = False


@dataclass(frozen=True)
class IdMap:
    """Raw dataset label IDs -> train IDs.

    ``lut`` is uint8 [N] (N = 256 or 65536): ``lut[raw]`` is the train ID, 255 for ignore.
    ``known`` is bool [N]: the raw values the dataset defines; others are reported as unknown
    (and mapped to 255).
    """

    name: str
    lut: np.ndarray
    known: np.ndarray

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Map a raw label array (any integer dtype, [H, W]) to uint8 train IDs [H, W]."""
        return self.map_checked(raw)[0]

    def unknown_values(self, raw: np.ndarray) -> list[int]:
        """The distinct values of ``raw`` that this dataset does not define (sorted)."""
        raw = np.asarray(raw)
        if raw.size == 0:
            return []
        if raw.dtype in (np.uint8, np.uint16):
            counts = np.bincount(raw.ravel(), minlength=len(self.known))
            present = np.flatnonzero(counts)
        else:
            present = np.unique(raw)
        inside = (present >= 0) & (present < len(self.known))
        bad = present[~inside].tolist() + present[inside][~self.known[present[inside]]].tolist()
        return sorted(int(v) for v in bad)

    def map_checked(self, raw: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Map ``raw`` [H, W]; return (train IDs uint8 [H, W], unknown raw values). Unknown values -> 255."""
        raw = np.asarray(raw)
        unknown = self.unknown_values(raw)
        if not unknown:
            return self.lut[raw], []
        inside = (raw >= 0) & (raw < len(self.lut))
        out = self.lut[np.where(inside, raw, 0)]
        out[~inside] = IGNORE_INDEX
        out[np.isin(raw, unknown)] = IGNORE_INDEX
        return out, unknown


def make_id_map(name: str, mapping: Mapping[int, int], known: Sequence[int], size: int = 256) -> IdMap:
    """Build an :class:`IdMap` from ``{raw_id: train_id}``; every other raw value maps to 255."""
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for raw, train in mapping.items():
        if not (train == IGNORE_INDEX or 0 <= train < NUM_CLASSES):
            raise ValueError(f"{name}: train ID {train} for raw ID {raw} is not in 0..18 or 255")
        lut[raw] = train
    ok = np.zeros(size, dtype=bool)
    ok[list(known)] = True
    lut.flags.writeable = False
    ok.flags.writeable = False
    return IdMap(name, lut, ok)


# Cityscapes label IDs (0..33 as stored in *_labelIds.png; GTAV and ACDC use the same IDs).
CITYSCAPES_ID_TO_TRAIN: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_IDS = make_id_map("cityscapes label IDs", CITYSCAPES_ID_TO_TRAIN, known=range(34))

# Files already in train IDs (BDD100K masks, *_labelTrainIds.png, the `folder` dataset).
TRAIN_IDS = make_id_map(
    "train IDs", {i: i for i in range(NUM_CLASSES)}, known=[*range(NUM_CLASSES), IGNORE_INDEX]
)

# SYNTHIA-RAND-CITYSCAPES: 16-bit PNGs, class ID in the first channel, classes 0..22.
SYNTHIA_ID_TO_TRAIN: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
    8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}  # fmt: skip
SYNTHIA_IDS = make_id_map("synthia IDs", SYNTHIA_ID_TO_TRAIN, known=range(23), size=65536)

# UrbanSyn: train IDs with 19 = void.
URBANSYN_IDS = make_id_map(
    "urbansyn IDs",
    {i: i for i in range(NUM_CLASSES)},
    known=[*range(NUM_CLASSES + 1), IGNORE_INDEX],
)

# Mapillary Vistas: mapped by class name (config_v1.2.json), never by number. A rule is a glob on the
# class `name` field (e.g. "construction--flat--road"); the first matching rule wins. Names not
# matched by any rule are ignored (255). On the 66 v1.2 classes these rules give exactly what Rein's
# converter (w1oves/Rein tools/convert_datasets/mapillary2cityscape.py) gives by substrings of the
# `readable` names, which also maps Curb Cut -> sidewalk, Traffic Sign Frame -> traffic sign and
# Utility Pole -> pole (:func:`rein_readable_train_id`).
MAPILLARY_NAME_RULES: tuple[tuple[str, str], ...] = (
    ("construction--flat--road", "road"),
    ("construction--flat--crosswalk-plain", "road"),
    ("construction--flat--parking", "road"),
    ("construction--flat--bike-lane", "road"),
    ("construction--flat--service-lane", "road"),
    ("marking--*", "road"),  # lane markings: general, crosswalk-zebra
    ("construction--flat--sidewalk", "sidewalk"),
    ("construction--flat--pedestrian-area", "sidewalk"),
    ("construction--barrier--curb", "sidewalk"),
    ("construction--flat--curb-cut", "sidewalk"),
    ("construction--structure--building", "building"),
    ("construction--barrier--wall", "wall"),
    ("construction--barrier--fence", "fence"),
    ("object--support--pole", "pole"),
    ("object--support--utility-pole", "pole"),
    ("object--street-light", "pole"),
    ("object--traffic-light", "traffic light"),
    ("object--traffic-sign--front", "traffic sign"),
    ("object--traffic-sign--back", "traffic sign"),
    ("object--support--traffic-sign-frame", "traffic sign"),
    ("nature--vegetation", "vegetation"),
    ("nature--terrain", "terrain"),
    ("nature--sky", "sky"),
    ("human--person", "person"),
    ("human--rider--*", "rider"),  # bicyclist, motorcyclist, other-rider
    ("object--vehicle--car", "car"),
    ("object--vehicle--truck", "truck"),
    ("object--vehicle--bus", "bus"),
    ("object--vehicle--on-rails", "train"),
    ("object--vehicle--motorcycle", "motorcycle"),
    ("object--vehicle--bicycle", "bicycle"),
)

# Rein's converter on the `readable` field (lower case, spaces and "-" removed): an exact class name first,
# then these substring rules in order (tools/convert_datasets/mapillary2cityscape.py, get_trans_idx).
REIN_READABLE_SUBSTRINGS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("trafficsign", "front", "back"), "traffic sign"),
    (("onrail",), "train"),
    (("cyclist", "rider"), "rider"),
    (("pole", "streetlight"), "pole"),
    (("curb", "pedestrianarea"), "sidewalk"),
    (("crosswalkplain", "parking", "bikelane", "servicelane", "lanemarking"), "road"),
)


def rein_readable_train_id(readable: str) -> int:
    """Train ID of a Mapillary class by its ``readable`` name, as Rein's converter decides; 255 if none."""
    key = readable.lower().replace(" ", "").replace("-", "")
    exact = {c.replace(" ", ""): i for i, c in enumerate(CLASSES)}
    if key in exact:
        return exact[key]
    for parts, cls in REIN_READABLE_SUBSTRINGS:
        if any(p in key for p in parts):
            return CLASSES.index(cls)
    return IGNORE_INDEX


def mapillary_train_id(name: str, readable: str | None = None) -> int:
    """Train ID of one Mapillary class, by its ``name`` (or ``readable``) field; 255 if none applies."""
    key = name.strip().lower()
    for pattern, cls in MAPILLARY_NAME_RULES:
        if fnmatchcase(key, pattern):
            return CLASSES.index(cls)
    if readable is not None and "--" not in key:
        return rein_readable_train_id(readable)
    return IGNORE_INDEX


def mapillary_id_map(config_path: str | Path) -> IdMap:
    """Read a Mapillary ``config_v1.2.json`` and build the map: label index i = the i-th entry of
    ``labels``, mapped by name through :data:`MAPILLARY_NAME_RULES`.

    Raises ValueError (naming the file) when the file is not a Mapillary config.
    """
    path = Path(config_path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        labels = config["labels"]
        names = [(str(entry["name"]), entry.get("readable")) for entry in labels]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path}: expected a Mapillary Vistas config (JSON with a 'labels' list of objects with "
            f"a 'name' field), could not read it: {e}"
        ) from e
    if not names or len(names) > 256:
        raise ValueError(f"{path}: expected 1..256 classes in 'labels', found {len(names)}")
    mapping = {i: mapillary_train_id(n, r) for i, (n, r) in enumerate(names)}
    return make_id_map(f"mapillary ({path.name})", mapping, known=range(len(names)))


def colorize(label: np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Train-ID label [H, W] -> RGB uint8 [H, W, 3]; ignore (and any value >= 19) is black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    return lut[np.asarray(label).astype(np.int64).clip(0, 255)]
