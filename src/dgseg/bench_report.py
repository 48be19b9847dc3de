"""The combined report of ``dgseg bench``: mean and spread over seeds per method and domain, ties, figures.

Reads whatever finished runs ``OUT/<method>/seed<k>/summary.json`` exist (so a comparison built across
several sittings reports what it has) and writes ``bench.md``, ``bench.json``, ``bench.png`` and
``bench_curves.png`` into ``OUT``.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

from dgseg import strict_json
from dgseg.atomic import write_atomic
from dgseg.bench_gaps import REFERENCE, curve_gaps, gaps_markdown
from dgseg.json_files import read_json_object
from dgseg.machine import machine_line
from dgseg.metrics import rpd
from dgseg.viz import _read_jsonl

PLATEAU_POINTS = 1.0
"""A run has plateaued when its source validation mIoU rose by less than this over the last quarter
(:func:`quarter_rise`)."""
METHOD_ORDER = ["rein", "rein-nolink", "frozen", "full", "lora", "adaptformer", "vpt"]


def eval_points(log: Path | list[dict], domain: str) -> dict[int, float]:
    """iteration -> validation mIoU of ``domain`` from a run's ``log.jsonl`` (a path, or its records; the last
    record per step wins)."""
    points: dict[int, float] = {}
    if isinstance(log, Path):
        if not log.exists():  # a run folder copied without its log: no curve, the plateau column shows '-'
            return points
        log = _read_jsonl(log)
    for r in log:
        ev = (r.get("eval") or {}).get(domain)
        if ev is not None and "iter" in r:
            points[int(r["iter"])] = float(ev["mIoU"] if isinstance(ev, dict) else ev)
    return points


def quarter_rise(points: dict[int, float]) -> float:
    """The plateau check of a run's source evaluations (iteration -> mIoU, :func:`eval_points`): the mean
    source validation mIoU over the last quarter of training minus its mean over the quarter before (the
    evaluations at iterations in (3/4 T, T] against (T/2, 3/4 T], T the last one).

    Quarter means, not two single points: the validation mIoU of one checkpoint moves by several points
    from one evaluation to the next (measured: 16.3 to 25.5 within 500 iterations of the bench's Rein run),
    so a difference of two points would call noise a rise. NaN when either quarter has no evaluation."""
    if not points:
        return math.nan
    last = max(points)
    recent = [v for i, v in points.items() if i > 0.75 * last]
    before = [v for i, v in points.items() if 0.5 * last < i <= 0.75 * last]
    if not recent or not before:
        return math.nan
    return statistics.fmean(recent) - statistics.fmean(before)


def _mean_log2(a: float, b: float) -> float:
    """The mean of log2(x) over x in (a, b]."""
    return ((b * math.log(b) - b) - (a * math.log(a) - a)) / (b - a) / math.log(2)


LOG_RISE = _mean_log2(0.75, 1.0) - _mean_log2(0.5, 0.75)
""":func:`quarter_rise` of a curve that gains one point per doubling of the iterations (0.490), whatever the
schedule's length."""


def doubling_gain(points: dict[int, float]) -> float:
    """Source points a run gained per doubling of its iterations over the second half of training: the slope
    of a least-squares line of validation mIoU against log2(iteration) over the evaluations in (T/2, T], T the
    last one. On a curve that grows like the logarithm of the iterations the last-quarter rise is
    :data:`LOG_RISE` x this at any schedule length, so a longer schedule alone passes the plateau check only
    once the gain falls under ``PLATEAU_POINTS / LOG_RISE`` (2.04). NaN with fewer than 3 evaluations there."""
    if not points:
        return math.nan
    last = max(points)
    half = [(math.log2(i), v) for i, v in points.items() if i > 0.5 * last]
    if len(half) < 3:
        return math.nan
    return statistics.linear_regression([x for x, _ in half], [y for _, y in half]).slope


SEED_FOLDER = re.compile(r"seed(0|[1-9][0-9]*)")
"""A run folder's name, ``seed<k>``, as the bench writes it (``seed01`` or ``seed0.old`` are not runs)."""


def read_summary(path: Path, need: tuple[str, ...] = ("config", "eval", "trainable", "train_time_s")) -> dict:
    """A run's ``summary.json``: a JSON object with the keys ``need``; anything else is refused naming the
    file (a hand-edited or truncated summary must not stop the bench with a bare traceback)."""
    data = read_json_object(path, "a finished run's summary", prefix="bench: ")
    missing = [k for k in need if k not in data]
    if missing:
        raise ValueError(f"bench: {path}: no {', '.join(missing)}; expected a summary written by dgseg bench")
    return data


def collect(out: Path) -> dict[str, dict[int, dict]]:
    """method -> seed -> summary of every finished run under ``out`` (folders ``<method>/seed<k>/``)."""
    runs: dict[str, dict[int, dict]] = {}
    for summary in sorted(out.glob("*/seed*/summary.json")):
        named = SEED_FOLDER.fullmatch(summary.parent.name)
        if named is None:
            continue  # listed under the report's table (stray_folders)
        runs.setdefault(summary.parent.parent.name, {})[int(named.group(1))] = read_summary(summary)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return dict(sorted(runs.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def stray_folders(out: Path) -> list[str]:
    """Folders ``<method>/seed*`` under ``out`` holding a summary that are not named ``seed<k>`` (a run moved
    aside as ``seed0.old``, a ``seed01``): not read into the report, and named under its table."""
    return [f"{p.parent.parent.name}/{p.parent.name}" for p in sorted(out.glob("*/seed*/summary.json"))
            if SEED_FOLDER.fullmatch(p.parent.name) is None]


def _stats(values: list[float]) -> dict:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return {"mean": math.nan, "min": math.nan, "max": math.nan, "std": math.nan, "n": 0}
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def run_scores(summary: dict) -> dict[str, float]:
    """Per-domain mIoU of one run, plus 'mean targets' and 'rPD' (100 x mean targets / source)."""
    source = summary["config"]["data"]["source"]
    ev = summary["eval"]
    scores = {d: math.nan if v["mIoU"] is None else float(v["mIoU"]) for d, v in ev.items()}
    targets = [scores[d] for d in scores if d != source]
    mean_t = statistics.fmean(targets) if targets else math.nan
    scores["mean targets"] = mean_t
    src = scores.get(source, math.nan)
    scores["rPD"] = rpd(mean_t, src)
    return scores


def class_scores(summary: dict) -> dict[str, tuple[float, float]]:
    """Per class of one run: (source IoU, mean IoU over the target domains where the class occurs)."""
    from dgseg.data.classes import load_class_set

    names = load_class_set(summary["config"]["data"]["classes"]).names
    source = summary["config"]["data"]["source"]
    ev = summary["eval"]

    def iou(domain: str, k: int) -> float:
        value = ev[domain]["IoU"][k]
        return math.nan if value is None else float(value)

    out = {}
    for k, name in enumerate(names):
        targets = [v for v in (iou(d, k) for d in ev if d != source) if not math.isnan(v)]
        out[name] = (iou(source, k) if source in ev else math.nan,
                     statistics.fmean(targets) if targets else math.nan)
    return out


def aggregate(runs: dict[str, dict[int, dict]], out: Path) -> dict:
    table = {}
    for method, seeds in runs.items():
        per_seed = {s: run_scores(r) for s, r in seeds.items()}
        columns = list(next(iter(per_seed.values())))
        any_run = next(iter(seeds.values()))
        source = any_run["config"]["data"]["source"]
        curves = {s: eval_points(out / method / f"seed{s}" / "log.jsonl", source) for s in seeds}  # read once
        facts = {s: read_run_facts(out / method / f"seed{s}") for s in seeds}  # run.json read once per run
        per_class = {s: class_scores(r) for s, r in seeds.items()}
        table[method] = {
            "seeds": sorted(seeds),
            "per_class": {c: {"source": _stats([per_class[s][c][0] for s in seeds]),
                              "targets": _stats([per_class[s][c][1] for s in seeds])}
                          for c in next(iter(per_class.values()))},
            "scores": {c: _stats([per_seed[s][c] for s in per_seed]) for c in columns},
            "per_seed": per_seed,
            "plateau_rise": {s: quarter_rise(points) for s, points in curves.items()},
            "doubling_gain": {s: doubling_gain(points) for s, points in curves.items()},
            "source_curves": curves,
            "iters": any_run["config"]["train"]["max_iters"],
            "trainable": any_run["trainable"],
            "train_time_s": _stats([r["train_time_s"] for r in seeds.values()]),
            "source": source,
            "precision": sorted({p for f in facts.values() for p in _parts(str(f.get("precision") or "unknown"))}),
            "machine": {s: str(f.get("machine") or "unknown") for s, f in facts.items()},
        }
    for method, gap in curve_gaps(table).items():  # each method's source curve against frozen's, per quarter
        table[method]["source_curve_gap"] = {"reference": REFERENCE, **gap}
    return table


def _parts(joined: str) -> list[str]:
    """The values of a ``run.json`` field (machine, precision) that a run resumed on another machine or in
    another precision joins with " + " (``engine.run_facts``); each counts once in the report."""
    return joined.split(" + ")


def read_run_facts(run_dir: Path) -> dict:
    """A run's ``run.json`` (machine, precision, ...); empty for a run folder without one (copied without it),
    whose facts then show as 'unknown'. One that is not a JSON object is refused, naming the file."""
    path = run_dir / "run.json"
    if not path.exists():
        return {}
    return read_json_object(path, "the run's facts (machine, precision)", prefix="bench: ")


def ties(table: dict, column: str) -> tuple[str | None, list[str]]:
    """The best method by mean of ``column`` and every other method whose min-max range overlaps the best's."""
    ranked = [m for m in table if not math.isnan(table[m]["scores"][column]["mean"])]
    if not ranked:
        return None, []
    best = max(ranked, key=lambda m: table[m]["scores"][column]["mean"])
    b = table[best]["scores"][column]
    tied = [m for m in ranked if m != best and table[m]["scores"][column]["max"] >= b["min"]]
    return best, tied


def _cell(st: dict) -> str:
    if st["n"] == 0:
        return "-"
    if st["n"] == 1:
        return f"{st['mean']:.1f}"
    return f"{st['mean']:.1f} ({st['min']:.1f}-{st['max']:.1f})"


def _per_doubling(gain: float) -> str:
    return "" if math.isnan(gain) else f"; {gain:+.1f} per doubling"


def markdown(table: dict, stray: list[str] = ()) -> str:
    """``bench.md``; ``stray``: the folders :func:`collect` did not read (:func:`stray_folders`)."""
    unread = (f"Not read (a run folder is named seed<k>, k a whole number without leading zeros): "
              f"{', '.join(stray)}." if stray else "")
    if not table:
        return "# dgseg bench\n\nNo finished runs yet.\n" + (f"\n{unread}\n" if unread else "")
    first = next(iter(table.values()))
    domains = [c for c in first["scores"] if c not in ("mean targets", "rPD")]
    source = first["source"]
    head = ["method", "seeds", *[f"{d} (source)" if d == source else d for d in domains], "mean targets", "rPD",
            "source rise, last quarter", "trainable params", "train time / run", "precision"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in table.items():
        rises = [v for v in row["plateau_rise"].values() if not math.isnan(v)]
        rise = ("-" if not rises else f"{rises[0]:+.1f}" if len(rises) == 1
                else f"{statistics.fmean(rises):+.1f} (max {max(rises):+.1f})")
        cells = [method, str(len(row["seeds"])), *[_cell(row["scores"][d]) for d in domains],
                 _cell(row["scores"]["mean targets"]), _cell(row["scores"]["rPD"]), rise,
                 f"{row['trainable']:,}", f"{row['train_time_s']['mean'] / 60:.1f} min",
                 " + ".join(row["precision"])]
        lines.append("| " + " | ".join(cells) + " |")
    verdict = []
    for column in ("mean targets", "rPD", source) if len(table) > 1 else ():  # one method: nothing to rank
        best, tied = ties(table, column)
        if best is None:
            continue
        text = f"- **{column}**: best {best} ({table[best]['scores'][column]['mean']:.1f})"
        text += f"; tied with it (ranges overlap): {', '.join(tied)}" if tied else "; no other method's range reaches it"
        verdict.append(text)
    not_flat = [f"{m} seed {s} ({v:+.1f}{_per_doubling(row['doubling_gain'][s])})"
                for m, row in table.items() for s, v in row["plateau_rise"].items()
                if not math.isnan(v) and v >= PLATEAU_POINTS]
    unmeasured = [f"{m} seed {s}" for m, row in table.items() for s, v in row["plateau_rise"].items()
                  if math.isnan(v)]
    parts = [f"Not plateaued (the last quarter's mean source validation mIoU is {PLATEAU_POINTS:g} point or more "
             f"above the quarter before's): {', '.join(not_flat)}. Per doubling: the source points gained per "
             f"doubling of the iterations over the second half of training (a least-squares line against log2 "
             f"of the iteration); a curve that grows like the logarithm rises {LOG_RISE:.2f} x that over its "
             f"last quarter at any schedule length, so a longer schedule alone passes the check only where "
             f"the gain falls under {PLATEAU_POINTS / LOG_RISE:.2f}." if not_flat else "",
             f"No plateau check (no log.jsonl, or no source validation in one of the two quarters): "
             f"{', '.join(unmeasured)}." if unmeasured else ""]
    plateau = " ".join(p for p in parts if p) or (
        f"Every run has plateaued: its mean source validation mIoU over the last quarter of training is "
        f"less than {PLATEAU_POINTS:g} point above its mean over the quarter before.")
    if unread:
        plateau += f"\n\n{unread}"
    precisions = {p for row in table.values() for p in row["precision"]}
    mixed = (f"**The runs used different precisions ({', '.join(sorted(precisions))}): compare with care.**\n\n"
             if len(precisions) > 1 else "")
    return (
        "# dgseg bench: method comparison on the synthetic benchmark\n\n"
        "mIoU in %, mean over seeds with (min-max) when there are several; rPD = 100 x mean target mIoU / "
        "source mIoU, per seed, then averaged. A difference smaller than the spread is a tie.\n\n"
        + "\n".join(lines) + "\n\n" + "\n".join(verdict) + "\n\n" + plateau + "\n\n" + mixed
        + machines_markdown(table) + f"Report written on: {machine_line()}. Iterations per run: "
        f"{', '.join(sorted({str(r['iters']) for r in table.values()}))}.\n\n" + gaps_markdown(
            {m: row["source_curve_gap"] for m, row in table.items() if "source_curve_gap" in row})
        + per_class_markdown(table)
    )


def machines_markdown(table: dict) -> str:
    """Which runs trained on which machine; a run resumed on another machine (its ``run.json`` joins the two
    with " + ") is listed under each, marked "(part)"."""
    runs_on: dict[str, list[str]] = {}
    for method, row in table.items():
        for seed, joined in row["machine"].items():
            parts = _parts(joined)
            for m in parts:
                runs_on.setdefault(m, []).append(f"{method} {seed}" + (" (part)" if len(parts) > 1 else ""))
    return "Runs trained on (method seed):\n\n" + "".join(
        f"- {m}: {', '.join(r)}\n" for m, r in sorted(runs_on.items())) + "\n"


def per_class_markdown(table: dict) -> str:
    """Per-class IoU, mean over seeds: source / mean over the target domains in which the class occurs."""
    classes = list(dict.fromkeys(c for row in table.values() for c in row["per_class"]))  # every method's, in order
    lines = ["## Per-class IoU", "",
             "Mean over seeds; each cell is source / mean over the target domains in which the class occurs.", "",
             "| class | " + " | ".join(table) + " |", "|" + "---|" * (len(table) + 1)]
    for c in classes:
        cells = []
        for row in table.values():
            st = row["per_class"].get(c)
            cells.append("-" if st is None else " / ".join("-" if math.isnan(st[k]["mean"]) else f"{st[k]['mean']:.1f}"
                                                          for k in ("source", "targets")))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bars_figure(table: dict, path: Path) -> None:
    from dgseg.viz import _new_figure

    first = next(iter(table.values()))
    columns = [c for c in first["scores"] if c != "rPD"]
    fig = _new_figure(max(8.0, 1.3 * len(columns)), 4.2)
    ax = fig.subplots()
    width = 0.8 / max(len(table), 1)
    for i, (method, row) in enumerate(table.items()):
        xs = [j + (i - (len(table) - 1) / 2) * width for j in range(len(columns))]
        means = [row["scores"][c]["mean"] for c in columns]
        lo = [row["scores"][c]["mean"] - row["scores"][c]["min"] for c in columns]
        hi = [row["scores"][c]["max"] - row["scores"][c]["mean"] for c in columns]
        ax.bar(xs, means, width, yerr=[lo, hi], capsize=2, label=f"{method} (n={len(row['seeds'])})")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([c.replace("synthetic-", "") for c in columns], rotation=20)
    ax.set_ylabel("mIoU (%)")
    ax.set_title("mIoU per domain: mean over seeds, bars = min-max")
    ax.legend(fontsize=7, ncols=min(len(table), 4))
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png"))


def curves_figure(table: dict, path: Path) -> None:
    """Source validation against iteration, one line per seed: on a linear axis (left) and a log2 axis (right),
    where a curve that gains the same points per doubling of the iterations (:func:`doubling_gain`) is a
    straight line and a plateau bends flat."""
    from dgseg.viz import _new_figure

    fig = _new_figure(12.0, 4.2)
    linear, logarithmic = fig.subplots(1, 2)
    colours = {}
    for method, row in table.items():
        for seed in row["seeds"]:
            points = row["source_curves"][seed]
            if not points:
                continue
            xs = sorted(points)
            for ax in (linear, logarithmic):
                line = ax.plot(xs, [points[x] for x in xs], lw=1, marker="o", ms=2, color=colours.get(method),
                               label=method if method not in colours and ax is linear else None)
                colours.setdefault(method, line[0].get_color())
    iters = sorted({row["iters"] for row in table.values()})
    if len(iters) == 1:  # the plateau check's two windows: the quarter before and the last quarter
        for ax in (linear, logarithmic):
            for x in (0.5 * iters[0], 0.75 * iters[0]):
                ax.axvline(x, color="grey", ls=":", lw=1)
    linear.set_xlabel("iteration (dotted: the quarters compared by the plateau check)")
    linear.set_ylabel("source validation mIoU (%)")
    linear.set_title("source validation during training (one line per seed)")
    logarithmic.set_xscale("log", base=2)
    logarithmic.set_xlabel("iteration, log2 scale")
    logarithmic.set_title("the same, log2 axis: straight = a fixed gain per doubling")
    if colours:
        linear.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png"))


def write_report(out: str | Path) -> dict:
    """Rewrite the combined report from the finished runs under ``out``; returns the aggregated table."""
    out = Path(out)
    table = aggregate(collect(out), out)
    write_atomic(out / "bench.md", markdown(table, stray_folders(out)))
    write_atomic(out / "bench.json", strict_json.dumps(table, indent=2, default=str))
    if table:
        for name, draw in (("bench.png", lambda p: bars_figure(table, p)),
                           ("bench_curves.png", lambda p: curves_figure(table, p))):
            draw(out / name)  # each figure is written by temp file + rename
    return table
