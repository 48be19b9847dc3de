"""Which files ``dgseg predict`` reads and writes: the images given (files, folders searched recursively),
their output names (sanitised, always inside ``--out``, a second input of the same name gets ``_2``) and the
check that no output name is one of the inputs (:class:`InputImages`), made before anything is written."""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

from dgseg.data.pairing import IMAGE_SUFFIXES


def check_predict_sources(inputs: list[str], dataset: str | None, root: str | None, split: str | None) -> None:
    """What ``dgseg predict`` reads: IMAGE_OR_DIR arguments, or ``--dataset`` with ``--root`` (and ``--split``);
    refuses neither, both, and ``--root`` / ``--split`` without ``--dataset`` (they would be ignored)."""
    if dataset is None and not inputs:
        raise ValueError("predict: give IMAGE_OR_DIR arguments or --dataset NAME --root DIR --split SPLIT")
    if dataset is not None and inputs:
        raise ValueError(f"predict: give either IMAGE_OR_DIR ({inputs[0]}, ...) or --dataset, not both")
    if dataset is not None and not root:
        raise ValueError(f"predict --dataset {dataset}: --root (the dataset folder) is required")
    if dataset is None and (root is not None or split is not None):
        given = " ".join(f"{o} {v}" for o, v in (("--root", root), ("--split", split)) if v is not None)
        raise ValueError(f"predict: {given} applies to --dataset only; IMAGE_OR_DIR arguments are read as given "
                         "(leave it out, or add --dataset NAME)")


def list_images(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(file, relative output stem) for every image file given or found (recursively) in given folders.

    Files in a folder whose suffix is not an image's are left out and named on stderr; an image given twice
    (by two names, or as a file and inside a folder given too) is refused, naming both."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            every = sorted(f for f in p.rglob("*") if f.is_file())
            files = [f for f in every if f.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise FileNotFoundError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            others = [str(f.relative_to(p)) for f in every if f.suffix.lower() not in IMAGE_SUFFIXES]
            if others:
                print(f"predict: {p}: left out {len(others)} file(s) without an image suffix "
                      f"({', '.join(IMAGE_SUFFIXES)}): {', '.join(others[:5])}{', ...' if len(others) > 5 else ''}",
                      file=sys.stderr)
            found += [(f, f.relative_to(p).with_suffix("")) for f in files]
        elif p.is_file():
            found.append((p, Path(p.stem)))
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    seen: dict[Path, Path] = {}
    for f, _ in found:
        first = seen.setdefault(f.resolve(), f)
        if first is not f:
            also = "" if str(first) == str(f) else f" (also as {first}, inside a folder given?)"
            raise ValueError(f"{f}: the same image given twice{also}; expected each image once")
    return found


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_PART = 120  # characters of one sanitised name part (file systems allow 255 bytes; suffixes are added)


def safe_relative(stem: Path) -> Path:
    """A relative path made of sanitised parts only: never absolute, never '..', no leading dot or dash,
    ASCII letters, digits, '.', '_' and '-' only, each part at most 120 characters."""
    parts = [_SAFE.sub("_", part).lstrip(".-").rstrip(".")[:_MAX_PART] or "_"
             for part in stem.parts if part not in ("", ".", "..", "/")]
    return Path(*parts) if parts else Path("image")


def _entry(path: Path) -> Path:
    """The directory entry ``path`` names: its folder resolved, its last part kept (a link stays a link)."""
    return Path(path).absolute().parent.resolve() / Path(path).name


class InputImages:
    """The input images of a prediction, by every name a write could reach them through: the entry as
    listed, the file a link leads to, and (device, inode) for hard links and case-insensitive disks. An
    output may replace none of them: ``--out`` the input folder with ``--format cityscapes-ids``
    (``x.png`` -> ``x.png``), or an input ``x_color.png`` beside ``x.png``."""

    def __init__(self, paths) -> None:
        self.keys: dict[object, Path] = {}
        for p in map(Path, paths):
            keys: list[object] = [_entry(p), p.resolve()]
            with contextlib.suppress(OSError):
                st = p.stat()
                keys.append((st.st_dev, st.st_ino))
            for key in keys:
                self.keys.setdefault(key, p)

    def check(self, output: str | Path, what: str, source: Path | None = None) -> None:
        """Raises ValueError (naming the input, ``what`` (the prediction of ``source``) and ``output``) when
        writing ``output`` would replace an input image. A link at ``output`` is replaced itself, so only its
        own entry counts."""
        entry = _entry(Path(output))
        keys: list[object] = [entry]
        if not entry.is_symlink():
            with contextlib.suppress(OSError):
                st = entry.stat()
                keys.append((st.st_dev, st.st_ino))
        for key in keys:
            if key in self.keys:
                image = self.keys[key]
                what = "its own prediction" if source is not None and Path(source) == image else what
                fix = ("give --zip a path that is no input image" if what == "the --zip file"
                       else "give --out a folder that holds no input images")
                raise ValueError(f"{image}: an input image would be replaced by {what}, written to {entry}; {fix} "
                                 "(nothing was written)")


def plan_outputs(files: list[tuple[Path, Path]], out: Path, names, unique: bool) -> list[tuple[Path, Path]]:
    """``(image, target)`` for every ``(image, relative stem)``: the target (``out`` / sanitised stem) is
    checked to stay inside ``out``; a second input with the same target gets ``_2``, ... (``unique``: an
    error instead). Every output file ``names(target)`` is checked against the inputs before anything is
    written (:class:`InputImages`)."""
    inputs = InputImages(path for path, _ in files)
    plan: list[tuple[Path, Path]] = []
    taken: set[Path] = set()
    for path, stem in files:
        target = (out / safe_relative(stem)).resolve()
        if out not in target.parents:
            raise ValueError(f"{path}: output name escapes the output folder {out}")
        if unique and target in taken:
            raise ValueError(f"{path}: two inputs would write {target}; a submission needs one file per image")
        base, n = target, 1
        while target in taken:  # two inputs with the same (sanitised) name: never overwrite the first
            n += 1
            target = base.with_name(f"{base.name}_{n}")
        taken.add(target)
        for name in names(target):
            inputs.check(name, f"the prediction of {path}", source=path)
        plan.append((path, target))
    return plan


TRAINIDS_SUFFIXES = ("_labelTrainIds.png", "_color.png", "_overlay.png")
