"""A weights file's identity by content: a digest of its tensors, not of its bytes.

Two files with the same tensors (names, dtypes, shapes, values) have the same content digest whatever
else differs (safetensors metadata and its order, container format, file name, folder). The digest is

    sha256 over the lines "NAME<TAB>DTYPE<TAB>SHAPE<TAB>SHA256(raw bytes)\\n", tensors sorted by name

(nested dicts of a ``.pth`` are flattened to dotted names; non-tensor entries such as an epoch counter are
not weights and do not count). Computing it reads the whole file once; the result is cached in
``$DGSEG_HOME/digests/`` keyed by the file's resolved path, device, inode, size and modification time
(written to a temp file and renamed), so later runs only stat the file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from dgseg.fileio import safetensors_header_variants
from dgseg.models.weights_home import WeightsError, dgseg_home
from dgseg.models.weights_io import read_state_dict

__all__ = ["weights_identity", "tensors_identity", "first_difference", "reordered_metadata_hashes", "DIGEST_VERSION"]

DIGEST_VERSION = 1
SHORT = 16
"""Hex digits of each tensor's sha256 kept in a checkpoint's table (enough to tell which tensor differs)."""

_MEMORY: dict[str, dict] = {}


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))


def _tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) in sorted name order; safetensors files one tensor at a time."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                for name in sorted(f.keys()):
                    yield name, f.get_tensor(name)
        except WeightsError:
            raise
        except Exception as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e
        return
    flat = dict(_flatten(read_state_dict(path)))
    for name in sorted(flat):
        yield name, flat[name]


def _tensor_sha256(t: torch.Tensor) -> str:
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tensors_identity(tensors: Iterable[tuple[str, torch.Tensor]]) -> dict:
    """``{"digest", "tensors"}`` of ``(name, tensor)`` pairs in name order: ``tensors`` maps each name to
    ``"DTYPE [SHAPE] SHA"`` with the first 16 hex digits of its sha256, ``digest`` is the sha256 of that list."""
    lines = hashlib.sha256()
    table = {}
    for name, t in tensors:
        dtype, shape, sha = str(t.dtype).removeprefix("torch."), list(t.shape), _tensor_sha256(t)
        lines.update(f"{name}\t{dtype}\t{shape}\t{sha}\n".encode())
        table[name] = f"{dtype} {shape} {sha[:SHORT]}"
    return {"digest": lines.hexdigest(), "tensors": table}


def compute_identity(path: str | Path) -> dict:
    """``{"file", "digest", "sha256", "tensors"}`` of a weights file, read now (see the module docstring and
    :func:`tensors_identity`)."""
    path = Path(path)
    identity = tensors_identity(_tensors(path))
    if not identity["tensors"]:
        raise WeightsError(f"{path}: holds no tensors; expected a weights file")
    return {"file": path.name, **identity, "sha256": _file_sha256(path)}


def _key(path: Path) -> tuple[str, dict]:
    st = path.stat()
    key = {"path": str(path), "dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
           "mtime_ns": st.st_mtime_ns, "version": DIGEST_VERSION}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32], key


def weights_identity(path: str | Path) -> dict:
    """:func:`compute_identity` of ``path``, from the cache when the file is unchanged since it was read."""
    path = Path(path).resolve()
    try:
        name, key = _key(path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from e
    if name in _MEMORY:
        return _MEMORY[name]
    cache = dgseg_home() / "digests" / f"{name}.json"
    try:
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            _MEMORY[name] = stored["identity"]
            return _MEMORY[name]
    except (OSError, ValueError, AttributeError, KeyError):
        pass  # no cache entry yet, or one that is unreadable: compute and rewrite it
    identity = compute_identity(path)
    _MEMORY[name] = identity
    try:
        from dgseg.atomic import write_atomic

        write_atomic(cache, json.dumps({"key": key, "identity": identity}))
    except OSError as e:
        warnings.warn(f"could not cache the content digest of {path} in {cache.parent} ({e.strerror or e}); "
                      "it is computed again next time", stacklevel=2)
    return identity


def first_difference(recorded: Any, current: Mapping[str, str]) -> str:
    """The first tensor (in name order) where a checkpoint's recorded ``tensors`` table and this setup's differ,
    described for a person; a table that is missing or not ``name -> "DTYPE [SHAPE] SHA"`` is said to be so."""
    if not recorded:
        return "unknown (no tensor table recorded)"
    if not isinstance(recorded, Mapping):
        return f"unknown (the recorded tensor table is a {type(recorded).__name__}, not a name -> entry map)"
    table = {str(k): v for k, v in recorded.items()}
    for name in sorted(set(table) | set(current)):
        a, b = table.get(name), current.get(name)
        if a == b:
            continue
        if name not in table:  # an entry edited to null is in the table: malformed, said below
            return f"{name} (only in this setup's file)"
        if b is None:
            return f"{name} (only in the checkpoint's file)"
        pa, pb = _parts(a), _parts(b)
        if pa is None:
            return f"{name} (its recorded entry {str(a)[:60]!r} is not 'DTYPE [SHAPE] SHA': the table is malformed)"
        if pa[:2] != pb[:2]:
            return f"{name} ({pa[0]} {pa[1]} in the checkpoint's file, {pb[0]} {pb[1]} in this setup's)"
        return f"{name} (same dtype and shape, different values)"
    return "none in the recorded table (it may be incomplete)"


def _parts(entry: Any) -> tuple[str, str, str] | None:
    """(dtype, shape, sha) of a table entry; None when it is not ``"DTYPE [SHAPE] SHA"``."""
    if not isinstance(entry, str) or entry.count(" ") < 2:
        return None
    dtype, rest = entry.split(" ", 1)
    shape, sha = rest.rsplit(" ", 1)
    return dtype, shape, sha


def reordered_metadata_hashes(path: str | Path, max_entries: int = 3) -> set[str]:
    """The sha256 a safetensors file would have with its ``__metadata__`` entries in each other order
    (before content digests, dgseg's embedded import wrote them in an order that varied from process to
    process). Empty for other files, files without metadata or with more than ``max_entries`` entries."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return set()
    with open(path, "rb") as f:
        first = f.read(8)
        n = int.from_bytes(first, "little") if len(first) == 8 else -1
        if n <= 0 or n > 100_000_000:
            return set()
        raw = first + f.read(n)
    try:
        meta_len = len(json.loads(raw[8:]).get("__metadata__") or {})
    except ValueError:
        return set()
    if not 2 <= meta_len <= max_entries:
        return set()
    variants = [v for v in safetensors_header_variants(raw, itertools.permutations) if v != raw]
    hashes = set()
    for head in variants:
        digest = hashlib.sha256(head)
        with open(path, "rb") as f:
            f.seek(len(raw))
            while block := f.read(1 << 20):
                digest.update(block)
        hashes.add(digest.hexdigest())
    return hashes
