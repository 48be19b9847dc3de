"""Results files are strict JSON: a NaN (the IoU of a class absent from a domain) is written as null."""

from __future__ import annotations

import json
import math

import pytest

from dgseg import strict_json


def _strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_nan_and_infinities_become_null_at_any_depth():
    obj = {"a": math.nan, "b": [1.0, math.inf, (2.0, -math.inf)], "c": {"d": 0.5, "e": "NaN"}}
    assert _strict_loads(strict_json.dumps(obj)) == {"a": None, "b": [1.0, None, [2.0, None]], "c": {"d": 0.5, "e": "NaN"}}


def test_a_value_json_cannot_write_is_still_refused():
    with pytest.raises(TypeError):
        strict_json.dumps({"x": object()})
