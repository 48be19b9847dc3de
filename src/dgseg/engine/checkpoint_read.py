"""Where a checkpoint's files are and how they are read back: the names in ``run_dir/checkpoints/``, the
``latest`` pointer, :class:`CheckpointError`, and the readers (weights + meta, training state).

The file format and the atomic writes are described in :mod:`dgseg.engine.checkpoint`, which writes them
and re-exports everything here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_DIR",
    "LATEST",
    "CHECKPOINT_FILE",
    "CheckpointError",
    "file_stem",
    "checkpoint_dir",
    "latest_checkpoint",
    "highest_checkpoint",
    "read_pointer",
    "resolve_checkpoint",
    "load_checkpoint",
    "read_meta",
    "load_train_state",
]

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
CHECKPOINT_FILE = re.compile(r"^iter_(\d{7,})\.(safetensors|json|state\.pt)$")
"""A checkpoint set's file name: group 1 the step, group 2 the kind (safetensors, json, state.pt)."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, read, or does not fit the current model."""


def file_stem(step: int) -> str:
    """The common stem of a checkpoint set's files, ``iter_{step:07d}``."""
    return f"iter_{step:07d}"


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoints folder of a run folder, or the folder itself when it already is one."""
    path = Path(path)
    return path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder (or a checkpoints folder), or None.

    Follows ``latest``; when that pointer is missing or names a missing file (one moved out of the folder),
    falls back to the highest-step ``iter_*.safetensors`` (such a file exists only once fully written). A
    pointer that does not hold a checkpoint file name (damaged) is a :class:`CheckpointError` naming it.
    """
    sub = Path(run_dir) / CHECKPOINT_DIR
    if not sub.is_dir() and (sub.exists() or sub.is_symlink()):  # a file where a run keeps its checkpoints
        raise CheckpointError(f"{sub}: is not a folder (a file or a broken link); dgseg keeps a run's checkpoints "
                              f"in a {CHECKPOINT_DIR}/ folder there; move it away, or give the checkpoint file itself")
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    pointer = folder / LATEST
    if pointer.exists() and not pointer.is_file():
        raise CheckpointError(f"{pointer}: is a folder, not the one-line pointer file dgseg writes; move it away "
                              "and dgseg takes the highest-step iter_*.safetensors")
    if pointer.is_file():
        name = read_pointer(pointer)
        if (folder / name).is_file():
            return folder / name
    return highest_checkpoint(folder)


def read_pointer(pointer: Path) -> str:
    """The checkpoint file name in a ``latest`` pointer; CheckpointError naming the file when it holds
    anything else (bytes that are not text, an empty file, another name)."""
    expected = (f"expected one line naming the newest checkpoint file, e.g. {file_stem(1000)}.safetensors, as "
                f"dgseg writes it; delete {pointer} and dgseg takes the highest-step iter_*.safetensors")
    try:
        name = pointer.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{pointer}: not text (byte {e.start} is not UTF-8); {expected}") from e
    m = CHECKPOINT_FILE.match(name)
    if m is None or m.group(2) != "safetensors":
        shown = repr(name[:80]) + ("..." if len(name) > 80 else "") if name else "nothing"
        raise CheckpointError(f"{pointer}: holds {shown}; {expected}")
    return name


