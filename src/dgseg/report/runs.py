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

from dgseg.json_files import json_type, read_json_object
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
    evaluated: dict = field(default_factory=dict)
    """eval.json's ``evaluated``: the checkpoint, iteration, final or not, overrides (empty: an older eval.json)."""

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


EVAL_JSON = "an evaluation as dgseg eval writes it (source, classes, domains: {name: {mIoU, IoU, ...}})"


def _refuse(path: Path, where: str, value, expected: str) -> ValueError:
    return ValueError(f"report: {path}: {where} is a {json_type(value)} ({_short(value)}); expected {expected}")


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_config(path: Path) -> dict:
    """A run's ``config.yaml``: a YAML mapping (empty file: no config), its ``data`` a mapping too."""
    expected = "the run's config as dgseg train writes it (a mapping of sections: name, model, data, train, ...)"
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"report: {path}: not readable YAML ({_yaml_problem(exc)}); expected {expected}") from exc
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ValueError(f"report: {path}: a YAML {type(config).__name__}; expected {expected}")
    if not isinstance(config.get("data") or {}, dict):
        raise _refuse(path, "'data'", config["data"], "a mapping (source, train, val, ...)")
    return config


def _yaml_problem(exc: Exception) -> str:
    """A YAML error on one line: where (line, column) and what."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return " ".join(str(exc).split())


def _read_eval(path: Path) -> dict:
    """A run's ``eval.json``, each part the page reads in the shape dgseg eval writes."""
    ev = read_json_object(path, EVAL_JSON, prefix="report: ")
    if "domains" not in ev:  # every eval.json dgseg has written holds it; without it the page would be empty
        raise ValueError(f"report: {path}: has no 'domains'; expected {EVAL_JSON}")
    domains = ev.get("domains") or {}
    if not isinstance(domains, dict):
        raise _refuse(path, "'domains'", domains, "an object: domain name -> its results")
    for domain, result in domains.items():
        if not isinstance(result, dict):
            raise _refuse(path, f"domains[{domain!r}]", result, "an object with mIoU, IoU, aAcc, ...")
        miou = result.get("mIoU")
        if miou is not None and (isinstance(miou, bool) or not isinstance(miou, (int, float))):
            raise _refuse(path, f"domains[{domain!r}]['mIoU']", miou, "a number (or null)")
        if not isinstance(result.get("IoU") or [], list):
            raise _refuse(path, f"domains[{domain!r}]['IoU']", result["IoU"], "a list: one IoU per class")
    _expect(path, ev, "classes", list, "a list of class names")
    if ev.get("palette"):
        ev["palette"] = _palette(path, ev["palette"])
    _expect(path, ev, "mean", dict, "an object (over, mIoU)")
    _expect(path, ev, "evaluated", dict, "an object (checkpoint, iteration, final, overrides, settings)")
    record = ev.get("evaluated") or {}
    if not isinstance(record.get("final", False), bool):
        raise _refuse(path, "evaluated['final']", record["final"], "true or false")
    if record.get("iteration") is not None and type(record["iteration"]) is not int:
        raise _refuse(path, "evaluated['iteration']", record["iteration"], "a whole number (or null)")
    _expect(path, ev, "examples", dict, "an object: domain -> a list of {image, label, pred} file names")
    for domain, items in (ev.get("examples") or {}).items():
        names = isinstance(items, list) and all(isinstance(item, dict) for item in items) and all(
            isinstance(name, str) for item in items for name in item.values())
        if not names:
            raise _refuse(path, f"examples[{domain!r}]", items, "a list of {image, label, pred} file names")
    return ev


def _palette(path: Path, palette) -> np.ndarray:
    """eval.json's ``palette`` as a [K, 3] uint8 array; anything else refused by name."""
    try:
        colours = np.asarray(palette, dtype=np.int64)
    except (TypeError, ValueError):
        colours = None
    if colours is None or colours.ndim != 2 or colours.shape[1] != 3 or colours.min() < 0 or colours.max() > 255:
        raise _refuse(path, "'palette'", palette, "a list of [r, g, b] colours, each 0-255")
    return colours.astype(np.uint8)


def _read_facts(path: Path) -> dict:
    """A run's ``run.json``, its ``params`` and ``versions`` objects."""
    facts = read_json_object(path, "the run's facts as dgseg train writes them (machine, precision, ...)",
                             prefix="report: ")
    _expect(path, facts, "params", dict, "an object (total, trainable)")
    _expect(path, facts, "versions", dict, "an object: package -> version")
    return facts


def _expect(path: Path, record: dict, key: str, kind: type, expected: str) -> None:
    """Refuses ``record[key]`` when it is set (not null, not empty) and not a ``kind``."""
    value = record.get(key)
    if value and not isinstance(value, kind):
        raise _refuse(path, repr(key), value, expected)


def _superseded(run: Path, evaluated: dict) -> dict:
    """``evaluated`` as it stands now: an evaluation of the run's final weights whose run was resumed for longer
    since (a later checkpoint in ``run/checkpoints``, a resume stopped before its end included) is no longer of
    the final weights, and says so."""
    from dgseg.engine.checkpoint_read import CHECKPOINT_DIR, highest_checkpoint
    from dgseg.engine.eval_record import superseded

    step, folder = evaluated.get("iteration"), run / CHECKPOINT_DIR
    if not evaluated.get("final") or type(step) is not int or not folder.is_dir():
        return evaluated
    why = superseded(highest_checkpoint(folder), step)
    return evaluated if why is None else {**evaluated, "final": False, "not_final": why}


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
        rec.config = _read_config(path / "config.yaml")
    if (path / "run.json").exists():
        rec.facts = _read_facts(path / "run.json")
    if (path / "log.jsonl").exists():
        rec.log = _read_jsonl(path / "log.jsonl")
    if (path / "eval.json").exists():
        ev = _read_eval(path / "eval.json")
        rec.source = ev.get("source")
        rec.domains = dict(ev.get("domains") or {})
        rec.classes = list(ev.get("classes") or [])
        rec.evaluated = _superseded(path, dict(ev.get("evaluated") or {}))
        over = (ev.get("mean") or {}).get("over") if isinstance(ev.get("mean"), dict) else None
        rec.mean_over = [str(d) for d in over] if isinstance(over, list) and over else None
        if ev.get("palette") is not None:
            rec.palette = ev["palette"]
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
