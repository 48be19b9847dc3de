"""Test-server submissions: predictions as Cityscapes *label ID* PNGs, for a dataset split or loose files.

The Cityscapes and ACDC evaluation servers read one single-channel PNG per test image, in the label IDs
of the official Cityscapes table (``cityscapesscripts/helpers/labels.py``), named after the image. This
is what mmseg's ``CityscapesMetric(format_only=True)`` writes (``mmseg/evaluation/metrics/citys_metric.py``:
``<image stem>.png``, train ID -> ``trainId2label[train_id].id``). dgseg keeps the dataset's sub-folders
(``test/<city>/...`` for Cityscapes, ``<condition>/test/<sequence>/...`` for ACDC) and can zip the result.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dgseg.atomic import write_atomic
from dgseg.config import Config
from dgseg.config.validate import domain_name

# The official table's (label ID, train ID) rows for the 19 evaluated classes. cityscapesScripts builds
# ``trainId2label = {label.trainId: label for label in reversed(labels)}``: a train ID maps to the FIRST
# label of the table with that train ID, so ignore (255) maps to 'unlabeled' (ID 0).
CITYSCAPES_TRAIN_TO_LABEL_ID: dict[int, int] = {
    0: 7, 1: 8, 2: 11, 3: 12, 4: 13, 5: 17, 6: 19, 7: 20, 8: 21, 9: 22, 10: 23, 11: 24, 12: 25, 13: 26,
    14: 27, 15: 28, 16: 31, 17: 32, 18: 33, 255: 0,
}  # fmt: skip

FORMATS = ("trainids", "cityscapes-ids")

# Where each dataset keeps the images of a split: (image root under the dataset root, split folder under
# it, image file suffixes). Output paths are relative to the image root, so the sub-folders are kept.
SPLIT_IMAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cityscapes": ("leftImg8bit", "{split}", ("_leftImg8bit.png",)),
    **{f"acdc-{c}": ("rgb_anon", f"{c}/{{split}}", ("_rgb_anon.png",)) for c in ("fog", "night", "rain", "snow")},
}
GROUPS = {"acdc": ["acdc-fog", "acdc-night", "acdc-rain", "acdc-snow"]}


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes train IDs (0..18, 255) [H, W] -> label IDs uint8 [H, W] through the official table."""
    train_ids = np.asarray(train_ids)
    bad = sorted(set(np.unique(train_ids).tolist()) - set(CITYSCAPES_TRAIN_TO_LABEL_ID))
    if bad:
        raise ValueError(f"to_label_ids: values {bad[:10]} are not Cityscapes train IDs (0..18 or 255)")
    lut = np.zeros(256, dtype=np.uint8)
    for train_id, label_id in CITYSCAPES_TRAIN_TO_LABEL_ID.items():
        lut[train_id] = label_id
    return lut[train_ids.astype(np.int64)]


def split_images(name: str, root: str | os.PathLike, split: str) -> list[tuple[Path, Path]]:
    """(image file, output path relative to the output folder, without suffix) for every image of a
    dataset split, labels not needed (test splits have none). ``name``: cityscapes, acdc-<condition>, or
    acdc (the four conditions at once)."""
    key = name.lower()
    names = GROUPS.get(key, [key])
    if any(n not in SPLIT_IMAGES for n in names):
        raise ValueError(f"--dataset {name}: submissions are written for {', '.join([*SPLIT_IMAGES, *GROUPS])}; "
                         "for other images pass their folder as IMAGE_OR_DIR")
    found: list[tuple[Path, Path]] = []
    for n in names:
        image_root, split_dir, suffixes = SPLIT_IMAGES[n]
        base = Path(root).expanduser() / image_root
        folder = base / split_dir.format(split=split)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: image folder of {n} split '{split}' not found; expected "
                                    f"{Path(root) / image_root / split_dir.format(split='<split>')}/**/*{suffixes[0]}")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(suffixes))
        if not files:
            raise FileNotFoundError(f"{folder}: no *{suffixes[0]} images in {n} split '{split}'")
        found += [(p, p.relative_to(base).with_suffix("")) for p in files]
    return found


