"""Where each config key came from, so that an error names the file or ``--set`` override that wrote the key.

While :mod:`dgseg.config.loading` merges ``_base_`` files and applies overrides it records, per key path (a tuple
of key names), the last writer: ``{("train", "lr"): ("configs/base.yaml", True), ...}``, the flag telling whether
the value there is a leaf (anything but a mapping: a list is one leaf, so ``data.train[0].root`` belongs to whoever
wrote ``data.train``). A mapping node is recorded too (an unknown section is named by its own writer) and is
overwritten by each later writer that merges into it. :func:`origin_of` reads the key an error message names.
"""

from __future__ import annotations

import re
from typing import Any

Origins = dict[tuple[str, ...], tuple[str, bool]]


def note(origins: Origins, value: Any, where: str, prefix: tuple[str, ...]) -> None:
    """Records ``where`` as the writer of ``prefix`` and, when ``value`` is a mapping, of every key under it."""
    if prefix:
        origins[prefix] = (where, not isinstance(value, dict))
    if isinstance(value, dict):
        for k, v in value.items():
            note(origins, v, where, prefix + (str(k),))


def of_file(data: dict, where: str) -> Origins:
    """Every key of one file's own ``data`` written by ``where``."""
    origins: Origins = {}
    note(origins, data, where, ())
    return origins


def replace(origins: Origins, prefix: tuple[str, ...], new: Origins) -> None:
    """The value at ``prefix`` was replaced as a whole: its old records go, those of ``new`` under it come."""
    n = len(prefix)
    for path in [p for p in origins if p[:n] == prefix]:
        del origins[path]
    origins.update((p, o) for p, o in new.items() if p[:n] == prefix)


_UNKNOWN = re.compile(r"unknown config key '(.+?)'\.")


def origin_of(message: str, origins: Origins) -> str | None:
    """The writer of the first key ``message`` names (a ConfigError's text), None when no writer set it.

    The key is the one quoted in "unknown config key '...'", else the one the message starts with, else the first
    dotted key further on (a check of two keys, ``model.adapter.link`` with ``model.head.name``, whose first one
    is a default). A key inside a recorded leaf (``data.train[0].root``) is that leaf's; a key under a recorded
    mapping that nothing set (a default beside set keys) is no one's."""
    names = sorted(((".".join(p), where, leaf) for p, (where, leaf) in origins.items()), key=lambda t: -len(t[0]))
    unknown = _UNKNOWN.match(message)
    starts = ([unknown.start(1)] if unknown else []) + [0]
    starts += [i + 1 for i, c in enumerate(message) if c in " ("]
    for i in starts:
        subject = i == 0 or (unknown is not None and i == unknown.start(1))
        for name, where, leaf in names:
            if not message.startswith(name, i) or not (subject or "." in name):
                continue  # past the start, a bare word ("model", "name") is prose, not a key
            after = message[i + len(name):i + len(name) + 1]
            if after in ("", ":", " ", ",", ")", "'") and (leaf or subject):
                return where
            if after in (".", "[") and leaf:
                return where
    return None


_KEPT = "_dgseg_origins"  # an attribute of the Config, not a key: never dumped, never compared


def keep(cfg: Any, origins: Origins, fallback: Any = None) -> None:
    """Keeps ``origins`` and ``fallback`` (the config file, or None) on ``cfg``, so that an error its values raise
    later (while the model is built) names where they came from, as a ConfigError does (:func:`name_writer`)."""
    setattr(cfg, _KEPT, (dict(origins), None if fallback is None else str(fallback)))


def wrote(cfg: Any, key: str, where: str) -> None:
    """Records ``where`` (a command-line option, e.g. ``--backbone``) as the writer of the dotted ``key`` that a
    command set on ``cfg`` after it was loaded, so that an error about the key or its file names the option, not
    the config file (:func:`name_writer`)."""
    origins, fallback = getattr(cfg, _KEPT, None) or ({}, None)
    origins = dict(origins)
    path = tuple(key.split("."))
    replace(origins, path, {path: (where, True)})
    setattr(cfg, _KEPT, (origins, fallback))


def _is_path(value: Any) -> bool:
    """A value that reads as a file path (``/w/x.pth``, ``weights.safetensors``): one an error message names."""
    return isinstance(value, str) and len(value) > 3 and (
        "/" in value or "\\" in value or (" " not in value and re.search(r"\.[A-Za-z]\w{0,11}$", value) is not None))


def _value_at(cfg: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if isinstance(cfg, dict):
            cfg = cfg.get(name)
        elif hasattr(cfg, name):
            cfg = getattr(cfg, name)
        else:
            return None
    return cfg


def _names(message: str, value: str) -> tuple[bool, bool]:
    """Whether ``message`` names ``value`` as a whole (not inside a longer name: ``w.pt`` in ``/x/raw.pt``), and
    whether it starts with it."""
    named = False
    for m in re.finditer(re.escape(value), message):
        before = message[m.start() - 1] if m.start() else " "
        after = message[m.end()] if m.end() < len(message) else " "
        if before in " '\"(" and after in " '\"):,;":
            if m.start() == 0:
                return True, True
            named = True
    return named, False


def file_origin(message: str, origins: Origins, cfg: Any) -> str | None:
    """The writer of the key whose value is the file ``message`` starts with or names (a WeightsError says
    "<file>: ...", not the key): e.g. the ``--set`` override or option that set ``model.backbone.weights``. The
    file the message starts with wins (not a name it quotes later, e.g. a timm model with its pretrained tag,
    ``'vit_base_patch16_224.augreg_in21k'``), then the longest; None when no recorded leaf holds a file path the
    message names."""
    found = []
    for path, (where, leaf) in origins.items():
        value = _value_at(cfg, path) if leaf else None
        if _is_path(value):
            named, first = _names(message, value)
            if named:
                found.append((first, len(value), where))
    return max(found)[2] if found else None


def name_writer(exc: BaseException, cfg: Any) -> None:
    """Prefixes the message of ``exc`` (in place: its type and traceback stay) with the writer of the key it names
    (:func:`origin_of`), else of the file it names (:func:`file_origin`), else the config file ``cfg`` was loaded
    from; nothing for a config built in code (no record), a message that is not one string, or one that already
    starts with that writer."""
    kept = getattr(cfg, _KEPT, None)
    if kept is None or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return
    origins, fallback = kept
    message = exc.args[0]
    where = origin_of(message, origins) or file_origin(message, origins, cfg) or fallback
    if where is not None and not message.startswith(f"{where}:"):
        exc.args = (f"{where}: {message}",)
