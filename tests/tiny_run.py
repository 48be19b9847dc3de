"""A run folder with a checkpoint of the untrained tiny model (no training: fast), for CLI tests."""

from __future__ import annotations

from pathlib import Path

from tiny import tiny_config

import dgseg
from dgseg.engine.checkpoint import save_checkpoint
from dgseg.engine.train import checkpoint_meta


def tiny_run(out: Path, **sections) -> Path:
    cfg = tiny_config(**sections)
    model = dgseg.build_model(cfg)
    save_checkpoint(out, 1, model.trainable_state_dict(), checkpoint_meta(cfg, 1))
    return out