def dataset_settings(cfg: Config, dataset: str, resize: tuple[int, int] | float | None,
                     mode: str | None) -> tuple[tuple[int, int] | float | None, str | None, str]:
    """``predict --dataset``'s (resize, mode, what it says of them): those given (``--resize``, ``--mode``), else
    those of the checkpoint's ``data.val`` entries of the dataset, as ``eval`` runs them (mmseg predicts a test
    split through the config's test pipeline), else the image's own size and ``eval.mode``."""
    names = GROUPS.get(dataset.lower(), [dataset.lower()])
    entries = [e for e in cfg.data.val if e.name.lower() in names]
    # a member of the group (acdc) without an entry keeps its own size and eval.mode, as a lone dataset does
    missing = [f"{n} (no data.val entry)" for n in names if entries and all(e.name.lower() != n for e in entries)]
    took = []
    if resize is None and entries:
        scaled = [f"{domain_name(e, cfg.data.val)}: prescale {e.prescale}" for e in entries if e.prescale is not None]
        if scaled:
            raise ValueError(f"--dataset {dataset}: the checkpoint's data.val entries set prescale ({', '.join(scaled)}), "
                             "which predict does not apply (it writes predictions at each image's own size); pass "
                             "--resize")
        sizes = {domain_name(e, cfg.data.val): tuple(e.resize) if isinstance(e.resize, list) else e.resize
                 for e in entries}  # by row: two entries of one dataset (labels, splits) are told apart
        resize = _agreed(dataset, {**sizes, **dict.fromkeys(missing)}, "resize differently", "--resize")
        took.append(f"resize {resize}" if resize is not None else "own size")
    if mode is None and entries:
        modes = {domain_name(e, cfg.data.val): e.mode or cfg.eval.mode for e in entries}
        mode = _agreed(dataset, {**modes, **dict.fromkeys(missing, cfg.eval.mode)}, "predict in different modes",
                       "--mode")
        took.append(f"mode {mode}")
    size = "each image at its own size" if resize is None else f"resize {resize}"
    if not entries:
        return resize, mode, (f"--dataset {dataset}: no data.val entry of it in the checkpoint's config; {size}, "
                              f"mode {mode or cfg.eval.mode}")
    return resize, mode, (f"--dataset {dataset}: {' and '.join(took)}, as the checkpoint's data.val entry of it" if took
                          else f"--dataset {dataset}: {size}, mode {mode} as given (not its data.val entry's)")


def _agreed(dataset: str, values: dict, differ: str, option: str):
    """The one value every data.val row of ``values`` (row -> value) has; ValueError naming each row's otherwise."""
    if len(set(values.values())) > 1:
        raise ValueError(f"--dataset {dataset}: the checkpoint's data.val entries {differ} "
                         f"({', '.join(f'{n}: {v}' for n, v in values.items())}); pass {option}")
    return next(iter(values.values()))


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 [H, W] or [H, W, 3] array encoded as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def output_names(fmt: str, target: Path) -> list[Path]:
    """The files ``fmt`` writes for the output stem ``target``, the label file first."""
    from dgseg.engine.prediction_files import TRAINIDS_SUFFIXES

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    suffixes = (".png",) if fmt == "cityscapes-ids" else TRAINIDS_SUFFIXES
    return [target.with_name(target.name + s) for s in suffixes]


def _writer(fmt: str, palette: np.ndarray) -> Callable[[Path, np.ndarray, np.ndarray], list[Path]]:
    from dgseg.viz import colorize, overlay

    def write(target: Path, rgb: np.ndarray, pred: np.ndarray) -> list[Path]:
        paths = output_names(fmt, target)
        arrays = [to_label_ids(pred)] if fmt == "cityscapes-ids" else [pred, colorize(pred, palette),
                                                                        overlay(rgb, pred, palette)]
        for path, array in zip(paths, arrays):
            write_atomic(path, png_bytes(array))
        return paths[:1]

    output_names(fmt, Path("x"))  # an unknown format: refused before anything is predicted
    return write


