"""Strict JSON for results files: NaN and infinities become ``null`` (Python's ``json`` would write bare
``NaN``, which other JSON readers refuse), e.g. the IoU of a class absent from a domain."""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every NaN/Inf float replaced by None, through dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite_or_null` ``(obj)``; refuses anything that would still not be strict."""
    return json.dumps(finite_or_null(obj), allow_nan=False, **kwargs)
