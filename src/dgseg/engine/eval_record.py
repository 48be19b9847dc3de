"""Where an evaluation comes from: the checkpoint, its iteration, whether it holds the run's final weights, the
overrides and the settings that decide the numbers (``eval.json``'s ``evaluated`` record, ``eval.md``'s header
line); and where ``dgseg eval`` writes it. Only the run's own evaluation (its final weights with the settings it
was trained with) goes into the run folder by default, replacing the one training wrote; any other needs
``--out`` (or ``--force``), so that an intermediate or reconfigured evaluation never silently stands for the run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from dgseg.config import Config, ConfigError, config_from_dict, config_to_dict, domain_name
from dgseg.engine.checkpoint_read import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    CheckpointError,
    checkpoint_dir,
    highest_checkpoint,
    latest_checkpoint,
    read_meta,
    resolve_checkpoint,
)
from dgseg.engine.precision import resolve_amp
from dgseg.engine.run_facts import precision_name

EVAL_KEYS = ("model", "data.val", "data.source", "data.mean_over", "data.classes", "data.on_error",
             "data.unknown_labels", "eval", "train.amp")
"""The config keys (with every key under them) an evaluation reads."""
SAME_NUMBERS = ("model.backbone.weights", "model.text.weights", "model.text.embeddings", "eval.batch_size",
                "eval.examples")
"""Keys among :data:`EVAL_KEYS` that leave the numbers as they are: the backbone file and a learned prompt's text
tower are checked by their content, fixed class embeddings come from the checkpoint itself (the file is not
read), windows are only batched otherwise, and the examples kept are pictures."""


class EvalFolderError(FileExistsError):
    """``dgseg eval`` would replace the run's own evaluation with another one."""


