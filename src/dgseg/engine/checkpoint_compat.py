"""Whether a checkpoint belongs to the current setup: a file's sha256 (cached), and the comparison of a
checkpoint's meta record with the values the current config/model has.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dgseg.engine.checkpoint_read import CheckpointError

__all__ = ["file_sha256", "check_compatible"]

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
