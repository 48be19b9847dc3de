"""Import the official Rein checkpoints (github w1oves/Rein releases) as dgseg checkpoints.

The official files (``iter_40000_published.pth``, ``citys2acdc_40k_rein_head.pth``, ...) are
``torch.save({"meta": {...}, "state_dict": {name: tensor}})`` with only the Rein and decode-head
weights, under mmseg/mmdet names. The backbone is not in them: it is the DINOv2 file the user gives,
converted by dgseg's loader exactly as Rein's ``tools/convert_models/convert_dinov2_large_512x512.py`` (and
``..._1024x1024.py``) converts it (patch kernel 14 -> 16 and the 37 x 37 position grid resized bicubically to the
crop's grid, 32 x 32 or 64 x 64).

The names map by a short table (:data:`RENAME_RULES`); dgseg's head keeps mmdet's names, so the head
needs one prefix rule. Nothing is unpickled but tensors and plain containers (``weights_only=True``);
a key that no rule places, or that lands on no tensor of the model, is refused with its name.

A checkpoint as mmengine's ``Runner.save_checkpoint`` writes it (mmseg's publish step only drops the
optimizer) also holds a ``message_hub`` with mmengine ``HistoryBuffer`` objects and numpy arrays, which
``weights_only=True`` refuses. Such a file is read by :func:`dgseg.safe_pickle.read_archive` with the
``mmengine`` and ``numpy`` classes as inert stand-ins (never imported, nothing run); only ``state_dict``
is taken, and the report lists what was skipped.
"""

from __future__ import annotations

import importlib
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from dgseg.config import Config, load_config
from dgseg.config.origins import wrote

__all__ = [
    "DEFAULT_CONFIG",
    "RENAME_RULES",
    "ReinImportError",
    "RenameReport",
    "backbone_option",
    "convert_rein_checkpoint",
    "import_rein",
    "place_weights",
]

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "rein_dinov2_l_gta.yaml"

# (official name, dgseg name). A rule ending in "." renames a prefix; any other rule one exact key.
RENAME_RULES: tuple[tuple[str, str], ...] = (
    ("backbone.reins.learnable_tokens_a", "adapter.tokens_a"),  # LoRAReins: L x m x r
    ("backbone.reins.learnable_tokens_b", "adapter.tokens_b"),  # L x r x C
    ("backbone.reins.learnable_tokens", "adapter.tokens"),  # full-rank Reins: L x m x C
    ("backbone.reins.scale", "adapter.scale"),  # a scalar
    ("backbone.reins.mlp_token2feat.", "adapter.token2feat."),
    ("backbone.reins.mlp_delta_f.", "adapter.delta_f."),
    ("backbone.reins.transform.", "adapter.query_proj."),  # Rein-link: C -> 256
    ("backbone.reins.merge.", "adapter.query_merge."),  # 3 * 256 -> 256
    ("decode_head.", "head."),  # ReinMask2FormerHead: mmdet names (querys2feat, pixel_decoder.*, ...)
)


class ReinImportError(ValueError):
    """An official checkpoint could not be read or placed; the message lists the keys concerned."""


@dataclass
class RenameReport:
    """What :func:`convert_rein_checkpoint` did: ``renamed`` maps each official key to its dgseg name."""

    source: str
    renamed: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    """Top-level entries of the file other than ``state_dict`` (e.g. ``meta``), not read."""
    stand_ins: dict[str, int] = field(default_factory=dict)
    """Classes of the objects outside ``state_dict`` read as inert stand-ins (mmengine files), with counts."""

    def counts(self) -> dict[str, int]:
        """Number of tensors placed by each rule, ``"official -> dgseg"``."""
        out: dict[str, int] = {}
        for key in self.renamed:
            src, dst = _rule_for(key)
            label = f"{src}* -> {dst}*" if src.endswith(".") else f"{src} -> {dst}"
            out[label] = out.get(label, 0) + 1
        return out

    def summary(self) -> str:
        lines = [f"{self.source}: {len(self.renamed)} tensors placed"]
        lines += [f"  {n:4d}  {label}" for label, n in self.counts().items()]
        if self.ignored:
            lines.append(f"  not read: {', '.join(self.ignored)}")
        if self.stand_ins:
            objects = ", ".join(f"{name} x {n}" for name, n in sorted(self.stand_ins.items()))
            lines.append(f"  skipped objects (read as inert stand-ins, nothing run): {objects}")
        return "\n".join(lines)


