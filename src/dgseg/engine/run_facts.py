"""``run.json``: the facts of a run a report needs (machine, precision, versions, git revision,
parameter counts, training time), written when training starts and again when it ends."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch
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


RUN_JSON = "the run's facts as dgseg train writes them (machine, precision, starts, ...)"


def read_run_json(out_dir: Path) -> dict:
    """The ``run.json`` a new start of training merges its facts into; empty when there is none. Refused, by
    name: a symbolic link (replacing it would lose the history it points to, following it would write
    elsewhere), a file that is not a JSON object, and a ``starts`` that is not a list of objects."""
    from dgseg.atomic import refuse_link
    from dgseg.engine.run_folder import KEPT
    from dgseg.json_files import json_type, read_json_object

    path = refuse_link(out_dir / "run.json", KEPT["run.json"])
    if not path.exists():
        return {}
    repair = (f"; repair it, or move it out of {out_dir} and the run's facts start again from this start "
              f"(its earlier starts are then not listed)")
    try:
        facts = read_json_object(path, RUN_JSON)
    except ValueError as e:
        raise ValueError(f"{e}{repair}") from e
    starts = facts.get("starts", [])  # absent in a run.json from before starts were recorded
    if not isinstance(starts, list):
        raise ValueError(f"{path}: 'starts' is a JSON {json_type(starts)}; expected a list of the run's starts{repair}")
    bad = next((i for i, s in enumerate(starts) if not isinstance(s, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: starts[{bad}] is a JSON {json_type(starts[bad])}; expected an object "
                         f"(from_iter, machine, precision, started){repair}")
    return facts


def write_run_facts(out_dir: Path, cfg: Config, model: nn.Module, amp: str, started: bool = False,
                    train_time_s: float | None = None, from_iter: int = 0) -> Path:
    """Write (or update) ``out_dir/run.json`` atomically.

    ``started``: training (re)starts here at iteration ``from_iter``; each start is recorded in ``"starts"``
    (iteration, machine, precision, torch threads, time), and ``"machine"`` / ``"precision"`` name every one the run
    trained on, joined by " + " (a run resumed on a CPU without native bf16 trains on in float32: say so)."""
    from datetime import datetime, timezone

    from dgseg.machine import machine_line

    path = out_dir / "run.json"
    facts = read_run_json(out_dir)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    here = {"machine": machine_line(), "precision": precision_name(amp)}
    starts = facts.get("starts")
    if not isinstance(starts, list):  # a new run, or a run.json from before starts were recorded: its one start
        starts = [{"from_iter": 0, "machine": facts["machine"], "precision": facts["precision"],
                   "started": facts.get("started")}] if {"machine", "precision"} <= set(facts) else []
    if started:
        starts.append({"from_iter": from_iter, **here, "threads": torch.get_num_threads(), "started": now})
    starts = starts or [here]
    facts.update({"name": cfg.name, "machine": _joined(s.get("machine", "unknown") for s in starts),
                  "precision": _joined(s.get("precision", "unknown") for s in starts), "starts": starts,
                  "train_amp": cfg.train.amp, "versions": versions(), "git_revision": git_revision(),
                  "params": model.parameter_counts()})
    if started:
        facts.setdefault("started", now)
    if train_time_s is not None:
        facts["finished"] = now
        facts["train_time_s"] = training_time_s(out_dir / "log.jsonl") or train_time_s
    from dgseg.atomic import write_atomic

    return write_atomic(path, json.dumps(facts, indent=2))


def _joined(values) -> str:
    """The distinct values in the order they first came, joined by " + "."""
    return " + ".join(dict.fromkeys(values))


def palette_of(cfg: Config) -> np.ndarray:
    """The [K, 3] uint8 colours of the run's classes."""
    from dgseg.data.classes import config_class_set

    return np.asarray(config_class_set(cfg).palette, dtype=np.uint8)
