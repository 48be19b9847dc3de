"""Reliability of runs, second pass (issue 16): divergence with the Mask2Former head, torn log lines,
configs that name nothing to train on, existing run folders, resume markers, skipped samples in the log,
messages in command-line terms, eval.json without NaN."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_config

import dgseg
from dgseg.engine import train as train_module
from dgseg.engine.checkpoint import latest_checkpoint
from dgseg.engine.train import TrainingError, train
from dgseg.models.heads.matcher import HungarianMatcher


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_config(**sections):
    sections.setdefault("train__max_iters", 3)
    return tiny_config(data__val=[], data__source=None, **sections)


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ item 3: divergence with the default head


def test_divergence_with_the_mask2former_head_stops_naming_step_losses_and_files(tmp_path):
    cfg = run_config(train__lr=1e30)
    assert cfg.model.head.name == "mask2former"
    with pytest.raises(TrainingError) as err:
        train(cfg, tmp_path, progress=False)
    msg = str(err.value)
    assert "non-finite loss or gradient at iteration 2" in msg and "'loss_cls': nan" in msg
    assert "batch files ['synthetic://game/train/" in msg
    assert latest_checkpoint(tmp_path).name == "iter_0000001.safetensors" and "iter_0000001" in msg


def test_non_finite_mask2former_predictions_are_skipped_under_on_nan_skip(tmp_path, monkeypatch):
    cfg = run_config(train__on_nan="skip")
    torch.manual_seed(cfg.train.seed)
    model = dgseg.build_model(cfg)
    real, calls = type(model.head).forward, {"n": 0}

    def diverged_once(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            out["pred_masks"] = out["pred_masks"] * float("inf")
        return out

    monkeypatch.setattr(type(model.head), "forward", diverged_once)
    result = train(cfg, tmp_path, progress=False, model=model)
    assert result["step"] == 3 and result["skipped_steps"] == 1
    (skip,) = [r for r in records(tmp_path) if "skipped" in r]
    assert skip["iter"] == 2 and len(skip["files"]) == cfg.train.batch_size


def test_the_matcher_refuses_a_non_finite_cost_by_name():
    cls = torch.zeros(3, 4)
    cls[0, 0] = float("nan")
    with pytest.raises(ValueError, match="HungarianMatcher: the cost matrix has NaN/Inf entries"):
        HungarianMatcher(num_points=16)(cls, torch.zeros(3, 8, 8), torch.tensor([0, 1]), torch.ones(2, 8, 8))


def test_max_consecutive_skips_is_pinned():
    assert train_module.MAX_CONSECUTIVE_SKIPS == 20
