"""``run.json``: the facts of a run a report needs (machine, precision, versions, git revision,
parameter counts, training time), written when training starts and again when it ends."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import numpy as np
from torch import nn

from dgseg.config import Config


def git_revision() -> str | None:
    """The commit of the dgseg source tree when it is a git checkout (an editable install), else None."""
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import timm
    import torch

    import dgseg

    return {"dgseg": dgseg.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version()}


def precision_name(amp: str) -> str:
    return "float32" if amp == "none" else f"{amp} autocast"


def training_time_s(log: Path | list[dict]) -> float:
    """Seconds spent in training steps, from ``log.jsonl`` (a path, or its records): summed over resumed
    sessions, the last record of a repeated iteration winning."""
    from dgseg.viz import _read_jsonl

    if isinstance(log, Path):
        log = _read_jsonl(log) if log.exists() else []
    per_iter = {int(r["iter"]): float(r["time_per_iter"]) for r in log if "time_per_iter" in r and "iter" in r}
    total, prev = 0.0, 0
    for it in sorted(per_iter):
        total += per_iter[it] * (it - prev)
        prev = it
    return total


def write_run_facts(out_dir: Path, cfg: Config, model: nn.Module, amp: str, started: bool = False,
                    train_time_s: float | None = None) -> Path:
    """Write (or update) ``out_dir/run.json`` atomically."""
    from datetime import datetime, timezone

    from dgseg.machine import machine_line

    path = out_dir / "run.json"
    facts = json.loads(path.read_text()) if path.exists() and not path.is_symlink() else {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    facts.update({"name": cfg.name, "machine": machine_line(), "precision": precision_name(amp),
                  "train_amp": cfg.train.amp, "versions": versions(), "git_revision": git_revision(),
                  "params": model.parameter_counts()})
    if started:
        facts.setdefault("started", now)
    if train_time_s is not None:
        facts["finished"] = now
        facts["train_time_s"] = training_time_s(out_dir / "log.jsonl") or train_time_s
    from dgseg.atomic import write_atomic

    return write_atomic(path, json.dumps(facts, indent=2))


def palette_of(cfg: Config) -> np.ndarray:
    """The [K, 3] uint8 colours of the run's classes."""
    from dgseg.data.classes import config_class_set

    return np.asarray(config_class_set(cfg).palette, dtype=np.uint8)
