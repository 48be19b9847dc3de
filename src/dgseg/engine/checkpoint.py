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
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

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
]

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
_FORMAT = "dgseg.checkpoint.v1"
_NAME = re.compile(r"^iter_(\d{7,})\.(safetensors|json|state\.pt)$")
_TEMP = re.compile(r"^\.(iter_\d{7,}\.(safetensors|json|state\.pt)|latest)\..*\.tmp$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, read, or does not fit the current model."""


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


def _stem(step: int) -> str:
    return f"iter_{step:07d}"


def _checkpoint_dir(path: str | Path) -> Path:
    """The checkpoints folder of a run folder, or the folder itself when it already is one."""
    path = Path(path)
    return path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path


# ------------------------------------------------------------------------------------------- writing


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
    then kept and no temp file is left behind.
    """
    step = int(step)
    if step < 0:
        raise CheckpointError(f"step must be >= 0, got {step}")
    folder = Path(run_dir) / CHECKPOINT_DIR
    stem = _stem(step)
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

    previous = latest_checkpoint(run_dir) if folder.is_dir() else None
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
        m = _NAME.match(p.name)
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
                (folder / f"{_stem(s)}.{suffix}").unlink()


# ------------------------------------------------------------------------------------------- reading


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder (or a checkpoints folder), or None.

    Follows ``latest``; when that pointer is missing or names a missing file, falls back to the
    highest-step ``iter_*.safetensors`` (such a file exists only once fully written).
    """
    folder = _checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    pointer = folder / LATEST
    if pointer.is_file():
        name = pointer.read_text().strip()
        if name and "/" not in name and (folder / name).is_file():
            return folder / name
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and m.group(2) == "safetensors":
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def _resolve(path: str | Path) -> Path:
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

    file = _resolve(path)
    try:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            weights = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors raises its own error type for truncated or garbled files
        raise CheckpointError(
            f"{file}: not a readable safetensors file ({e}); expected a checkpoint written by "
            "dgseg.engine.checkpoint.save_checkpoint (truncated or corrupted?)" + _fallback_hint(file)
        ) from e
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
    return weights, meta


def _fallback_hint(broken: Path) -> str:
    """Names the newest readable checkpoint older than ``broken`` in its folder, if there is one."""
    from safetensors import safe_open

    m = _NAME.match(broken.name)
    step = int(m.group(1)) if m else None
    older = sorted((int(n.group(1)), p) for p in broken.parent.glob("iter_*.safetensors")
                   if (n := _NAME.match(p.name)) and p != broken and (step is None or int(n.group(1)) < step))
    for _, p in reversed(older):
        try:
            with safe_open(str(p), framework="pt") as f:
                if "dgseg_meta" in (f.metadata() or {}):
                    return (f". The previous checkpoint {p} reads fine: give it as --checkpoint, or move {broken.name} "
                            "out of the folder and --resume takes the newest remaining one")
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
        weights_file = _resolve(path)
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


# ----------------------------------------------------------------------------------- RNG, hashing, checks


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as plain containers (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restores the RNG states captured by ``capture_rng_state`` (after a weights_only load)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        key = np.asarray(
            n["key"].numpy() if isinstance(n["key"], torch.Tensor) else n["key"], dtype=np.uint32
        )
        np.random.set_state(
            {
                "bit_generator": n["bit_generator"],
                "state": {"key": key, "pos": int(n["pos"])},
                "has_gauss": int(n["has_gauss"]),
                "gauss": float(n["gauss"]),
            }
        )
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])


_SHA_CACHE: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_SHA_CACHE_SIZE = 64


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces; cached by (path, size, mtime)."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot hash ({e.strerror or e})") from e
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _SHA_CACHE:
        _SHA_CACHE.move_to_end(key)
        return _SHA_CACHE[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    _SHA_CACHE[key] = digest.hexdigest()
    if len(_SHA_CACHE) > _SHA_CACHE_SIZE:
        _SHA_CACHE.popitem(last=False)
    return _SHA_CACHE[key]


_MISSING = object()


def _lookup(meta: Mapping[str, Any], key: str) -> Any:
    """``meta[key]``, or for a dotted key (``model.backbone.name``) the nested value."""
    if key in meta:
        return meta[key]
    node: Any = meta
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _normalise(value: Any) -> Any:
    """JSON's view of a value: tuples become lists (as they come back from a checkpoint)."""
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    return value


def check_compatible(meta: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raises CheckpointError when a checkpoint's meta disagrees with the current setup.

    ``expected`` maps a field (a top-level key or a dotted path such as ``model.backbone.name``) to the
    value the current config/model has, e.g. ``{"backbone": "vit_large_patch14_dinov2",
    "backbone_sha256": "ab12..", "num_classes": 19}``. Every mismatch is listed with both values.
    """
    problems = []
    for key, want in expected.items():
        have = _lookup(meta, key)
        if have is _MISSING:
            problems.append(f"{key}: missing from the checkpoint (current: {want!r})")
        elif _normalise(have) != _normalise(want):
            problems.append(f"{key}: checkpoint has {have!r}, current setup has {want!r}")
    if problems:
        raise CheckpointError("checkpoint does not match the current setup:\n  " + "\n  ".join(problems))
