"""Two tiny finished runs (rein, frozen) for the report tests, trained once per test session."""

from __future__ import annotations

from pathlib import Path

from tiny import tiny_config

from dgseg.engine.train import train


def make_runs(root: Path) -> list[Path]:
    runs = []
    for adapter in ("rein", "frozen"):
        cfg = tiny_config(train__max_iters=2, train__checkpoint_interval=2, train__eval_interval=1,
                          model__adapter={"name": adapter, "tokens": 8, "query_dim": 32, "link": adapter == "rein"},
                          eval__examples=2)
        cfg.name = f"tiny-{adapter}"
        train(cfg, root / adapter, progress=False)
        runs.append(root / adapter)
    return runs
