"""Where a comparison stands (``dgseg bench --status``): one row per run, read from its folder, and the time
a run has left at its pace."""

from __future__ import annotations

from pathlib import Path

from dgseg.bench import (
    BENCH_CONFIG,
    _check_bench_folder,
    _normalised,
    bench_config,
    run_state,
    training_config,
)
from dgseg.bench_report import read_run_facts
from dgseg.config import Config


def bench_status(methods: list[str], seeds: list[int], out: str | Path = "runs/bench", iters: int | None = None,
                 overrides: list[str] | None = None, config: str | Path | None = BENCH_CONFIG) -> str:
    """Where each (method, seed) of a comparison stands, as a markdown table (``dgseg bench --status``).

    Reads the run folders only: trains nothing, writes nothing, and shows a folder trained to another
    setting as such instead of refusing it (the training command refuses it by name). Per run: its state
    (finished, checkpoint at iteration N of T, or not started), its last source validation and the plateau
    check over what has been trained so far (the last quarter of the iterations done against the one
    before); for an unfinished run, the training time left at its recent pace (:func:`time_left`); the
    precision it trained in (``run.json``: two joined by " + " when it was resumed on another machine)."""
    import math

    from dgseg.bench_report import eval_points, quarter_rise
    from dgseg.engine.checkpoint_read import latest_step
    from dgseg.viz import _read_jsonl

    out = _check_bench_folder(out)
    rows = ["| method | seed | state | last source validation | rise, last quarter so far | time left | precision |",
            "|---|---|---|---|---|---|---|"]
    for method in methods:
        for seed in seeds:
            cfg = bench_config(method, seed, iters, overrides or [], config or BENCH_CONFIG)
            run_dir = out / method / f"seed{seed}"
            log, source, total = run_dir / "log.jsonl", cfg.data.source, cfg.train.max_iters
            try:
                state = run_state(run_dir, cfg)
            except ValueError as e:
                rows.append(f"| {method} | {seed} | {short_refusal(e, run_dir, cfg)} | - | - | - | - |")
                continue
            records = _read_jsonl(log) if state != "new" and log.exists() else []
            facts, precision = {}, "-"
            if state != "new":
                try:
                    facts = read_run_facts(run_dir)  # run.json, read once: its precision and its last start
                    precision = facts.get("precision", "-")
                except ValueError as e:
                    precision = str(e)
            left = "-"
            if state == "done":
                shown = f"finished ({total:,} iterations)"
            elif state == "resume":
                step = latest_step(run_dir)
                shown = f"checkpoint at iteration {step:,} of {total:,}"
                left = time_left(records, total - step, wall=wall_pace(facts, log, records))
            else:
                shown = "not started"
            points = eval_points(records, source)
            last = f"{points[max(points)]:.1f} at iteration {max(points):,}" if points else "-"
            rise = quarter_rise(points)
            rows.append(f"| {method} | {seed} | {shown} | {last} | {'-' if math.isnan(rise) else f'{rise:+.1f}'} "
                        f"| {left} | {precision} |")
    return "\n".join(rows)


def short_refusal(error: ValueError, run_dir: Path, cfg: Config, most: int = 4, width: int = 80) -> str:
    """``error`` (why :func:`run_state` refuses ``run_dir``) as a status row shows it: a run trained with another
    setting names at most ``most`` differing keys (:func:`setting_differences`), each value cut to ``width``
    characters, where the refusal itself names whole values (two complete ``data.val`` lists, thousands of
    characters); any other refusal as it is."""
    text = str(error)
    if "was trained with another setting" not in text:
        return text
    try:
        diffs = setting_differences(run_dir, cfg)
    except (ValueError, OSError):
        diffs = []
    if not diffs:  # the refusal's own list, cut
        return _cut(text, 4 * width)
    shown = "; ".join(f"{k}: run has {_cut(repr(a), width)}, asked {_cut(repr(b), width)}" for k, a, b in diffs[:most])
    more = f"; and {len(diffs) - most} more" if len(diffs) > most else ""
    return (f"bench: {run_dir} was trained with another setting ({shown}{more}); use another --out, or delete that "
            f"folder to train it again")


def setting_differences(run_dir: Path, cfg: Config) -> list[tuple[str, object, object]]:
    """(key, the run's value, the asked value) where ``run_dir`` was trained with another setting than ``cfg``,
    compared as :func:`run_state` compares them (a finished run's ``summary.json`` config with the whole config,
    an unfinished one's ``config.yaml`` with the training config); list entries of lists of one length are
    named one by one (``data.val[2].length``)."""
    import yaml

    from dgseg.bench_report import read_summary
    from dgseg.config import config_to_dict

    summary = run_dir / "summary.json"
    if summary.exists():
        recorded, wanted = read_summary(summary, need=()).get("config"), config_to_dict(cfg)
    else:
        recorded, wanted = yaml.safe_load((run_dir / "config.yaml").read_text()), config_to_dict(training_config(cfg))
    return [] if recorded is None else _differences(_normalised(recorded), wanted)


def _differences(a, b, key: str = "") -> list[tuple[str, object, object]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in [*a, *(k for k in b if k not in a)]
                for d in _differences(a.get(k), b.get(k), f"{key}.{k}" if key else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{key}[{i}]")]
    return [] if a == b else [(key, a, b)]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def time_left(records: list[dict], iterations: int, recent: int = 20, wall: float | None = None) -> str:
    """The time ``iterations`` more steps take. ``wall``: seconds per iteration since the run's last start
    (:func:`wall_pace`: its validations and checkpoints included, the machine as loaded as it was since then);
    without it, the median ``time_per_iter`` of the last ``recent`` logged intervals (training steps only: the
    periodic validation comes on top). The final evaluation comes on top of either."""
    import statistics

    if iterations <= 0:
        return "the final evaluation"
    if wall is not None:
        pace, how = wall, " since its last start, validations included"
    else:
        paces = [float(r["time_per_iter"]) for r in records if "time_per_iter" in r][-recent:]
        if not paces:
            return "-"
        pace, how = statistics.median(paces), ""
    seconds = iterations * pace
    shown = f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"
    return f"about {shown} ({pace:.2f} s per iteration{how})"


def wall_pace(facts: dict, log: Path, records: list[dict], least: int = 500) -> float | None:
    """Wall-clock seconds per iteration since the run's last start (``facts``, its ``run.json``: ``starts``,
    their time and first iteration) up to the last write of ``log`` and its last logged iteration, so
    validations and checkpoints count; None before ``least`` iterations since that start, or without the
    records it needs."""
    from datetime import datetime

    try:
        start = facts.get("starts", [])[-1]
        began, first = datetime.fromisoformat(start["started"]), int(start["from_iter"])
        last = max(int(r["iter"]) for r in records if "iter" in r)
        written = log.stat().st_mtime
    except (IndexError, KeyError, ValueError, TypeError, OSError):
        return None
    if last - first < least:
        return None
    return max(written - began.timestamp(), 0.0) / (last - first)
