"""Where a comparison stands (``dgseg bench --status``): one row per run, read from its folder, and the time
a run has left at its pace."""

from __future__ import annotations

from pathlib import Path

from dgseg.bench import BENCH_CONFIG, _check_bench_folder, bench_config, resume_first, run_order, run_state
from dgseg.bench_report import read_run_facts


def bench_status(methods: list[str], seeds: list[int], out: str | Path = "runs/bench", iters: int | None = None,
                 overrides: list[str] | None = None, config: str | Path | None = BENCH_CONFIG, jobs: int = 1) -> str:
    """Where each (method, seed) of a comparison stands, as a markdown table (``dgseg bench --status``).

    Reads the run folders only: trains nothing, writes nothing, and shows a folder trained to another
    setting as such instead of refusing it (the training command refuses it by name). Per run: its state
    (finished, checkpoint at iteration N of T, or not started), its last source validation and the plateau
    check over what has been trained so far (the last quarter of the iterations done against the one
    before); for an unfinished run, the training time left at its recent wall-clock pace (:func:`time_left`); the
    precision it trained in (``run.json``: two joined by " + " when it was resumed on another machine). Under the
    table, what is left in all (:func:`total_left`, ``jobs`` runs side by side)."""
    import math

    from dgseg.bench_report import eval_points, quarter_rise
    from dgseg.engine.checkpoint_read import latest_step
    from dgseg.viz import _read_jsonl

    if jobs < 1:
        raise ValueError(f"bench: --jobs {jobs}: expected 1 or more runs at a time")
    out = _check_bench_folder(out)
    rows = ["| method | seed | state | last source validation | rise, last quarter so far | time left | precision |",
            "|---|---|---|---|---|---|---|"]
    lefts, paces, states, threads = {}, [], [], []  # lefts: iterations per unfinished (method, seed)
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
            states.append(state)
            records = _read_jsonl(log) if state != "new" and log.exists() else []
            facts, precision = {}, "-"
            if state != "new":
                try:
                    facts = read_run_facts(run_dir)
                    precision = facts.get("precision", "-")
                except ValueError as e:
                    precision = str(e)
            left = "-"
            if state == "done":
                shown = f"finished ({total:,} iterations)"
            elif state == "resume":
                step = latest_step(run_dir)
                shown = f"checkpoint at iteration {step:,} of {total:,}"
                pace = run_pace(records, status_cycle(cfg.train))
                left = time_left(total - step, pace)
                lefts[method, seed] = (max(total - step, 0), cfg)
                paces += [pace[0]] if pace else []
                threads += [_last_threads(facts)] if pace else []
            else:
                shown = "not started"
                lefts[method, seed] = (total, cfg)
            points = eval_points(records, source)
            last = f"{points[max(points)]:.1f} at iteration {max(points):,}" if points else "-"
            rise = quarter_rise(points)
            rows.append(f"| {method} | {seed} | {shown} | {last} | {'-' if math.isnan(rise) else f'{rise:+.1f}'} "
                        f"| {left} | {precision} |")
    from dgseg.bench_child import fair_share
    from dgseg.machine import usable_cores

    # the threads dgseg bench --jobs gives each run here, more where fewer runs are left than jobs
    per_run = fair_share(usable_cores(), jobs, states.count("resume") + states.count("new"))
    rank = {pair: i for i, pair in enumerate(run_order(methods, seeds))}
    order = resume_first([(m, s, cfg) for (m, s), (_, cfg) in sorted(lefts.items(), key=lambda kv: rank[kv[0]])],
                         out)  # the order the bench trains them: the furthest trained first, then seed by seed
    ordered = [lefts[m, s][0] for m, s, _ in order]
    return "\n".join(rows) + "\n\n" + total_left(ordered, states, paces, jobs, threads, per_run)


def _last_threads(facts: dict) -> int | None:
    """The torch threads of the run's last start (its ``run.json`` ``facts``); None where they record none (or
    could not be read: the table's precision cell names that file)."""
    starts = facts.get("starts")
    last = starts[-1] if isinstance(starts, list) and starts and isinstance(starts[-1], dict) else {}
    return last.get("threads") if type(last.get("threads")) is int else None


