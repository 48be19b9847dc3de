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

__all__ = ["file_sha256", "check_compatible", "check_backbone_layout", "BACKBONE_LAYOUT"]

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


BACKBONE_LAYOUT = ("patch_size", "out_indices", "patch_remainder", "attn_norm", "final_norm", "pos_embed_init",
                   "pos_embed_resample", "class_embedding_twice", "model_kwargs")
"""``model.backbone`` keys that make the features a trained adapter and head were fitted to, at the same
tensor shapes: a checkpoint is evaluated with the values it was trained with. ``img_size`` may change (an
imported Rein release is read at its own crop), ``weights`` is checked by content, ``drop_path`` only acts
in training."""


def check_backbone_layout(meta: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Raises CheckpointError, naming each key, where ``config`` (``config_to_dict`` of the setup about to load
    the checkpoint) sets a :data:`BACKBONE_LAYOUT` key otherwise than the config stored in ``meta``. Keys the
    stored config lacks (older dgseg) are not compared. Compared as resolved: a null ``patch_size`` or
    ``out_indices`` is what the model makes of it (its own patch size, its default blocks), an empty
    ``model_kwargs`` is none. Another backbone name is :func:`check_compatible`'s to report."""
    stored = _lookup(meta, "config.model.backbone")
    if not isinstance(stored, Mapping):
        return
    current = config.get("model", {}).get("backbone", {})
    if stored.get("name", current.get("name")) != current.get("name"):
        return
    have, want = {k: stored[k] for k in BACKBONE_LAYOUT if k in stored}, {k: current.get(k) for k in BACKBONE_LAYOUT}
    for side in (have, want):
        if "model_kwargs" in side:
            side["model_kwargs"] = side["model_kwargs"] or None
    defaults_for = [k for k in ("patch_size", "out_indices") if k in have and (have[k] is None) != (want[k] is None)]
    if defaults_for and _normalise(have.get("model_kwargs")) == _normalise(want["model_kwargs"]):
        from dgseg.models.backbones import layout_defaults

        resolved = dict(zip(("patch_size", "out_indices"), layout_defaults(current["name"], want["model_kwargs"])))
        for side in (have, want):
            for key in defaults_for:
                side[key] = resolved[key] if side[key] is None else side[key]
    def shown(raw, value):
        return f"{raw!r}" if raw is not None or value is None else f"None (the model's {value!r})"

    problems = [f"model.backbone.{key}: trained with {shown(stored[key], have[key])}, this setup has "
                f"{shown(current.get(key), want[key])}" for key in have if _normalise(have[key]) != _normalise(want[key])]
    if problems:
        raise CheckpointError("the backbone would compute other features than the ones this checkpoint was trained "
                              "on:\n  " + "\n  ".join(problems) + "\nLeave these keys as trained (drop the --set "
                              "or the config value that changes them); another value needs a model trained with it")