def highest_checkpoint(folder: Path) -> Path | None:
    """The highest-step ``iter_*.safetensors`` in a checkpoints folder, or None."""
    found = []
    for p in folder.iterdir():
        m = CHECKPOINT_FILE.match(p.name)
        if m and m.group(2) == "safetensors":
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def latest_step(run_dir: str | Path) -> int | None:
    """The iteration of :func:`latest_checkpoint`, or None when the run has no checkpoint."""
    latest = latest_checkpoint(run_dir)
    return None if latest is None else int(CHECKPOINT_FILE.match(latest.name).group(1))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint's safetensors file from itself, its run folder or its checkpoints folder."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(
                f"{path}: no checkpoint found (expected {CHECKPOINT_DIR}/{LATEST} or iter_*.safetensors)"
            )
        return found
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such checkpoint file (expected a .safetensors file or a run folder)"
        )
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{path}: expected a .safetensors checkpoint, a run folder or a checkpoints folder"
        )
    return path


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Reads ``(weights, meta)`` from a checkpoint file, a run folder or a checkpoints folder (latest).

    ``meta`` is the record saved with it (the caller's meta plus ``step`` and ``dgseg_version``).
    Raises CheckpointError naming the file when it is missing, unreadable or not a dgseg checkpoint.
    """
    from safetensors import safe_open

    file = resolve_checkpoint(path)
    try:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            weights = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors raises its own error type for truncated or garbled files
        raise _unreadable(file, e) from e
    return weights, _meta(file, header)


def read_meta(path: str | Path) -> dict:
    """The meta record of a checkpoint (a file, a run folder or a checkpoints folder) from its safetensors
    header alone: no tensor is read. Errors as :func:`load_checkpoint`'s."""
    from safetensors import safe_open

    file = resolve_checkpoint(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:
        raise _unreadable(file, e) from e
    return _meta(file, header)


def _unreadable(file: Path, e: Exception) -> CheckpointError:
    return CheckpointError(f"{file}: not a readable safetensors file ({e}); expected a checkpoint written by "
                           "dgseg.engine.checkpoint.save_checkpoint (truncated or corrupted?)" + _fallback_hint(file))


def _meta(file: Path, header: dict) -> dict:
    """The ``dgseg_meta`` record of a safetensors header; CheckpointError naming ``file`` when it is not one."""
    if "dgseg_meta" not in header:
        raise CheckpointError(
            f"{file}: has no dgseg metadata (safetensors header key 'dgseg_meta'); expected a checkpoint "
            "written by dgseg.engine.checkpoint.save_checkpoint"
        )
    try:
        meta = json.loads(header["dgseg_meta"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: its 'dgseg_meta' metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{file}: its 'dgseg_meta' metadata is a {type(meta).__name__}, expected an object"
        )
    return meta


def _fallback_hint(broken: Path) -> str:
    """Names the newest readable checkpoint older than ``broken`` in its folder, if there is one."""
    from safetensors import safe_open

    m = CHECKPOINT_FILE.match(broken.name)
    step = int(m.group(1)) if m else None
    older = sorted((int(n.group(1)), p) for p in broken.parent.glob("iter_*.safetensors")
                   if (n := CHECKPOINT_FILE.match(p.name)) and p != broken and (step is None or int(n.group(1)) < step))
    for _, p in reversed(older):
        try:
            with safe_open(str(p), framework="pt") as f:
                if "dgseg_meta" in (f.metadata() or {}):
                    return (f". The previous checkpoint {p} reads fine: give it as --checkpoint to "
                            f"dgseg eval/predict/export, or move {broken.name} out of the folder and dgseg train --resume "
                            "takes the newest remaining one")
        except Exception:
            continue
    return ""


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Reads the training state saved beside a checkpoint (``iter_*.state.pt``) on CPU.

    ``path``: the state file, its checkpoint's safetensors file, a run folder or a checkpoints folder.
    Loads with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if path.name.endswith(".state.pt") and not path.is_dir():
        file = path
    else:
        weights_file = resolve_checkpoint(path)
        file = weights_file.with_name(weights_file.name.removesuffix(".safetensors") + ".state.pt")
    if not file.is_file():
        raise CheckpointError(
            f"{file}: no training state (expected the .state.pt file saved beside the checkpoint; was it "
            "saved without train_state?)"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{file}: could not load the training state with torch.load(weights_only=True) ({e}); "
            "expected a file written by save_checkpoint (truncated or corrupted?)"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: training state is a {type(state).__name__}, expected a dict")
    return state