def check_cityscapes_classes(cfg: Config) -> None:
    """Label IDs are defined for the 19 Cityscapes classes only."""
    from dgseg.data.classes import config_class_set
    from dgseg.data.labels import CLASSES

    names = config_class_set(cfg).names
    if cfg.model.num_classes != len(CLASSES) or tuple(names) != tuple(CLASSES):
        raise ValueError(f"--format cityscapes-ids needs a model of the 19 Cityscapes classes; this checkpoint has "
                         f"model.num_classes={cfg.model.num_classes}, classes {list(names)[:5]}...")


@torch.no_grad()
def write_predictions(model: nn.Module, cfg: Config, files: list[tuple[Path, Path]], out_dir: str | Path,
                      fmt: str = "trainids", mode: str | None = None, progress: bool = True,
                      resize: tuple[int, int] | float | None = None) -> list[Path]:
    """Predict every ``(image, relative output path)`` and write it in ``fmt``: ``cityscapes-ids``
    (``<rel>.png`` in label IDs) or ``trainids`` (``<rel>_labelTrainIds.png``, ``_color.png``,
    ``_overlay.png``). Uses ``cfg.eval`` (mode, crop, stride, batch size, tta) and the evaluation precision
    (``train.amp`` as resolved for inference on the model's device); ``resize`` (``--resize``: (W, H) as mmseg's
    ``Resize(keep_ratio=True)``, or a factor) scales each image first, the prediction resized back to the image's
    own size (as evaluation does with a ``data.val`` entry's ``resize``). Returns the label files. An output
    name that is one of the input images is refused before anything is written
    (:func:`dgseg.engine.prediction_files.plan_outputs`)."""
    from dgseg.data import EvalTransform
    from dgseg.data.datasets import read_image
    from dgseg.engine.evaluate import predict_labels
    from dgseg.engine.prediction_files import plan_outputs
    from dgseg.image_size import check_image_size, model_size_rule

    if fmt == "cityscapes-ids":
        check_cityscapes_classes(cfg)
    from dgseg.data.classes import config_class_set

    write = _writer(fmt, config_class_set(cfg).palette)
    out = Path(out_dir).resolve()
    # a submission needs one file per image; elsewhere a second input of the same name gets _2, ...
    plan = plan_outputs(files, out, lambda target: output_names(fmt, target), unique=fmt == "cityscapes-ids")
    from dgseg.engine.precision import resolve_amp

    device = next(model.parameters()).device
    amp = resolve_amp(cfg.train.amp, device, training=False)
    transform = EvalTransform(resize=resize)
    model.eval()
    written: list[Path] = []
    for path, target in tqdm(plan, desc="predict", disable=not progress):
        rgb = read_image(path)
        h, w = transform.output_size(*rgb.shape[:2])
        check_image_size(h, w, model_size_rule(model), str(path) if resize is None else f"{path} (--resize: {w}x{h})")
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        norm, _ = transform(image, torch.zeros(rgb.shape[:2], dtype=torch.int64))
        pred = predict_labels(model, norm[None].to(device), rgb.shape[:2], mode or cfg.eval.mode, cfg.eval.crop,
                              cfg.eval.stride, cfg.eval.batch_size, amp, tta=cfg.eval.tta)[0]
        written += write(target, rgb, pred.cpu().numpy().astype(np.uint8))  # its folders made by the first file
    out.mkdir(parents=True, exist_ok=True)  # not before: an image refused first (too small) leaves no folder
    return written


def zip_folder(folder: str | Path, zip_path: str | Path, files: list[Path], replace: bool = True) -> Path:
    """Zip ``files`` (inside ``folder``) with paths relative to ``folder``; written atomically.
    ``replace=False`` keeps and refuses a file at ``zip_path``."""
    folder, zip_path = Path(folder).resolve(), Path(zip_path)

    def write_zip(fh) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(files):
                zf.write(f, f.resolve().relative_to(folder).as_posix())

    return write_atomic(zip_path, write_zip, replace=replace)
