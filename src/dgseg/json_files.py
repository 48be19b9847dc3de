"""Reading the JSON files of a run folder (``run.json``, ``eval.json``, ``summary.json``): one reader, whose
error names the file and what it should hold, so a hand-edited or cut file never ends in a bare traceback."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_json_object", "json_type"]

_TYPES = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
          type(None): "null"}


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type: object, list, string, boolean, number, null."""
    return _TYPES.get(type(value), type(value).__name__)


def read_json_object(path: Path, what: str, prefix: str = "") -> dict:
    """The JSON object in ``path``. An unreadable file, invalid JSON (a cut file, bytes that are not UTF-8) or
    another JSON value is a ``ValueError`` naming the file and ``what`` it should hold; ``prefix`` (e.g.
    ``"bench: "``) starts the message."""
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{prefix}{path}: not readable ({e.strerror or e}); expected {what}") from e
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError alike
        raise ValueError(f"{prefix}{path}: not valid JSON ({e}); expected {what}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{prefix}{path}: a JSON {json_type(data)}; expected an object, {what}")
    return data