def _rule_for(key: str) -> tuple[str, str] | tuple[None, None]:
    for src, dst in RENAME_RULES:
        if (src.endswith(".") and key.startswith(src)) or key == src:
            return src, dst
    return None, None


def rename_key(key: str) -> str | None:
    """The dgseg name of an official key, or None when no rule places it."""
    src, dst = _rule_for(key)
    return None if src is None else dst + key[len(src):]


def official_key(name: str) -> str | None:
    """The official name of a dgseg key (the table read backwards), or None."""
    for src, dst in RENAME_RULES:
        if (dst.endswith(".") and name.startswith(dst)) or name == dst:
            return src + name[len(dst):]
    return None


# --------------------------------------------------------------------------------------------- reading

# numpy scalars (mmengine's meta may hold e.g. a numpy seed) rebuild numbers, not code: the only globals
# allowed beyond torch's own weights_only set
_NUMPY_SCALAR_GLOBALS = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype")


def _numpy_scalar_globals(names: list[str]) -> list | None:
    """Entries for torch.serialization.safe_globals when ``names`` are numpy scalar
    globals only; None otherwise."""
    import numpy as np

    allowed = []
    for name in names:
        if name == "numpy.dtype":  # a dtype is rebuilt as its numpy.dtypes.*DType class
            allowed.append((np.dtype, name))
            dtypes = getattr(np, "dtypes", None)
            allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []
        elif name in _NUMPY_SCALAR_GLOBALS:
            for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        scalar = importlib.import_module(module).scalar
                except (ImportError, AttributeError):
                    continue
                allowed.append((scalar, name))
                break
            else:
                return None
        elif name.startswith("numpy.dtypes.") and name.endswith("DType"):
            cls = getattr(getattr(np, "dtypes", None), name.rsplit(".", 1)[1], None)
            if cls is None:
                return None
            allowed.append((cls, name))
        else:
            return None
    return allowed


def _inert_classes(obj: object, counts: dict[str, int], depth: int = 0) -> dict[str, int]:
    """Count the :class:`~dgseg.safe_pickle.InertObject` stand-ins in a nested structure, by class name."""
    from dgseg.safe_pickle import InertObject

    if depth > 50:
        return counts
    if isinstance(obj, InertObject):
        counts[obj.qualname] = counts.get(obj.qualname, 0) + 1
        children = [*getattr(obj, "args", ()), getattr(obj, "state", None)]  # NEWOBJ skips __init__
    elif isinstance(obj, Mapping):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    else:
        return counts
    for child in children:
        _inert_classes(child, counts, depth + 1)
    return counts


def _load_mmengine(path: Path, first: Exception) -> object:
    """An mmengine-written checkpoint: mmengine / numpy objects become inert stand-ins, tensors stay."""
    from dgseg.safe_pickle import UnsafePickleError, read_archive

    try:
        return read_archive(path, inert=("mmengine", "numpy"))
    except UnsafePickleError as exc:
        raise ReinImportError(
            f"{path}: not readable with torch.load(weights_only=True) ({type(first).__name__}), nor as an "
            f"mmengine checkpoint: {str(exc).removeprefix(f'{path}: ')}"
        ) from exc


def _load(path: Path) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = exc
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        allowed = _numpy_scalar_globals(unsafe) if unsafe else None
    except Exception:
        unsafe, allowed = None, None
    if allowed:
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            first = exc
    if unsafe and zipfile.is_zipfile(path):
        return _load_mmengine(path, first)
    what = f" (it needs the Python objects {unsafe})" if unsafe else ""
    raise ReinImportError(
        f"{path}: not readable with torch.load(weights_only=True){what}: {type(first).__name__}: "
        f"{str(first).splitlines()[0] if str(first) else ''}. The official Rein checkpoints hold plain "
        "tensors in a dict; dgseg unpickles nothing else."
    ) from first