def evaluation_record(checkpoint: str | Path, cfg: Config, device: torch.device, by: str,
                      overrides: list[str] | tuple[str, ...] = (), config: str | None = None) -> dict:
    """``eval.json``'s ``evaluated``: the checkpoint as given and its file, its iteration, the run's
    ``train.max_iters``, whether it is the run's final weights (``final``; ``not_final`` says why not), the CONFIG
    and ``--set`` overrides of the command (``by``), the keys the evaluation reads whose values differ from the
    run's config (``changed``: key -> [the run's, this evaluation's]) and the settings that decide the numbers."""
    file = resolve_checkpoint(checkpoint)
    meta = read_meta(file)
    step = meta.get("step") if type(meta.get("step")) is int else None
    run, parsed = _run_config(meta)
    train = (run or config_to_dict(cfg)).get("train")
    max_iters = train.get("max_iters") if isinstance(train, dict) else None
    why = not_final(file, step, max_iters)
    return {"by": by, "checkpoint": str(checkpoint), "file": str(file.resolve()), "iteration": step,
            "max_iters": max_iters, "final": why is None, **({"not_final": why} if why else {}),
            "config": config, "overrides": list(overrides),
            "changed": {} if run is None else changed_keys(run, config_to_dict(cfg), every_key=parsed,
                                                           same=_same_numbers(run, meta)),
            "settings": eval_settings(cfg, device),
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _run_config(meta: dict) -> tuple[dict | None, bool]:
    """The config the checkpoint was trained with (None: it records none) and whether it holds every key: False
    for a config this dgseg does not read (another version's), kept as it is stored."""
    stored = meta.get("config")
    if not isinstance(stored, dict):
        return None, False
    try:
        with warnings.catch_warnings():  # loading the model said them already
            warnings.simplefilter("ignore")
            return config_to_dict(config_from_dict(copy.deepcopy(stored))), True
    except (ConfigError, TypeError, ValueError):  # a config of another dgseg: compared as it is stored
        return stored, False


def not_final(file: Path, step: int | None, max_iters) -> str | None:
    """Why the checkpoint ``file`` (of iteration ``step``) is not the run's final weights; None when it is: its
    iteration reached ``train.max_iters`` and no later checkpoint of its run followed (resumed for longer), in the
    folder of the file (a link followed) or the ``checkpoints/`` folder beside it (an export in the run folder)."""
    if step is None:
        return "its meta records no iteration"
    if type(max_iters) is int and step < max_iters:
        return f"the run's train.max_iters is {max_iters}"
    real = file.resolve()  # a link (run/best.safetensors -> checkpoints/iter_...): the checkpoint it names
    folder = real.parent
    try:
        latest = latest_checkpoint(folder)
    except CheckpointError:  # a damaged `latest` pointer: the highest-step checkpoint, as resuming takes it
        latest = highest_checkpoint(checkpoint_dir(folder)) if checkpoint_dir(folder).is_dir() else None
    return superseded(latest, step)  # an export or copy of it too: the run went on


def superseded(latest: Path | None, step: int) -> str | None:
    """``a later checkpoint of the run follows: <name>`` when the run's checkpoint ``latest`` is of a later
    iteration than ``step`` (the run was resumed for longer); else None."""
    later = CHECKPOINT_FILE.match(latest.name) if latest is not None else None
    if later is not None and int(later.group(1)) > step:
        return f"a later checkpoint of the run follows: {latest.name}"
    return None


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same_numbers(run: dict, meta: dict) -> tuple[str, ...]:
    """:data:`SAME_NUMBERS` for the checkpoint of ``meta``: a learned prompt's text tower file counts only where the
    checkpoint records the tower's content digest (checked at load); one of an older dgseg records none."""
    text = (run.get("model") or {}).get("text") if isinstance(run.get("model"), dict) else None
    learned = isinstance(text, dict) and text.get("name") == "clip" and bool(text.get("learnable_context"))
    tower = meta.get("text_tower")
    if learned and not (isinstance(tower, dict) and tower.get("digest")):
        return tuple(k for k in SAME_NUMBERS if k != "model.text.weights")
    return SAME_NUMBERS


def changed_keys(run: dict, here: dict, every_key: bool = True, same: tuple[str, ...] = SAME_NUMBERS
                 ) -> dict[str, list]:
    """The keys an evaluation reads (:data:`EVAL_KEYS`, less ``same``: :data:`SAME_NUMBERS`) whose values differ
    between the run's config and this evaluation's: key -> [the run's value, this one's] (None: absent).
    ``every_key`` False: ``run`` is a config of another dgseg, stored as it was; a key it lacks (added since) is
    not a difference."""
    a, b = _flat(run), _flat(here)
    keys = set(a) | set(b) if every_key else set(a)
    read = [k for k in sorted(keys) if _under(k, EVAL_KEYS) and not _under(k, same)]
    return {k: [a.get(k), b.get(k)] for k in read if a.get(k) != b.get(k)}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def eval_settings(cfg: Config, device: torch.device) -> dict:
    """What decides an evaluation's numbers besides the weights and the data: inference mode (and the entries'
    own), window and stride, test-time augmentation, the precision it ran in on ``device``."""
    modes = {domain_name(s, cfg.data.val): s.mode for s in cfg.data.val if s.mode}
    return {"mode": cfg.eval.mode, **({"entry_modes": modes} if modes else {}), "crop": cfg.eval.crop,
            "stride": cfg.eval.stride, "tta": dataclasses.asdict(cfg.eval.tta),
            "precision": precision_name(resolve_amp(cfg.train.amp, device, training=False))}


def header_line(record: dict) -> str:
    """``eval.md``'s line under its title: which checkpoint, iteration, final or not, overrides and settings."""
    s = record.get("settings") or {}
    tta = s.get("tta") or {}
    views = f"TTA scales {tta.get('scales')}{' + flip' if tta.get('flip') else ''}" if tta.get("enabled") else "no TTA"
    modes = "".join(f", {d}: {m}" for d, m in (s.get("entry_modes") or {}).items())
    given, name = str(record.get("checkpoint")), Path(str(record.get("file"))).name
    parts = [f"Checkpoint `{given}`{'' if given.endswith(name) else f' ({name})'}, {iteration_text(record)}",
             f"eval.mode {s.get('mode')}{modes}, crop {s.get('crop')}, stride {s.get('stride')}, {views}, "
             f"{s.get('precision')}"]
    if record.get("config"):
        parts.append(f"config `{record['config']}`")
    if record.get("overrides"):
        parts.append(" ".join(f"`--set {o}`" for o in record["overrides"]))
    if record.get("changed"):
        parts.append("differs from the run's config in " + ", ".join(record["changed"]))
    return f"{'; '.join(parts)} ({record.get('by')}, {record.get('at')})."


def iteration_text(record: dict) -> str:
    """``iteration 4 (the run's final weights)`` or ``iteration 2 (not the run's final weights: ...)``."""
    it = record.get("iteration")
    head = "iteration unknown" if it is None else f"iteration {it}"
    return f"{head} (the run's final weights)" if record.get("final") else \
        f"{head} (not the run's final weights: {record.get('not_final', 'unknown')})"


def eval_folder(checkpoint: str | Path, out: str | None, record: dict | None, force: bool = False,
                domains: list[str] | None = None) -> Path:
    """The folder ``dgseg eval`` writes into: ``out``, or the checkpoint's run folder. An evaluation that is not
    the run's own (``record``: not its final weights, or a key the evaluation reads set otherwise) is refused
    there, before it runs, unless ``force``: it would replace the run's eval.json, eval.md and examples/.
    Nor does the run's own evaluation of ``domains`` replace an eval.json there that holds a domain it leaves
    out (``dgseg bench`` evaluates every domain of a run trained with its source alone).
    ``record`` None: nothing of the run's evaluation is written (``--corruptions``)."""
    from dgseg.atomic import check_out_folder

    given = Path(checkpoint).resolve()
    run = given if given.is_dir() else given.parent
    run = run.parent if run.name == CHECKPOINT_DIR else run
    folder = Path(out) if out else run
    folder = folder.parent if folder.name == CHECKPOINT_DIR else folder
    check_out_folder(folder, "--out")  # a file there: refused before the evaluation, not after it
    if record is None and force:
        raise ValueError("--force: applies to eval.json only; --corruptions writes corruptions.json, .md and .png, "
                         "replacing only an earlier corruption evaluation's; leave --force out")
    if record is None or force or folder.resolve() != run:
        return folder
    if record["final"] and not record["changed"]:
        kept = _kept_evaluation(folder / "eval.json", domains)
        if kept is None:
            return folder
        raise EvalFolderError(
            f"{folder}: its eval.json {kept}; this evaluation (the run's final weights with its own settings) "
            f"would replace it, eval.md and examples/. Give --out a folder of its own (e.g. --out "
            f"{folder / 'evals' / _label(record)}), or --force to replace it")
    why = [] if record["final"] else [f"{record['checkpoint']} is {iteration_text(record)}"]
    why += [f"{k} is {here!r}, the run's config has {was!r}" for k, (was, here) in record["changed"].items()]
    raise EvalFolderError(
        f"{folder}: dgseg eval writes into the run folder only the run's own evaluation (its final weights with "
        f"the settings it was trained with), which replaces eval.json, eval.md and examples/ there; this one is "
        f"not: {'; '.join(why)}. Give --out a folder of its own (e.g. --out {folder / 'evals' / _label(record)}), "
        "or --force to replace the run's evaluation with this one")


def _kept_evaluation(path: Path, domains: list[str] | None) -> str | None:
    """Why the run folder's ``eval.json`` at ``path`` must not be replaced by an evaluation of ``domains``: it
    holds domains that one leaves out (``dgseg bench`` evaluates every domain of a run trained with its source
    alone; ``--force`` may have written others). None: nothing there, or nothing in it that would be lost."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):  # none there, or unreadable: nothing of it can be kept
        return None
    held = old.get("domains") if isinstance(old, dict) else None
    dropped = [str(d) for d in held or {} if domains is not None and d not in domains] if isinstance(held, dict) else []
    if not dropped:
        return None
    was = old.get("evaluated")
    by = f" ({was.get('by')})" if isinstance(was, dict) and was.get("by") else ""
    return f"holds results{by} for domains this evaluation leaves out: {', '.join(dropped)}"


def _label(record: dict) -> str:
    return "checkpoint" if record.get("iteration") is None else f"iter_{record['iteration']:07d}"
