"""Checkpoints of the trainable weights, written so that a crash never costs the previous one.

A run folder holds::

    run_dir/checkpoints/iter_0001000.safetensors   trainable weights; safetensors metadata: "dgseg_meta"
                                                   (JSON of the meta record), "dgseg_version", "step"
    run_dir/checkpoints/iter_0001000.json          the same meta record, indented, for people
    run_dir/checkpoints/iter_0001000.state.pt      optional: optimizer / scheduler / RNG states, step
                                                   (plain containers: torch.load(weights_only=True))
    run_dir/checkpoints/latest                     text: the file name of the newest complete checkpoint

Saving writes every file of the new set to a temp file in the same folder (flushed and fsynced) and then
renames them into place with ``os.replace``: the state and JSON files first, the safetensors file next,
``latest`` last. Until ``latest`` moves, readers see the previous checkpoint; the safetensors file is
self-contained (weights + meta), so the set is usable from the moment it exists. Older sets beyond
``keep_last`` are pruned only after the new one is complete.

This module writes a checkpoint set and is the public face of checkpoint handling: it re-exports the
readers and the layout (:mod:`dgseg.engine.checkpoint_read`), the compatibility checks and file hashing
(:mod:`dgseg.engine.checkpoint_compat`) and the RNG capture/restore (:mod:`dgseg.engine.rng_state`), so
``from dgseg.engine.checkpoint import ...`` serves every name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from dgseg.atomic import refuse_link
from dgseg.engine.checkpoint_compat import check_compatible, file_sha256
from dgseg.engine.checkpoint_read import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    LATEST,
    CheckpointError,
    file_stem,
    highest_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    load_train_state,
)
from dgseg.engine.rng_state import capture_rng_state, restore_rng_state
from dgseg.engine.run_folder import KEPT
from dgseg.fileio import output_temp, safetensors_bytes

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_train_state",
    "latest_checkpoint",
    "file_sha256",
    "check_compatible",
    "capture_rng_state",
    "restore_rng_state",
    "CHECKPOINT_DIR",
    "LATEST",
]

_FORMAT = "dgseg.checkpoint.v1"
_TEMP = re.compile(r"^\.(iter_\d{7,}\.(safetensors|json|state\.pt)|latest)\..*\.tmp$")


def _version() -> str:
    try:
        from dgseg import __version__

        return str(__version__)
    except ImportError:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("dgseg")
        except PackageNotFoundError:
            return "unknown"


def _fsync_dir(folder: Path) -> None:
    """Makes renames in ``folder`` durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temp(final: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Writes a temp file beside ``final`` (flushed and fsynced); returns its path. Removes it on error."""
    fd, tmp = output_temp(final.parent, prefix=f".{final.name}.", suffix=".tmp")  # mode: the umask's
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _to_plain(obj: Any, where: str) -> Any:
    """``obj`` with numpy arrays/scalars turned into tensors/Python numbers; raises CheckpointError for
    anything ``torch.load(weights_only=True)`` would refuse (``where`` names the offending entry)."""
    if obj is None or isinstance(
        obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)
    ):
        return obj.detach() if isinstance(obj, torch.Tensor) else obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj, copy=True))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Size):
        return obj
    if isinstance(obj, Mapping):
        items = [(k, _to_plain(v, f"{where}[{k!r}]")) for k, v in obj.items()]
        for k, _ in items:
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise CheckpointError(f"{where} has a key of type {type(k).__name__}; use str or int keys")
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, (list, tuple, set)):
        items = [_to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return type(obj)(items) if not hasattr(obj, "_fields") else tuple(items)
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which torch.load(weights_only=True) "
        "cannot read; store tensors, numbers, strings and dict/list/tuple containers only"
    )


def _prepare_weights(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no shared storage (safetensors refuses aliases)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in weights.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"weights[{name!r}] is a {type(t).__name__}, expected a torch.Tensor")
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[name] = t
    return out


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    weights: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    train_state: Mapping[str, Any] | None = None,
    keep_last: int | None = 3,
) -> Path:
    """Saves ``run_dir/checkpoints/iter_{step:07d}.*`` atomically and returns the safetensors path.

    Args:
        run_dir: the run folder (``checkpoints/`` is created inside it).
        step: training iteration, used in the file names.
        weights: name -> tensor, the trainable weights (e.g. Rein + head).
        meta: JSON-serialisable facts about the run (config, backbone name and weights sha256, classes).
            The stored record is ``meta`` plus ``step`` and ``dgseg_version`` (unless meta has them).
        train_state: optional optimizer/scheduler state dicts, RNG states (see ``capture_rng_state``),
            step; numpy arrays are converted to tensors; it must load with ``weights_only=True``.
        keep_last: complete checkpoints kept (older ones pruned after the new one is in place);
            None or 0 keeps all.

    Raises CheckpointError when a file cannot be written (e.g. disk full); the previous checkpoint is
    then kept and no temp file is left behind. A ``checkpoints/`` that is a symbolic link is refused
    (:class:`dgseg.atomic.LinkError`), never written through; ``run_dir`` itself may be one.
    """
    step = int(step)
    if step < 0:
        raise CheckpointError(f"step must be >= 0, got {step}")
    folder = refuse_link(Path(run_dir) / CHECKPOINT_DIR, KEPT[CHECKPOINT_DIR])
    stem = file_stem(step)
    record = dict(meta)
    record.setdefault("step", step)
    record.setdefault("dgseg_version", _version())
    try:
        meta_json = json.dumps(record, sort_keys=True)
        meta_pretty = json.dumps(record, indent=2, sort_keys=True) + "\n"
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint meta is not JSON-serialisable ({e}); pass plain dicts, lists, strings and numbers"
        ) from e
    tensors = _prepare_weights(weights)
    state = _to_plain(dict(train_state), "train_state") if train_state is not None else None
    header = {
        "dgseg_meta": meta_json,
        "dgseg_version": str(record["dgseg_version"]),
        "step": str(step),
        "format": _FORMAT,
    }

    def write_weights(f: IO[bytes]) -> None:
        f.write(safetensors_bytes(tensors, metadata=header))  # metadata in a fixed order: reproducible bytes

    files: list[tuple[Path, Callable[[IO[bytes]], None]]] = []
    if state is not None:
        files.append((folder / f"{stem}.state.pt", lambda f: torch.save(state, f)))
    files.append((folder / f"{stem}.json", lambda f: f.write(meta_pretty.encode())))
    files.append((folder / f"{stem}.safetensors", write_weights))
    files.append((folder / LATEST, lambda f: f.write(f"{stem}.safetensors\n".encode())))

    try:
        previous = latest_checkpoint(run_dir) if folder.is_dir() else None
    except CheckpointError:  # a damaged ``latest`` pointer: this save replaces it with a good one
        previous = highest_checkpoint(folder)
    kept = f"the previous checkpoint ({previous}) is kept" if previous else "no earlier checkpoint exists"
    existed_before = (folder / f"{stem}.safetensors").exists()
    temps: list[Path] = []
    placed: list[Path] = []
    current = folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for final, write in files:
            current = final
            temps.append(_write_temp(final, write))
        for (final, _), tmp in zip(files, list(temps)):
            current = final
            os.replace(tmp, final)
            temps.remove(tmp)
            placed.append(final)
        _fsync_dir(folder)
    except BaseException as e:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if not existed_before and LATEST not in {p.name for p in placed}:
            for p in placed:  # companions of a set that never became complete
                with contextlib.suppress(OSError):
                    os.unlink(p)
        if not isinstance(e, OSError):
            raise
        reason = e.strerror or str(e)
        if e.errno == errno.ENOSPC:
            reason = "no space left on device"
        raise CheckpointError(f"could not write checkpoint file {current}: {reason}; {kept}") from e

    if keep_last:
        _prune(folder, keep=int(keep_last), current=step)
    return folder / f"{stem}.safetensors"


def _prune(folder: Path, keep: int, current: int) -> None:
    """Keeps the ``keep`` newest complete sets up to ``current`` (and any later ones, which belong to
    another trajectory and are left to the user); removes older sets, their orphans and stale temps."""
    steps: dict[int, set[str]] = {}
    for p in folder.iterdir():
        m = CHECKPOINT_FILE.match(p.name)
        if m:
            steps.setdefault(int(m.group(1)), set()).add(m.group(2))
        elif _TEMP.match(p.name):
            with contextlib.suppress(OSError):
                p.unlink()
    complete = sorted(s for s, kinds in steps.items() if "safetensors" in kinds and s <= current)
    keep_steps = set(complete[-keep:]) | {s for s in steps if s > current}
    for s in steps:
        if s in keep_steps:
            continue
        for suffix in ("safetensors", "state.pt", "json"):
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{file_stem(s)}.{suffix}").unlink()