def total_left(lefts: list[int], states: list[str], paces: list[float], jobs: int = 1,
               threads: list[int | None] = (), per_run: int | None = None) -> str:
    """The line under ``--status``'s table: the iterations the unfinished runs (``states``, one per run shown
    but those trained to another setting) have left (``lefts``: one per unfinished run, in the order the bench
    trains them) and the time they take ``jobs`` at a time (:func:`makespan`: no more side by side than runs
    are left, and the last ones alone) at the median of the runs under way's ``paces`` (seconds per iteration,
    as measured: with as many runs side by side as ran then). Where the runs under way were measured with
    other ``threads`` than the ``per_run`` that ``--jobs`` gives each, the line says so: a pace measured alone
    on every core does not carry over to runs side by side, nor the reverse."""
    import statistics

    under_way, new = states.count("resume"), states.count("new")
    if under_way + new == 0:
        return "Left: nothing; every run shown has finished." if states else "Left: no run shown is of this setting."
    n = under_way + new
    count = f"{n} run{'s' if n != 1 else ''}"
    iterations = sum(lefts)
    if iterations == 0:
        return f"Left: the final evaluation of {count} under way."
    runs = f"{iterations:,} iterations of {count} ({under_way} under way, {new} not started)"
    if not paces:
        return f"Left: {runs}; no run under way has logged a pace to estimate the time from."
    pace = statistics.median(paces)
    fewer = f" ({n} at a time: fewer runs are left than that)" if n < jobs else ""
    line = (f"Left: {runs}: about {_duration(makespan(lefts, jobs) * pace)} at --jobs {jobs}{fewer}, final "
            f"evaluations on top, at the median pace of the runs under way ({pace:.2f} s per iteration each, as "
            "measured beside the runs that ran with them).")
    other = sorted({t for t in threads if t is not None and t != per_run})
    if per_run is None or not other:
        return line
    measured = " or ".join(str(t) for t in other)
    return (f"{line} That pace was measured with {measured} thread{'s' if other != [1] else ''} per run; --jobs "
            f"{jobs} gives each {per_run} here, so the time will differ (runs side by side share the cores; a run "
            "with fewer threads steps slower).")


def makespan(lefts: list[int], jobs: int) -> int:
    """The iterations of wall clock until the runs ``lefts`` (iterations each, in the bench's order) are
    trained ``jobs`` at a time, each next run taking the first slot to come free (``dgseg bench --jobs``):
    a single run left at ``--jobs 2`` takes all its iterations, not half."""
    slots = [0] * max(1, min(jobs, len(lefts)))
    for left in lefts:
        slots[slots.index(min(slots))] += left
    return max(slots)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"


def run_pace(records: list[dict], cycle: int | None = None, recent: int = 20) -> tuple[float, str] | None:
    """A run's seconds per iteration and how it was measured: its wall-clock pace per block of ``cycle``
    iterations (:func:`cycle_pace`: validations and checkpoints included, pauses left out); before two whole
    blocks (or without ``cycle``), the median ``time_per_iter`` of its last ``recent`` logged intervals (the
    periodic validation comes on top); None without either."""
    import statistics

    wall = None if cycle is None else cycle_pace(records, cycle)
    if wall is not None:
        return wall[0], f", median of its last {wall[1]} blocks of {cycle:,}, validations included"
    paces = [float(r["time_per_iter"]) for r in records if "time_per_iter" in r][-recent:]
    return (statistics.median(paces), "") if paces else None


def time_left(iterations: int, pace: tuple[float, str] | None) -> str:
    """The time ``iterations`` more steps take at ``pace`` (:func:`run_pace`); the final evaluation comes on
    top."""
    if iterations <= 0:
        return "the final evaluation"
    if pace is None:
        return "-"
    return f"about {_duration(iterations * pace[0])} ({pace[0]:.2f} s per iteration{pace[1]})"


def cycle_pace(records: list[dict], cycle: int, recent: int = 8) -> tuple[float, int] | None:
    """Wall-clock seconds per iteration of a run's last start, read from its log ``records``: the logged
    intervals (``time_per_iter`` x their iterations, which hold whatever ran between two log lines: the
    validations and checkpoints too) summed per block of ``cycle`` iterations (:func:`status_cycle`), and the
    median over its last ``recent`` whole blocks (those after the start's first, before the one under way). A
    block the process spent suspended (SIGSTOP, a laptop asleep) is one slow block among them: the median
    leaves it out, where the wall time since the start would count it. (pace, blocks it is the median of);
    None before two whole blocks."""
    import statistics

    blocks: dict[int, list[float]] = {}
    last = 0
    for r in records:
        if "resumed_from" in r:  # a new start: the pace is that of the last one
            blocks, last = {}, int(r["iter"])
        if "time_per_iter" not in r or "iter" not in r:
            continue
        step = int(r["iter"])
        if step <= last:  # started again from 0
            blocks, last = {}, 0
        block = blocks.setdefault((step - 1) // cycle, [0.0, 0])
        block[0] += float(r["time_per_iter"]) * (step - last)
        block[1] += step - last
        last = step
    whole = [wall / n for wall, n in list(blocks.values())[1:-1]][-recent:]
    return (statistics.median(whole), len(whole)) if len(whole) >= 2 else None


def status_cycle(train) -> int:
    """The block :func:`cycle_pace` sums over, from a config's ``train`` section: the longer of the validation
    and checkpoint intervals (each block holds the same extra work), else ten log intervals."""
    return max(train.eval_interval or 0, train.checkpoint_interval or 0) or 10 * train.log_interval