def convert_rein_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], RenameReport]:
    """Read an official Rein checkpoint and rename its tensors to dgseg's names.

    Loads with ``torch.load(weights_only=True)``; takes ``state_dict`` when present (a flat dict of
    tensors is accepted too), ignores ``meta``. Raises :class:`ReinImportError` listing every key that
    no rule of :data:`RENAME_RULES` places, and every entry that is not a tensor.

    Returns:
        ({dgseg name: tensor}, report).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; expected the official Rein checkpoint file (a .pth, e.g. "
                                "iter_40000_published.pth)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file (an official Rein .pth, e.g. iter_40000_published.pth)")
    data = _load(path)
    if not isinstance(data, Mapping):
        raise ReinImportError(f"{path}: holds a {type(data).__name__}, expected a dict with a 'state_dict'")
    report = RenameReport(source=path.name)
    if isinstance(data.get("state_dict"), Mapping):
        state = data["state_dict"]
        report.ignored = sorted(str(k) for k in data if k != "state_dict")
        report.stand_ins = _inert_classes([v for k, v in data.items() if k != "state_dict"], {})
    elif data and all(isinstance(v, Tensor) for v in data.values()):
        state = data
    else:
        raise ReinImportError(
            f"{path}: no 'state_dict' entry (top-level keys: {sorted(map(str, data))[:10]}); expected an "
            "official Rein checkpoint {'meta': ..., 'state_dict': {name: tensor}}"
        )
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))
    unplaced = sorted(str(k) for k, v in state.items() if isinstance(v, Tensor) and rename_key(str(k)) is None)
    if not_tensors or unplaced:
        parts = []
        if unplaced:
            parts.append(f"{len(unplaced)} key(s) that no rename rule places: {unplaced}")
        if not_tensors:
            parts.append(f"{len(not_tensors)} entry(ies) that are not tensors: {not_tensors}")
        hint = ""
        if any(k.startswith("backbone.") and not k.startswith("backbone.reins.") for k in unplaced):
            hint = (" The file holds backbone weights (a full segmentor, e.g. from generate_full_weights.py?): "
                    "import the Rein + head file and give the DINOv2 weights with --backbone.")
        rules = ", ".join(f"{s}{'*' if s.endswith('.') else ''}" for s, _ in RENAME_RULES)
        raise ReinImportError(f"{path}: refused: " + "; ".join(parts) + f". Known names: {rules}.{hint}")
    weights: dict[str, Tensor] = {}
    for key, value in state.items():
        name = rename_key(key)
        report.renamed[key] = name
        weights[name] = value
    return weights, report


# --------------------------------------------------------------------------------------------- placing


def place_weights(model: nn.Module, weights: Mapping[str, Tensor], source: str = "checkpoint") -> dict[str, Tensor]:
    """Check renamed official ``weights`` against a dgseg Segmentor and return them ready to load.

    Every name must be a tensor of the model with the same shape (a one-element tensor may stand for a
    scalar), and every trainable key of the model (``trainable_state_dict``) must be filled; otherwise
    :class:`ReinImportError` lists all problems, each with its official name.
    """
    own = model.state_dict()
    needed = list(model.trainable_state_dict())
    placed: dict[str, Tensor] = {}
    unknown, wrong = [], []
    for name, value in weights.items():
        target = own.get(name)
        label = f"{official_key(name) or name} -> {name}"
        if target is None:
            unknown.append(label)
        elif target.shape == value.shape:
            placed[name] = value
        elif target.numel() == value.numel() == 1:
            placed[name] = value.reshape(target.shape)
        else:
            wrong.append(f"{label}: file {tuple(value.shape)} vs model {tuple(target.shape)}")
    missing = [f"{official_key(k) or '?'} (for {k})" for k in needed if k not in weights]
    if unknown or wrong or missing:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} tensor(s) the dgseg model does not have: {unknown}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es): {wrong}")
        if missing:
            parts.append(f"{len(missing)} model tensor(s) the file does not fill: {missing}")
        raise ReinImportError(
            f"{source} does not fit the dgseg model: " + "; ".join(parts) + ". Was it trained with another "
            "recipe? Pass the dgseg config of that recipe (--config, e.g. configs/rein_dinov2_s_gta.yaml for "
            "ViT-S) or fix it with --set (model.num_classes, model.adapter.tokens/rank, model.head.*)."
        )
    return placed


def import_rein(
    checkpoint: str | Path,
    backbone_weights: str | Path | None,
    out_dir: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    step: int = 40000,
    force: bool = False,
) -> tuple[Path, RenameReport]:
    """Turn an official Rein checkpoint into a dgseg checkpoint in ``out_dir``.

    Builds the dgseg model of ``config`` (default ``configs/rein_dinov2_l_gta.yaml``, with ``overrides``)
    on the DINOv2 file ``backbone_weights`` (the official ``dinov2_vitl14_pretrain.pth``; None keeps the
    config's), places every tensor of the file (:func:`place_weights`) and writes
    ``out_dir/checkpoints/iter_{step:07d}.safetensors`` with the usual meta plus ``imported_from``, so
    ``dgseg eval --checkpoint out_dir`` and ``dgseg predict --checkpoint out_dir`` use it.

    ``out_dir`` must not hold a run (:mod:`dgseg.engine.run_folder`): it is refused before anything is read,
    or with ``force`` the old run is moved into ``previous-<time>/`` once the import has succeeded.

    Returns:
        (the written safetensors file, the rename report).
    """
    import dgseg
    from dgseg.atomic import check_out_folder
    from dgseg.engine.checkpoint import file_sha256, save_checkpoint
    from dgseg.engine.run_folder import claim_run_folder
    from dgseg.engine.train import checkpoint_meta

    check_out_folder(out_dir)  # a file there: refused before the checkpoint is read
    if not force:
        claim_run_folder(out_dir, command="import-rein")  # raises when out_dir holds a run
    cfg: Config = load_config(config if config is not None else DEFAULT_CONFIG, overrides)
    if cfg.model.adapter.name != "rein":
        raise ReinImportError(f"model.adapter.name is '{cfg.model.adapter.name}'; official Rein checkpoints need 'rein'")
    weights, report = convert_rein_checkpoint(checkpoint)
    if backbone_weights is not None:  # a missing file or a folder: refused before the model is built
        cfg.model.backbone.weights = backbone_option(backbone_weights, cfg.model.backbone.name)
        wrote(cfg, "model.backbone.weights", "--backbone")  # an unreadable or unfit file: build_model names it
    model = dgseg.build_model(cfg)
    placed = place_weights(model, weights, str(checkpoint))
    model.load_state_dict(placed, strict=False)
    meta = checkpoint_meta(cfg, step=step)
    meta["imported_from"] = Path(checkpoint).name
    meta["imported_sha256"] = file_sha256(checkpoint)
    if force and (moved := claim_run_folder(out_dir, force=True)):
        print(f"--force: the previous run in {out_dir} was moved to {moved}")
    path = save_checkpoint(out_dir, step, model.trainable_state_dict(), meta, keep_last=None)
    return path, report


def backbone_option(spec: str | Path, model_name: str) -> str:
    """``--backbone`` as ``model.backbone.weights``: an embedded name as it is, a file by its absolute path; a
    missing file or a folder is a WeightsError naming ``--backbone``, the file and which file to fetch."""
    from dgseg.models.pretrained import EMBEDDED
    from dgseg.models.weights_io import download_hint, local_weights_file

    if str(spec) in EMBEDDED:
        return str(spec)
    note = f" Embedded weights: {', '.join(EMBEDDED)}."
    return str(local_weights_file(str(spec), "--backbone", download_hint(model_name), note).resolve())
