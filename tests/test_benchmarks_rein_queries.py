"""benchmarks/rein_queries.py: how alike Rein's linked queries are (the README's linked-Rein analysis)."""

import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_config

import dgseg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not of the package
    sys.path.insert(0, str(ROOT))
from benchmarks.rein_queries import query_stats  # noqa: E402


def test_linked_queries_start_nearly_identical_and_spread_apart_when_tokens_differ():
    torch.manual_seed(0)
    model = dgseg.build_model(tiny_config())
    start = query_stats(model)
    assert start["queries"] == 8 and start["mean_cosine"] > 0.9 and start["groups"] == 1
    with torch.no_grad():  # tokens no longer small: the queries follow them apart
        for p in model.adapter.parameters():
            if p.ndim >= 2:
                p.normal_()
    spread = query_stats(model)
    assert spread["mean_cosine"] < 0.5 and spread["groups"] > 1 and spread["max_norm"] > start["max_norm"]


def test_a_model_without_linked_queries_is_refused():
    model = dgseg.build_model(tiny_config(model__adapter={"name": "frozen"}))
    with pytest.raises(ValueError, match="no Rein-linked queries"):
        query_stats(model)
