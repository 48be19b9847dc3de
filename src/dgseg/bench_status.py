"""Where a comparison stands (``dgseg bench --status``): one row per run, read from its folder, and the time
a run has left at its pace."""

from __future__ import annotations

from pathlib import Path

from dgseg.bench import BENCH_CONFIG, _check_bench_folder, bench_config, run_state
from dgseg.bench_report import read_run_facts


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
                rows.append(f"| {method} | {seed} | {e} | - | - | - | - |")
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
