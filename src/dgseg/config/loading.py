"""Loading a config: YAML files with ``_base_`` includes merged, ``key=value`` overrides applied, values
checked against the annotations of :mod:`dgseg.config.schema` and converted (dicts become dataclasses),
then validated (:mod:`dgseg.config.validate`); and the way back to a plain dict / YAML text.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from dgseg.strict_yaml import DuplicateKeyError, load_yaml_text

from . import origins as trace
from .schema import Config, ConfigError
from .validate import validate_config


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    """How an error message names an annotation: 'an integer', 'a list of integers or null', ..."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"a list of {_type_name(item).split(' ', 1)[-1]}s"
    if tp is dict or origin is dict or _is_dataclass_type(tp):
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp) or getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# PyYAML follows YAML 1.1, where a float needs a dot: "2e-4" or "1e5" stay strings. Numeric fields accept
# them (YAML 1.2 reads them as numbers); string fields are untouched.
_NUMBER = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$")


def _as_number(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value.strip().replace("_", ""))
    return value


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (dicts become dataclasses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1 and not errors[0].startswith(f"{key}:"):
            raise ConfigError(errors[0])  # the problem is deeper (a list item, a nested key): name that
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        if origin is dict:
            key_tp, val_tp = typing.get_args(tp)
            return {_convert(k, key_tp, f"{key} key"): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
        return {str(k): v for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp in (int, float):
        value = _as_number(value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # YAML reads .nan / .inf; every number of the schema must be finite
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join((prefix + '.' if prefix else '') + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key '{key}'.{hint} Valid keys here: {', '.join(names)}")
        kwargs[k] = _convert(v, hints[k], key)
    return cls(**kwargs)


def _deep_merge(base: dict, over: dict, origins: trace.Origins | None = None, over_origins: trace.Origins | None = None,
                prefix: tuple[str, ...] = ()) -> dict:
    """``over``'s keys over ``base``'s, mappings merged key by key; ``origins`` (``base``'s writers, see
    :mod:`dgseg.config.origins`) is updated with ``over_origins`` where ``over`` wrote."""
    out = dict(base)
    for k, v in over.items():
        here = prefix + (str(k),)
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v, origins, over_origins, here)
            if origins is not None:
                origins[here] = over_origins[here]
        else:
            out[k] = v
            if origins is not None:
                trace.replace(origins, here, over_origins)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = (), origins: trace.Origins | None = None,
               shown: str | Path | None = None) -> dict:
    """The file's keys over those of its ``_base_`` files. ``origins``, when given, receives where each key came
    from (:mod:`dgseg.config.origins`): the file that last wrote it, named as ``shown`` (default: ``path`` as given)
    or, for a base, as the including file's name joined with the ``_base_`` entry."""
    shown = path if shown is None else shown
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ include ({' -> '.join(str(p) for p in seen)})")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a YAML config file (e.g. configs/demo.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml_text(path.read_text()) or {}  # empty: `dgseg train` says what it misses (preflight)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason} at byte {exc.start}); expected a YAML config") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(f"{path}: _base_: expected a file name or a list of file names (relative to this file), "
                          f"got {bases!r}")
    merged: dict = {}
    merged_origins: trace.Origins = {}
    for base in bases:
        target = path.parent / base
        if not target.exists():  # named from the file that includes it: the path alone does not say where it came from
            raise ConfigError(f"{path}: _base_ {base!r}: config file not found: {target.resolve()} (relative to "
                              "the including file's folder)")
        base_origins: trace.Origins = {}
        # named as the user wrote the including file's path, unless that is a link into another folder
        shown_base = Path(shown).parent / base if Path(shown).parent.resolve() == path.parent else target
        base_data = _read_yaml(target, seen + (path,), base_origins, shown_base)
        merged = _deep_merge(merged, base_data, merged_origins, base_origins)
    merged = _deep_merge(merged, data, merged_origins, trace.of_file(data, str(shown)))
    if origins is not None:
        origins.update(merged_origins)
    return merged


def sets_nothing(path: str | Path) -> bool:
    """True when the config file ``path`` (with its ``_base_`` includes) sets no key: empty or comments only."""
    return not _read_yaml(Path(path))


def parse_override(override: str) -> tuple[str, Any]:
    """``key=value`` -> (dotted key, the value read as YAML; an empty value is None)."""
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected key=value, e.g. train.lr=1e-4")
    key, raw = override.split("=", 1)
    if not all(part.strip() for part in key.split(".")):
        raise ConfigError(f"override '{override}': the key {key.strip()!r} has an empty part; expected a dotted "
                          "config key such as train.lr")
    try:
        value = load_yaml_text(raw) if raw.strip() else None
    except DuplicateKeyError as exc:
        raise ConfigError(f"override '{override}': the value's {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{override}': value is not valid YAML: {exc}") from exc
    return key.strip(), value


def _apply_override(data: dict, override: str, origins: trace.Origins | None = None) -> None:
    """Sets ``data``'s dotted key to the value of ``key=value``; ``origins`` (:mod:`dgseg.config.origins`), when
    given, records ``override '<override>'`` as the writer of the key, of every key in its value and of each
    section the override creates."""
    key, value = parse_override(override)
    where = f"override '{override}'"
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
            if origins is not None:
                origins[tuple(parts[:i + 1])] = (where, False)
        if isinstance(nxt, list):
            raise ConfigError(f"override '{override}': '{'.'.join(parts[:i + 1])}' is a list, not a section: "
                              f"--set cannot reach into it; set the whole list, e.g. {'.'.join(parts[:i + 1])}=[...]")
        if not isinstance(nxt, dict):
            raise ConfigError(f"override '{override}': '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value
    if origins is not None:
        new: trace.Origins = {}
        trace.note(new, value, where, tuple(parts))
        trace.replace(origins, tuple(parts), new)


def config_from_dict(data: dict) -> Config:
    """Build and validate a :class:`Config` from a plain nested dict."""
    cfg = _build(Config, data)
    validate_config(cfg)
    return cfg


def config_from_traced(data: dict, origins: trace.Origins, fallback: str | Path | None = None) -> Config:
    """:func:`config_from_dict`, its error prefixed with where the key it names was written (``origins``,
    :mod:`dgseg.config.origins`): the file (a base's for a base's key) or ``override 'key=value'``; ``fallback``
    (or nothing) when no writer set that key (a check that names a default). The Config keeps both, so that
    :func:`dgseg.build_model` names them the same way in an error about the model the config describes."""
    try:
        cfg = config_from_dict(data)
    except ConfigError as exc:
        where = trace.origin_of(str(exc), origins) or fallback
        raise ConfigError(f"{where}: {exc}" if where is not None else str(exc)) from None
    trace.keep(cfg, origins, fallback)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML experiment (with ``_base_`` includes) and apply ``key=value`` overrides.

    ``path=None`` starts from the defaults. An error names the file or override that wrote the key it is about
    (:func:`config_from_traced`), ``path`` when none did.
    """
    origins: trace.Origins = {}
    data = _read_yaml(Path(path), origins=origins) if path is not None else {}
    for override in overrides or []:
        _apply_override(data, override, origins)
    return config_from_traced(data, origins, path)


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
