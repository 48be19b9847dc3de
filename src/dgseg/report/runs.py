"""Reading a run folder for the report: whatever of eval.json, log.jsonl, config.yaml, run.json exists.

Old run folders (before confusion matrices, examples and run.json were written) still give a record:
the parts they lack are None/empty and the page leaves those sections out for that run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from dgseg.metrics import rpd

RUN_FILES = ("eval.json", "log.jsonl", "config.yaml", "run.json")


@dataclass
class RunRecord:
    name: str
    path: Path
    source: str | None = None
    classes: list[str] = field(default_factory=list)
    palette: np.ndarray | None = None
    domains: dict[str, dict] = field(default_factory=dict)
    """domain -> {"mIoU", "IoU" [K], "aAcc", "confusion" [K][K] or None}"""
    mean_over: list[str] | None = None
    """The domains the run's mean averages (eval.json ``mean.over``, from data.mean_over); None: every target."""
    examples: dict[str, list[dict[str, Path]]] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        return [d for d in self.domains if d != self.source]

    def mean_targets(self) -> float:
        over = [d for d in self.mean_over if d in self.domains] if self.mean_over else self.targets
        vals = [self.domains[d]["mIoU"] for d in over if _num(self.domains[d].get("mIoU"))]
        return float(np.mean(vals)) if vals else math.nan

    def rpd(self) -> float:
        src = self.domains.get(self.source or "", {}).get("mIoU")
        return rpd(self.mean_targets(), float(src)) if _num(src) else math.nan

    def trainable(self) -> int | None:
        return (self.facts.get("params") or {}).get("trainable")

    def train_time_s(self) -> float | None:
        if self.facts.get("train_time_s"):
            return float(self.facts["train_time_s"])
        from dgseg.engine.run_facts import training_time_s

        return training_time_s(self.log) or None


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_run(path: str | Path, name: str | None = None) -> RunRecord:
    """The report's view of one run folder; an error naming the folder when it holds none of RUN_FILES."""
    from dgseg.viz import _read_jsonl

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"report: {path} is not a folder (give run folders, e.g. runs/demo/rein)")
    if not any((path / f).exists() for f in RUN_FILES):
        raise ValueError(f"report: {path} is not a run folder: it has none of {', '.join(RUN_FILES)}")
    rec = RunRecord(name=name or path.name, path=path)
    if (path / "config.yaml").exists():
        rec.config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    if (path / "run.json").exists():
        rec.facts = _load_json(path / "run.json")
    if (path / "log.jsonl").exists():
        rec.log = _read_jsonl(path / "log.jsonl")
    if (path / "eval.json").exists():
        ev = _load_json(path / "eval.json")
        rec.source = ev.get("source")
        rec.domains = {d: r for d, r in (ev.get("domains") or {}).items() if isinstance(r, dict)}
        rec.classes = list(ev.get("classes") or [])
        over = (ev.get("mean") or {}).get("over") if isinstance(ev.get("mean"), dict) else None
        rec.mean_over = [str(d) for d in over] if isinstance(over, list) and over else None
        if ev.get("palette"):
            rec.palette = np.asarray(ev["palette"], dtype=np.uint8)
        for domain, items in (ev.get("examples") or {}).items():
            rec.examples[domain] = [{k: path / v for k, v in item.items()} for item in items]
    if rec.source is None:
        rec.source = (rec.config.get("data") or {}).get("source")
    k = max((len(r.get("IoU") or []) for r in rec.domains.values()), default=0)
    if not rec.classes or (k and len(rec.classes) != k):
        from dgseg.data.labels import CLASSES

        rec.classes = list(CLASSES) if k in (0, len(CLASSES)) else [f"class {i}" for i in range(k)]
    if rec.palette is None or len(rec.palette) < len(rec.classes):
        from dgseg.data.classes import default_palette
        from dgseg.data.labels import PALETTE

        rec.palette = (np.asarray(PALETTE, dtype=np.uint8) if len(rec.classes) <= len(PALETTE)
                       else default_palette(len(rec.classes)))
    return rec


def unique_names(paths: list[Path]) -> list[str]:
    """Run labels: the folder name, with its parent when two runs share a name."""
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
