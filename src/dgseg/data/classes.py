"""The class set of an experiment: class names and colours, from a preset or the user's own YAML file.

    cs = load_class_set("cityscapes")            # presets: cityscapes (19), synthia16, synthia13
    cs = load_class_set("my_classes.yaml")       # {names: [...], palette: [[r, g, b], ...]} (palette optional)
    cs.names, cs.palette                         # tuple of K str, uint8 [K, 3]

A config's ``data.classes`` is a preset name, a YAML file or the same mapping inline; a config loaded
from a file keeps presets by name and records a file's content inline (so a checkpoint never needs the
file again). Class indices are 0..K-1 with 255 = ignore, so K <= 255.

The Synthia protocol (SYNTHIA -> Cityscapes, as in the DG/DA literature): SYNTHIA has no terrain, truck
or train, so results are reported as mIoU over the 16 remaining Cityscapes classes; the 13-class mIoU
also leaves out wall, fence and pole.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .labels import CLASSES, IGNORE_INDEX, PALETTE, IdMap

MAX_CLASSES = 255
"""Class indices are stored in uint8 label maps where 255 means ignore."""

SYNTHIA16_EXCLUDED = ("terrain", "truck", "train")
SYNTHIA13_EXCLUDED = SYNTHIA16_EXCLUDED + ("wall", "fence", "pole")


class ClassSetError(ValueError):
    """A class list, palette, label map or class subset is invalid; the message names where and why."""


@dataclass(frozen=True, eq=False)
class ClassSet:
    """K class names and their colours. ``palette`` is uint8 [K, 3] (RGB, read-only)."""

    names: tuple[str, ...]
    palette: np.ndarray
    source: str = "inline"
    """Where it came from: a preset name, a file path or 'inline' (shown in messages)."""

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        """The inline config form: ``{"names": [...], "palette": [[r, g, b], ...]}``."""
        return {"names": list(self.names), "palette": self.palette.astype(int).tolist()}

    def describe(self) -> str:
        """For messages: ``'my_classes.yaml' (5 classes: a, b, c, d, e)``."""
        shown = ", ".join(self.names[:8]) + (", ..." if len(self.names) > 8 else "")
        return f"'{self.source}' ({self.num_classes} classes: {shown})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ClassSet) and self.names == other.names
                and np.array_equal(self.palette, other.palette))

    def __hash__(self) -> int:
        return hash(self.names)


PALETTE_SPACING = 18.0
"""The least RGB distance between two colours of :func:`default_palette` (the first 100 colours of its sequence
are all further apart than this, so palettes of up to 100 classes are the sequence's first colours)."""


def default_palette(k: int) -> np.ndarray:
    """K distinct, saturated colours (uint8 [K, 3]), none black (black is ignore): hues spaced by the
    golden ratio, brightness and saturation stepping through three levels so neighbours differ. A colour
    closer than :data:`PALETTE_SPACING` to one taken is passed over (from about 100 classes on the sequence
    comes back near its own colours); should the sequence run dry, the spacing is halved, never below 1."""
    colours: list[np.ndarray] = []
    spacing, i, tried = PALETTE_SPACING, 0, 0
    while len(colours) < k:
        h = (i * 0.6180339887498949) % 1.0
        v = (0.95, 0.7, 0.5)[i % 3]
        s = (0.85, 0.6, 1.0)[(i // 3) % 3]
        rgb = np.array([int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v)], dtype=np.float64)
        i, tried = i + 1, tried + 1
        if rgb.any() and (not colours or np.sqrt(((np.stack(colours) - rgb) ** 2).sum(1)).min() >= spacing):
            colours.append(rgb)
            tried = 0
        elif tried > 20000:  # 255 colours need about 1,300 draws at the spacing: a guard, not a path taken
            spacing, tried = max(1.0, spacing / 2), 0
    return np.array(colours, dtype=np.uint8).reshape(k, 3)


def _subset(excluded: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    keep = [i for i, n in enumerate(CLASSES) if n not in excluded]
    return tuple(CLASSES[i] for i in keep), PALETTE[keep]


def _preset(name: str) -> ClassSet:
    if name == "cityscapes":
        names, palette = tuple(CLASSES), PALETTE
    else:
        names, palette = _subset(SYNTHIA16_EXCLUDED if name == "synthia16" else SYNTHIA13_EXCLUDED)
    return ClassSet(names, _readonly(palette), name)


PRESETS = ("cityscapes", "synthia16", "synthia13")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.uint8)
    a.flags.writeable = False
    return a


def class_set_from_dict(data: Any, where: str) -> ClassSet:
    """A ClassSet from ``{names: [...], palette: [[r, g, b], ...] (optional)}``; ``where`` names the file
    or key in errors."""
    if not isinstance(data, Mapping):
        raise ClassSetError(f"{where}: expected a mapping with 'names' (a list of class names) and optionally "
                            f"'palette' (a list of [r, g, b]), got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - {"names", "palette"})
    if unknown:
        raise ClassSetError(f"{where}: unknown keys {unknown}; expected 'names' and optionally 'palette'")
    names = data.get("names")
    if names is None:
        raise ClassSetError(f"{where}: no 'names'; expected names: [class 0, class 1, ...] (the class of "
                            f"index i is the i-th name)")
    if not isinstance(names, (list, tuple)) or not names:
        raise ClassSetError(f"{where}: 'names' must be a non-empty list of class names, got {names!r}")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ClassSetError(f"{where}: every name must be a non-empty string; got {bad[0]!r}")
    odd = [(i, n) for i, n in enumerate(names) if any(not c.isprintable() for c in n)]
    if odd:  # a line break or tab would split the rows of eval.md's tables and the report's labels
        raise ClassSetError(f"{where}: names[{odd[0][0]}] is {odd[0][1]!r}, with a line break, tab or other control "
                            "character; expected a name on one line")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ClassSetError(f"{where}: duplicate class names {dup}; each class needs its own name")
    if len(names) > MAX_CLASSES:
        raise ClassSetError(f"{where}: {len(names)} classes; at most {MAX_CLASSES} (index 255 is ignore)")
    palette = data.get("palette")
    if palette is None:
        pal = default_palette(len(names))
    else:
        if not isinstance(palette, (list, tuple)) or len(palette) != len(names):
            n = len(palette) if isinstance(palette, (list, tuple)) else type(palette).__name__
            raise ClassSetError(f"{where}: 'palette' has {n} entries but there are {len(names)} names; "
                                f"expected one [r, g, b] per class (or no palette: distinct default colours)")
        for i, c in enumerate(palette):
            if (not isinstance(c, (list, tuple)) or len(c) != 3
                    or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)):
                raise ClassSetError(f"{where}: palette[{i}] is {c!r}; expected [r, g, b] with integers 0..255")
        pal = np.array(palette, dtype=np.uint8)
    return ClassSet(tuple(names), _readonly(pal), where)


def load_class_set(spec: str | Mapping | ClassSet | None, key: str = "data.classes") -> ClassSet:
    """A preset name, a YAML file path, an inline mapping (or a ClassSet, or None = cityscapes). ``key``: where
    ``spec`` came from, for the error (``data.classes``, ``eval.miou_subsets[i]``, ``--classes``)."""
    import yaml

    if isinstance(spec, ClassSet):
        return spec
    if spec is None:
        return _preset("cityscapes")
    if isinstance(spec, Mapping):
        return class_set_from_dict(spec, key)
    if not isinstance(spec, str):
        raise ClassSetError(f"{key}: expected a preset name ({', '.join(PRESETS)}), a YAML file or "
                            f"{{names: [...], palette: [...]}}, got {spec!r}")
    if spec in PRESETS:
        return _preset(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ClassSetError(f"{key}: '{spec}' is neither a preset ({', '.join(PRESETS)}) nor a file "
                            f"(relative paths are from the current folder: {Path.cwd()})")
    from dgseg.strict_yaml import DuplicateKeyError, load_yaml_text

    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, DuplicateKeyError) as e:
        raise ClassSetError(f"{path}: not a readable YAML classes file ({e})") from e
    cs = class_set_from_dict(data, str(path))
    return cs


# ------------------------------------------------------------------------------------------ label maps


def folder_id_map(num_classes: int, label_map: Mapping[int, int] | None = None,
                  reduce_zero_label: bool = False, where: str = "folder") -> IdMap:
    """How a ``folder`` dataset's label PNG values become class indices.

    - default: values 0..K-1 are the classes, 255 is ignore, anything else is an unknown value
      (an error by default, as the dataset's ``unknown_labels`` says) and read as 255;
    - ``label_map`` {raw: index}: listed raw values map to their index (or 255); every other raw value
      is ignore (255) by definition;
    - ``reduce_zero_label`` (ADE20K): 0 -> 255, v -> v - 1 for v in 1..K, 255 stays ignore, others unknown.
    """
    if label_map is not None and reduce_zero_label:
        raise ClassSetError(f"{where}: label_map and reduce_zero_label both given; use one of them")
    size = 65536
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(size, dtype=bool)
    if label_map is not None:
        check_label_map(label_map, num_classes, where)
        for raw, idx in label_map.items():
            lut[int(raw)] = int(idx)
        known[:] = True
        name = f"{where} label_map"
    elif reduce_zero_label:
        lut[1 : num_classes + 1] = np.arange(num_classes)
        known[: num_classes + 1] = True
        known[IGNORE_INDEX] = True
        lut[IGNORE_INDEX] = IGNORE_INDEX
        name = f"{where} (reduce_zero_label: 1..{num_classes} -> 0..{num_classes - 1}, 0 and 255 ignore)"
    else:
        lut[:num_classes] = np.arange(num_classes)
        known[:num_classes] = True
        known[IGNORE_INDEX] = True
        name = f"{where} ({num_classes} classes: indices 0..{num_classes - 1}, 255 ignore)"
    lut.flags.writeable = False
    known.flags.writeable = False
    return IdMap(name, lut, known)


def check_label_map(label_map: Mapping[Any, Any], num_classes: int, where: str) -> None:
    """ClassSetError unless every entry maps a raw value 0..65535 to an index 0..K-1 or 255."""
    if not label_map:
        raise ClassSetError(f"{where}: label_map is empty; expected {{raw value: class index}}")
    for raw, idx in label_map.items():
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 65535:
            raise ClassSetError(f"{where}: label_map key {raw!r} is not a label value 0..65535")
        if isinstance(idx, bool) or not isinstance(idx, int) or not (0 <= idx < num_classes or idx == IGNORE_INDEX):
            raise ClassSetError(f"{where}: label_map maps {raw} -> {idx!r}, outside the class indices "
                                f"0..{num_classes - 1} of the {num_classes} classes (or 255 = ignore)")


def index_remap(source: ClassSet, target: ClassSet, where: str) -> np.ndarray | None:
    """A lookup table uint8 [256] from ``source`` class indices to ``target`` ones, by name (classes that
    ``target`` lacks become 255); None when the two are the same list. ClassSetError when a target class
    is not in ``source`` (a dataset cannot provide it)."""
    if source.names == target.names:
        return None
    missing = [n for n in target.names if n not in source.names]
    if missing:
        raise ClassSetError(
            f"{where}: the dataset's labels are the classes {source.describe()}, the experiment's are "
            f"{target.describe()}; classes {missing} are not among the dataset's. Use a 'folder' dataset "
            f"with a label_map, or a data.classes whose names are all among the dataset's"
        )
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for i, n in enumerate(source.names):
        if n in target.names:
            lut[i] = target.names.index(n)
    return lut


# --------------------------------------------------------------------------------------- mIoU subsets


def subset_indices(subset: ClassSet, classes: ClassSet, where: str) -> list[int]:
    """The indices in ``classes`` of the ``subset``'s names; ClassSetError naming the missing ones."""
    missing = [n for n in subset.names if n not in classes.names]
    if missing:
        raise ClassSetError(f"{where}: subset {subset.source} needs classes {missing}, which the experiment's "
                            f"classes {classes.describe()} do not have")
    return [classes.names.index(n) for n in subset.names]


def subset_miou(iou: Sequence[float], indices: Sequence[int]) -> float:
    """Mean of the per-class IoUs at ``indices``, NaN (never seen) classes left out, as SegMetric's mIoU."""
    values = [float(iou[i]) for i in indices if not math.isnan(float(iou[i]))]
    return sum(values) / len(values) if values else math.nan


def subset_name(spec: str) -> str:
    """The column name of a subset: its preset name, or its file's stem."""
    return spec if spec in PRESETS else Path(spec).stem


# ------------------------------------------------------------------------------------- a config's classes


def resolve_config_classes(cfg: Any) -> ClassSet:
    """Resolve and check a Config's class set in place (ClassSetError naming the key otherwise):
    ``model.num_classes`` None -> K, a different number -> error naming both; ``data.classes`` from a
    file -> the file's content inline; label maps, subsets and text prompts checked against it."""
    cs = load_class_set(cfg.data.classes)
    k = cs.num_classes
    if cfg.model.num_classes is None:
        cfg.model.num_classes = k
    elif cfg.model.num_classes != k:
        raise ClassSetError(f"model.num_classes is {cfg.model.num_classes} but data.classes {cs.describe()} "
                            f"has {k}; set model.num_classes: {k} or leave it out (it is taken from the classes)")
    if not (isinstance(cfg.data.classes, str) and cfg.data.classes in PRESETS):
        cfg.data.classes = cs.to_dict()
    for part in ("train", "val"):
        for i, spec in enumerate(getattr(cfg.data, part)):
            where = f"data.{part}[{i}]"
            if spec.label_map is None and not spec.reduce_zero_label:
                continue
            if spec.name != "folder":
                raise ClassSetError(f"{where}: label_map and reduce_zero_label apply to 'folder' datasets; "
                                    f"'{spec.name}' maps its own label IDs to the Cityscapes classes (choose "
                                    f"data.classes among them, e.g. synthia16)")
            folder_id_map(k, spec.label_map, spec.reduce_zero_label, f"{where}.label_map")
    for i, sub in enumerate(cfg.eval.miou_subsets):
        subset_indices(load_class_set(sub, f"eval.miou_subsets[{i}]"), cs, f"eval.miou_subsets[{i}]")
    return cs


def config_class_set(cfg: Any) -> ClassSet:
    """The class set of a loaded Config (a preset or the inline content recorded at load)."""
    cs = load_class_set(cfg.data.classes)
    if cfg.model.num_classes is not None and cs.num_classes != cfg.model.num_classes:
        raise ClassSetError(f"model.num_classes is {cfg.model.num_classes} but data.classes {cs.describe()} "
                            f"has {cs.num_classes}")
    return cs


__all__ = [
    "MAX_CLASSES", "PRESETS", "SYNTHIA13_EXCLUDED", "SYNTHIA16_EXCLUDED", "ClassSet", "ClassSetError",
    "check_label_map", "class_set_from_dict", "default_palette", "folder_id_map", "index_remap",
    "config_class_set", "load_class_set", "resolve_config_classes", "subset_indices", "subset_miou", "subset_name",
]  # fmt: skip
